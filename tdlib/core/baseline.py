"""The equal-budget baseline: what a user would do instead of Tucker, a smaller dense student.

A layer-dropped and/or narrower BERT whose encoder weights match a Tucker student's budget,
initialised from the teacher so both students start from the same knowledge:

* layers: ``num_layers`` teacher layers, evenly spaced from the first (one layer keeps layer 0,
  whose input is the embedding output the student actually sees);
* width: hidden states are projected onto the top ``hidden_size`` principal directions ``B`` of the
  teacher's token embeddings (an orthonormal D x D' basis); each D x D map becomes B^T W B, the
  embeddings E B. The teacher's hidden states, projected by the same B, are the distillation
  target, so no projection has to be learned (TinyBERT learns one);
* FFN: the ``intermediate_size`` neurons with the largest ||w_in|| * ||w_out||.

The attention head count is kept (the score loss compares heads one to one), so ``hidden_size``
must be a multiple of it. The projection travels with the model (``model.tdlib_extra``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tdlib.core.errors import ConfigError
from tdlib.core.stacking import encoder_layers


def ffn_for_budget(budget: int, num_layers: int, hidden_size: int) -> int:
    """FFN width that makes ``num_layers`` layers of width ``hidden_size`` hold ``budget`` weights."""
    per_layer = budget / num_layers - 4 * hidden_size**2
    width = round(per_layer / (2 * hidden_size))
    if width < 1:
        raise ConfigError(f"a budget of {budget:,} weights cannot hold {num_layers} layer(s) of width {hidden_size} "
                          f"(attention alone takes {4 * num_layers * hidden_size**2:,}); use fewer layers or a "
                          "smaller hidden_size")
    return width


def encoder_weights(model: nn.Module) -> int:
    """Weights of the encoder layers' linear maps (no biases, LayerNorm or embeddings): the paper's budget."""
    return sum(m.weight.numel() for layer in encoder_layers(model) for m in layer.modules()
               if isinstance(m, nn.Linear))


def _principal_basis(embeddings: torch.Tensor, k: int) -> torch.Tensor:
    centred = embeddings - embeddings.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred.double(), full_matrices=False)
    return vh[:k].T.to(embeddings.dtype).contiguous()  # (D, k), orthonormal columns


@torch.no_grad()
def shrink(model: nn.Module, num_layers: int, hidden_size: int | None = None,
           intermediate_size: int | None = None) -> nn.Module:
    """A dense student with ``num_layers`` layers of width ``hidden_size`` and FFN ``intermediate_size``."""
    cfg = model.config
    hidden_size = hidden_size or cfg.hidden_size
    intermediate_size = intermediate_size or cfg.intermediate_size
    heads = cfg.num_attention_heads
    if not 1 <= num_layers <= cfg.num_hidden_layers:
        raise ConfigError(f"num_layers must be in 1..{cfg.num_hidden_layers}, got {num_layers}")
    if hidden_size > cfg.hidden_size or hidden_size % heads:
        raise ConfigError(f"hidden_size must be a multiple of the {heads} heads and at most {cfg.hidden_size}, "
                          f"got {hidden_size}")
    if not 1 <= intermediate_size <= cfg.intermediate_size:
        raise ConfigError(f"intermediate_size must be in 1..{cfg.intermediate_size}, got {intermediate_size}")

    new_cfg = copy.deepcopy(cfg)
    new_cfg.num_hidden_layers, new_cfg.hidden_size = num_layers, hidden_size
    new_cfg.intermediate_size = intermediate_size
    student = type(model)(new_cfg).eval()
    base, sbase = getattr(model, "base_model", model), getattr(student, "base_model", student)
    emb = base.embeddings.word_embeddings.weight
    narrow = hidden_size != cfg.hidden_size
    B = _principal_basis(emb, hidden_size) if narrow else torch.eye(cfg.hidden_size, dtype=emb.dtype)

    def square(dst: nn.Linear, src: nn.Linear) -> None:  # weight is (out, in): B^T W B
        dst.weight.copy_(B.T @ src.weight @ B)
        dst.bias.copy_(src.bias @ B)

    def norm(dst: nn.LayerNorm, src: nn.LayerNorm) -> None:
        dst.weight.copy_(src.weight @ B.pow(2))
        dst.bias.copy_(src.bias @ B)

    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        getattr(sbase.embeddings, name).weight.copy_(getattr(base.embeddings, name).weight @ B)
    norm(sbase.embeddings.LayerNorm, base.embeddings.LayerNorm)

    src_layers, dst_layers = encoder_layers(model), encoder_layers(student)
    picks = torch.linspace(0, cfg.num_hidden_layers - 1, num_layers).round().long().tolist() if num_layers > 1 else [0]
    for dst, i in zip(dst_layers, picks, strict=True):
        src = src_layers[i]
        for path in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            square(dst.get_submodule(path), src.get_submodule(path))
        up, down = src.intermediate.dense, src.output.dense
        score = up.weight.norm(dim=1) * down.weight.norm(dim=0)
        keep = score.topk(intermediate_size).indices.sort().values
        dst.intermediate.dense.weight.copy_(up.weight[keep] @ B)
        dst.intermediate.dense.bias.copy_(up.bias[keep])
        dst.output.dense.weight.copy_(B.T @ down.weight[:, keep])
        dst.output.dense.bias.copy_(down.bias @ B)
        norm(dst.attention.output.LayerNorm, src.attention.output.LayerNorm)
        norm(dst.output.LayerNorm, src.output.LayerNorm)
    if getattr(base, "pooler", None) is not None and getattr(sbase, "pooler", None) is not None:
        square(sbase.pooler.dense, base.pooler.dense)
    if narrow:
        student.tdlib_extra = {"hidden_projection": B.contiguous()}
    student.config.tdlib_baseline = {"num_layers": num_layers, "hidden_size": hidden_size,
                                     "intermediate_size": intermediate_size, "layers_kept": picks}
    return student
