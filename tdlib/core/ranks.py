"""Rank picker and multiply-add (MAC) model.

Speed comes from d (rank_dim): per token a D x D map costs about 2Dd instead of D^2 multiply-adds;
l (rank_layer) only sets the parameter count. :func:`encoder_macs` counts the MACs of one encoder
forward per token (linear maps and attention scores/context), dense or factorized, from the shapes
alone; :func:`pick_ranks` lists (rank_layer, rank_dim) pairs that meet a compression target, each
with its MAC ratio, so a user can trade accuracy (larger d) against speed (smaller d).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from tdlib.core.decompose import Tucker
from tdlib.core.errors import RankError, check_choice
from tdlib.core.modeling_tdlib import OPS, map_macs, slots
from tdlib.core.stacking import geometry


@dataclass(frozen=True)
class Geometry:
    """Encoder shape: layers, hidden size D, FFN blocks k (= FFN width / D)."""

    n_layers: int
    d_model: int
    ffn_blocks: int = 4

    @classmethod
    def of(cls, model_or_geometry: nn.Module | Geometry | tuple) -> Geometry:
        if isinstance(model_or_geometry, Geometry):
            return model_or_geometry
        if isinstance(model_or_geometry, tuple):
            return cls(*model_or_geometry)
        return cls(*geometry(model_or_geometry))

    def n(self, ops: str = "san_ffn") -> int:
        return len(slots(self.n_layers, self.ffn_blocks, ops))

    def shape(self, ops: str = "san_ffn") -> tuple[int, int, int]:
        return (self.n(ops), self.d_model, self.d_model)


BERT_BASE = Geometry(12, 768, 4)
MINILM = Geometry(6, 384, 4)


def encoder_macs(geom: Geometry, seq_len: int, rank_dim: int | None = None, ops: str = "san_ffn") -> dict:
    """MACs per token of one encoder forward: linear maps + attention (QK^T and AV), all layers.

    ``rank_dim=None`` is the dense model. The factorized count follows what ``BankLinear`` runs:
    xU shared by Q, K, V; the cheaper of folding M V^T or applying M then V^T.

    Parameters
    ----------
    geom : Geometry
        The encoder's geometry.
    seq_len : int
        Tokens per sequence (attention's cost grows with it).
    rank_dim : int, optional
        d of a compressed model; None for the dense one.
    ops : {"san_ffn", "san", "ffn"}
        The compressed maps.

    Returns
    -------
    dict
        Multiply-adds per token by part (linear maps, attention) and in total.
    """
    check_choice("ops", ops, OPS)
    D, k = geom.d_model, geom.ffn_blocks
    attention = 2 * seq_len * D
    dense_san, dense_ffn = 4 * D * D, 2 * k * D * D
    if rank_dim is None:
        linear = dense_san + dense_ffn
    else:
        d = rank_dim
        qkv = 3 * map_macs(1, 1, D, d)["fold"] - 2 * D * d  # three folded maps, but one shared xU
        san = qkv + min(map_macs(1, 1, D, d).values())
        ffn = min(map_macs(1, k, D, d).values()) + min(map_macs(k, 1, D, d).values())
        linear = (san if ops != "ffn" else dense_san) + (ffn if ops != "san" else dense_ffn)
    per_layer = linear + attention
    return {"linear": linear * geom.n_layers, "attention": attention * geom.n_layers,
            "total": per_layer * geom.n_layers}


def mac_ratio(geom: Geometry, rank_dim: int, seq_len: int = 128, ops: str = "san_ffn") -> float:
    """Dense MACs / factorized MACs per token (attention included): the speed-up limit.

    Parameters
    ----------
    geom : Geometry
        The encoder's geometry.
    rank_dim : int
        d of the compressed model.
    seq_len : int
        Tokens per sequence.
    ops : {"san_ffn", "san", "ffn"}
        The compressed maps.

    Returns
    -------
    float
        The speed-up a compressed forward can reach at most.
    """
    return encoder_macs(geom, seq_len)["total"] / encoder_macs(geom, seq_len, rank_dim, ops)["total"]


@dataclass(frozen=True)
class RankChoice:
    rank_layer: int
    rank_dim: int
    n_params: int
    ratio: float  # n D^2 / n_params
    mac_ratio: float

    def as_dict(self) -> dict:
        return asdict(self)


def pick_ranks(model_or_geometry, ratio: float | None = None, budget: int | None = None, ops: str = "san_ffn",
               rank_dim_step: int = 16, seq_len: int = 128) -> list[RankChoice]:
    """Tucker ranks that fit a parameter budget (or compression ``ratio``), one per rank_dim.

    For each d (multiples of ``rank_dim_step``) the largest l whose parameter count stays within
    budget; sorted by rank_dim (the speed/accuracy axis).

    Parameters
    ----------
    model_or_geometry : transformers model or Geometry
        The model to compress, or its geometry (``tdlib.BERT_BASE``, ``tdlib.MINILM``).
    ratio : float, optional
        The compression to reach: decomposable weights / Tucker weights (48 for the paper's tiny model).
    budget : int, optional
        The weight budget instead of ``ratio``.
    ops : {"san_ffn", "san", "ffn"}
        The maps to compress.
    rank_dim_step : int
        The spacing of the rank_dim values tried.
    seq_len : int
        The sequence length the multiply-add ratio is computed at.

    Returns
    -------
    list of RankChoice
        One (rank_layer, rank_dim) per rank_dim, with its parameter count, ratio and multiply-add ratio.
    """
    geom = Geometry.of(model_or_geometry)
    n, D = geom.n(ops), geom.d_model
    raw = n * D * D
    if (ratio is None) == (budget is None):
        raise RankError("give exactly one of ratio (e.g. 7.2) or budget (a parameter count)")
    if ratio is not None:
        if not ratio > 1:
            raise RankError(f"ratio must be > 1 (n D^2 / compressed parameters), got {ratio}")
        budget = int(raw / ratio)
    elif budget <= 0:
        raise RankError(f"budget must be a positive parameter count, got {budget}")
    asked = f"ratio {ratio:g} (a budget of {budget:,} parameters)" if ratio is not None else f"budget {budget:,}"
    choices = []
    for d in range(rank_dim_step, D + 1, rank_dim_step):
        free = budget - 2 * D * d
        if free <= 0:
            break
        l = min(n, free // (d * d + n))  # noqa: E741 (the paper's name)
        if l < 1:
            continue
        params = Tucker.param_count((n, D, D), l, d)
        choices.append(RankChoice(l, d, params, raw / params, mac_ratio(geom, d, seq_len, ops)))
    if not choices:
        smallest = Tucker.param_count((n, D, D), 1, rank_dim_step)
        raise RankError(f"no Tucker ranks fit {asked} for n={n}, D={D}: the smallest (l=1, d={rank_dim_step}) needs "
                        f"{smallest:,} parameters, a ratio of at most {raw / smallest:.1f}; ask for a smaller ratio "
                        "(or a smaller rank_dim step)")
    return choices
