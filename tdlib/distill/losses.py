"""The distillation objectives: the paper's intermediate loss (last-layer attention scores + hidden state), the
prediction loss (soft cross-entropy at temperature 1, MSE for regression) and the all-layer cosine objective."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tdlib.core.heads import mean_pool


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


def prediction_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | None, labels: torch.Tensor,
                    regression: bool, temperature: float = 1.0) -> torch.Tensor:
    """Stage-2 loss: soft cross-entropy to the teacher, or MSE to the gold score for regression (STS-B)."""
    if regression:
        return F.mse_loss(student_logits.reshape(-1), labels.float().reshape(-1))
    return soft_cross_entropy(student_logits, teacher_logits, temperature)


OBJECTIVES = ("last_layer", "all_layers_cos")


COSINE_WEIGHT = 10.0  # of the embedding term of "all_layers_cos"; (1 - cos) is < 1, the hidden MSEs are O(0.1-1)


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer (1-based) matched to each student layer 1..Ls: evenly spaced, ending at the last
    (TinyBERT's uniform map; the identity for a student as deep as its teacher)."""
    return [round(j * teacher_layers / student_layers) for j in range(1, student_layers + 1)]


def objective_loss(objective: str, s_hidden: tuple, t_hidden: list[torch.Tensor], mask: torch.Tensor | None,
                   base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``base`` (the paper's last-layer loss) plus, for ``"all_layers_cos"``, the MSE of every intermediate
    student layer's hidden states to its mapped teacher layer and ``COSINE_WEIGHT x (1 - cos)`` of the
    mean-pooled last hidden states (the sentence embeddings a user of the teacher reads).

    Why a departure from the paper: at a CPU budget the last-layer loss keeps falling while the student's
    embeddings stop improving (issue #15's recovery curve); matching every layer gives each layer its own
    target, and the embedding term trains what the zero-shot proxy and mean-pooled heads read.
    ``t_hidden`` holds the teacher's layers 1..L, already in the student's basis.
    """
    if objective == "last_layer":
        return base

    n_s = len(s_hidden) - 1
    mapped = layer_map(n_s, len(t_hidden))
    layers = sum((F.mse_loss(s_hidden[j], t_hidden[mapped[j - 1] - 1]) for j in range(1, n_s)),
                 torch.zeros((), device=base["loss"].device))
    m = torch.ones(s_hidden[-1].shape[:2], device=s_hidden[-1].device) if mask is None else mask
    pooled = [mean_pool(h[-1].float(), m) for h in (s_hidden, t_hidden)]
    cos = 1.0 - F.cosine_similarity(*pooled, dim=-1).mean()
    return {**base, "loss": base["loss"] + layers + COSINE_WEIGHT * cos, "layers": layers.detach(),
            "cos": cos.detach()}
