"""Knowledge-distillation losses of the reference recipe (../shared/PAPER.md), teacher and student alike.

Intermediate distillation matches the **last layer's** pre-softmax attention scores and hidden
states (MSE); prediction distillation matches logits by soft cross-entropy at temperature T
(STS-B: MSE to the gold score). The scores are read with forward hooks on the last layer's query
and key maps (:class:`LastLayerTaps`), so the same code serves a dense teacher and a compressed
student (whose maps are ``BankLinear``), and no attention implementation needs patching.
Masked positions are zeroed in the scores of both models, as the reference code does, so padding
never contributes to the loss.

The training loops (general and two-stage task distillation on ``accelerate``) build on these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .stacking import encoder_layers


class LastLayerTaps:
    """Context manager capturing the last encoder layer's Q and K outputs during a forward."""

    def __init__(self, model: nn.Module) -> None:
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
        b, t, d = self.q.shape
        dh = d // self.heads
        q = self.q.reshape(b, t, self.heads, dh).transpose(1, 2)
        k = self.k.reshape(b, t, self.heads, dh).transpose(1, 2)
        s = q @ k.transpose(-1, -2) / dh**0.5
        if attention_mask is not None:
            keep = attention_mask[:, None, :, None].bool() & attention_mask[:, None, None, :].bool()
            s = s.masked_fill(~keep, 0.0)
        return s


def intermediate_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor, student_hidden: torch.Tensor,
                      teacher_hidden: torch.Tensor) -> dict[str, torch.Tensor]:
    """MSE of last-layer attention scores + MSE of last-layer hidden states (and their sum, ``loss``)."""
    att = F.mse_loss(student_scores, teacher_scores)
    rep = F.mse_loss(student_hidden, teacher_hidden)
    return {"loss": att + rep, "att": att.detach(), "rep": rep.detach()}


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the student's distribution against the teacher's, both at ``temperature``."""
    target = F.softmax(teacher_logits / temperature, dim=-1)
    return -(target * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


def prediction_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                    regression: bool, temperature: float = 1.0) -> torch.Tensor:
    """Stage-2 loss: soft cross-entropy to the teacher, or MSE to the gold score for regression (STS-B)."""
    if regression:
        return F.mse_loss(student_logits.reshape(-1), labels.float().reshape(-1))
    return soft_cross_entropy(student_logits, teacher_logits, temperature)


def distillation_step(student: nn.Module, teacher: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    """One intermediate-distillation forward: both models on ``batch``, the recipe's loss on the last layer."""
    mask = batch.get("attention_mask")
    with torch.no_grad(), LastLayerTaps(teacher) as t_taps:
        t_out = teacher(**batch, output_hidden_states=True)
        t_scores = t_taps.scores(mask)
    with LastLayerTaps(student) as s_taps:
        s_out = student(**batch, output_hidden_states=True)
        s_scores = s_taps.scores(mask)
    return intermediate_loss(s_scores, t_scores, s_out.hidden_states[-1], t_out.hidden_states[-1])
