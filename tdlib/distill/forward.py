"""What distillation reads from a forward pass: the last layer's attention scores (pre-softmax, through hooks on
the query and key maps), the model inputs of a batch, and batched prediction (:func:`predict`)."""

from __future__ import annotations

import weakref

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode
from tqdm import tqdm

from tdlib.core.deploy import compile_frozen, freeze
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


class CompiledTeacher:
    """A frozen teacher's distillation targets (last-layer scores, every layer's hidden states) from one compiled graph.

    Why: with the teacher online, its forward is most of a small student's step, and in bf16 that forward runs at
    about half the matmul rate: GELU, LayerNorm, residual and bias adds, softmax and casts run as separate eager
    ops. ``torch.compile`` (inductor, with ``freezing``: the weights are constants, pre-packed for oneDNN) of a frozen
    copy fuses them. The last layer's Q and K are recomputed from its input instead of read by hooks (two D x D
    maps of one layer, about 3% of a 6-layer teacher's matmuls), so the whole target is one graph. One compile per
    batch shape (packed general-distillation batches have one), tens of seconds; the targets match the eager
    teacher's to rounding (tested). The autocast state of the caller is the graph's.
    """

    _shared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, teacher: nn.Module) -> CompiledTeacher:
        """The process's one compiled graph of ``teacher``: built on the first call, reused while the teacher's weights
        are the same tensors, unmodified (a study that general-distils several students from one teacher compiles it
        once, not once per run); built anew after any in-place change, move or cast of a weight."""
        model = _unwrap(teacher)
        state = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in model.parameters())
        kept = cls._shared.get(model)
        if kept is None or kept[0] != state:
            kept = (state, cls(teacher))
            cls._shared[model] = kept
        return kept[1]

    def __init__(self, teacher: nn.Module) -> None:
        self.config = _unwrap(teacher).config
        self.frozen = freeze(_unwrap(teacher))
        self.heads = self.config.num_attention_heads
        ids = torch.ones(1, 2, dtype=torch.long, device=next(self.frozen.parameters()).device)
        # one eager call first: on a model's first call transformers installs its output-capturing hooks, under a lock
        # that dynamo cannot trace
        with torch.no_grad():
            self._targets(ids, torch.ones_like(ids), torch.zeros_like(ids))
        self._compiled = compile_frozen(self._targets)

    def _targets(self, input_ids, attention_mask, token_type_ids):
        out = self.frozen(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          output_hidden_states=True)
        attn = encoder_layers(self.frozen)[-1].attention.self
        before_last = out.hidden_states[-2]
        scores = attention_scores(attn.query(before_last), attn.key(before_last), self.heads, attention_mask)
        return scores, out.hidden_states[1:]

    def targets(self, batch: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(pre-softmax last-layer scores (B, H, T, T), [hidden state of each layer]) for the batch's inputs."""
        x = inputs(batch)
        # under a dispatch mode (FlopCounterMode counting a step's FLOPs) the same graph runs eagerly: same FLOPs
        run = self._targets if _get_current_dispatch_mode() is not None else self._compiled
        with torch.no_grad():
            scores, hidden = run(x["input_ids"], x.get("attention_mask"), x.get("token_type_ids"))
        return scores, list(hidden)


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
