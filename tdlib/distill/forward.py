"""What distillation reads from a forward pass: the last layer's attention scores (pre-softmax, through hooks on
the query and key maps), the model inputs of a batch, and batched prediction (:func:`predict`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tdlib.core.precision import autocast
from tdlib.core.stacking import encoder_layers
from tdlib.data.collate import pad_collate, pad_token_id

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class LastLayerTaps:
    """Context manager capturing the last encoder layer's Q and K outputs during a forward."""

    def __init__(self, model: nn.Module) -> None:
        model = _unwrap(model)
        layer = encoder_layers(model)[-1]
        self.attn = layer.attention.self
        self.heads = model.config.num_attention_heads
        self._handles: list = []
        self.q: torch.Tensor | None = None
        self.k: torch.Tensor | None = None

    def __enter__(self) -> LastLayerTaps:
        def keep(name):
            def hook(_module, _inputs, output):
                setattr(self, name, output)
            return hook

        self._handles = [self.attn.query.register_forward_hook(keep("q")),
                         self.attn.key.register_forward_hook(keep("k"))]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def scores(self, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-softmax scores (B, H, T, T) = Q K^T / sqrt(d_head), zero wherever a query or key is padding."""
        if self.q is None or self.k is None:
            raise RuntimeError("run the model's forward inside the LastLayerTaps context first")
        return attention_scores(self.q, self.k, self.heads, attention_mask)


def hidden_projection(model: nn.Module) -> torch.Tensor | None:
    """The D x D' basis a narrower student's hidden states live in (None for full-width students)."""
    return (getattr(model, "tdlib_extra", None) or {}).get("hidden_projection")


def inputs(batch: dict) -> dict:
    """The model inputs of a batch (labels and other columns dropped)."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}


@torch.no_grad()
def predict(model: nn.Module, data, batch_size: int = 64, progress: bool = True,
            precision: str = "fp32") -> np.ndarray:
    """Logits (fp32) over an encoded dataset, in order, in eval mode (the compressed model's inference path),
    with matmuls in ``precision`` (:mod:`tdlib.core.precision`)."""

    model.eval()
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False,
                                         collate_fn=pad_collate(pad_token_id(model)))
    device = next(model.parameters()).device
    out = []
    for b in tqdm(loader, desc="predict", disable=not progress, leave=False):
        with autocast(precision, device):
            out.append(model(**{k: v.to(device) for k, v in inputs(b).items()}).logits.float().cpu())
    return torch.cat(out).numpy()


def attention_scores(q: torch.Tensor, k: torch.Tensor, heads: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pre-softmax scores (B, H, T, T) = Q K^T / sqrt(d_head), zero wherever a query or key is padding."""
    b, t, d = q.shape
    dh = d // heads
    qh = q.reshape(b, t, heads, dh).transpose(1, 2)
    kh = k.reshape(b, t, heads, dh).transpose(1, 2)
    s = qh @ kh.transpose(-1, -2) / dh**0.5
    if mask is not None:
        keep = mask[:, None, :, None].bool() & mask[:, None, None, :].bool()
        s = s.masked_fill(~keep, 0.0)
    return s


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DistributedDataParallel keeps the model as .module
