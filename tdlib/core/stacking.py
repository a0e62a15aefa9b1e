"""Tensor <-> weights: gather a BERT encoder's D x D maps into one (n, D, D) tensor and write it back.

Layout (../shared/PAPER.md): per layer, in this order, Q, K, V, O, the k blocks of the FFN
up-projection, then the k blocks of the FFN down-projection (k = FFN width / D, 4 for BERT), each
oriented as y = x W + b (so W is ``linear.weight.T``). ``ops`` picks the attention maps (``san``,
4 per layer), the FFN blocks (``ffn``, 2k per layer) or both (``san_ffn``). The slots are described
once, by :func:`slots`, and both directions (gather and scatter) and the compressed model use it,
so the three can never disagree about which matrix is where.
"""

from __future__ import annotations

import torch
from torch import nn

from tdlib.core.errors import UnsupportedModelError
from tdlib.core.modeling_tdlib import ATTENTION_PATHS, FFN_PATHS, Slot, _get, get_module, slots


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The encoder's layer list of any model with BERT's module layout (BertModel, heads, RoBERTa...)."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise UnsupportedModelError(
            f"{type(model).__name__} has no BERT-style encoder (expected base_model.encoder.layer[i]); "
            "pass a BERT-family model such as BertModel, RobertaModel or all-MiniLM-L6-v2"
        )
    for path in (*ATTENTION_PATHS.values(), *FFN_PATHS.values()):
        if not isinstance(_get(layers[0], path), nn.Module):
            raise UnsupportedModelError(
                f"{type(model).__name__} layer 0 lacks module '{path}': not BERT's layout; "
                "tdlib decomposes models whose layers look like transformers' BertLayer"
            )
    return layers


def geometry(model: nn.Module, ops: str = "san_ffn") -> tuple[int, int, int]:
    """(L, D, k): layers, hidden size, FFN width / D (0 when not a multiple of D and ``ops='san'``).

    Raises if the FFN must be cut into D x D blocks (``ops`` includes ffn) and its width is not a
    multiple of D.
    """
    layers = encoder_layers(model)
    q = _get(layers[0], ATTENTION_PATHS["query"])
    up = _get(layers[0], FFN_PATHS["ffn_up"])
    d_model, width = q.in_features, up.out_features
    if q.out_features != d_model:
        raise UnsupportedModelError(f"query map is {d_model}->{q.out_features}; tdlib needs square attention maps")
    if width % d_model and ops == "san":
        return len(layers), d_model, 0
    if width % d_model:
        raise UnsupportedModelError(
            f"FFN width {width} is not a multiple of the hidden size {d_model}, so the FFN cannot be cut into "
            f"D x D blocks; use ops='san' to decompose the attention maps only"
        )
    return len(layers), d_model, width // d_model


def model_slots(model: nn.Module, ops: str = "san_ffn") -> list[Slot]:
    n_layers, _, k = geometry(model, ops)
    return slots(n_layers, k, ops)


def _block(weight: torch.Tensor, slot: Slot, d_model: int) -> torch.Tensor:
    """The slot's D x D block of an nn.Linear weight (out, in), as a view in y = x W orientation."""
    cut = slice(slot.block * d_model, (slot.block + 1) * d_model)
    if slot.role == "ffn_up":  # weight (kD, D): output rows cut
        return weight[cut, :].T
    if slot.role == "ffn_down":  # weight (D, kD): input columns cut
        return weight[:, cut].T
    return weight.T


@torch.no_grad()
def stack_weights(model: nn.Module, ops: str = "san_ffn") -> torch.Tensor:
    """Gather the (n, D, D) tensor of decomposable weights (a copy, float32, on CPU).

    Parameters
    ----------
    model : transformers model
        A dense BERT-family model.
    ops : {"san_ffn", "san", "ffn"}
        Which maps: 12 per layer (Q, K, V, O, 4 FFN-up and 4 FFN-down blocks), the 4 attention maps, or the 8 FFN
        blocks.

    Returns
    -------
    torch.Tensor
        Shape (n, D, D), n = 12L, 4L or 8L, each map written so that y = x W.
    """
    layers = encoder_layers(model)
    _, d_model, _ = geometry(model, ops)
    mats = [
        _block(get_module(layers[s.layer], s.path).weight, s, d_model).detach().float().cpu()
        for s in model_slots(model, ops)
    ]
    return torch.stack(mats).contiguous()


@torch.no_grad()
def unstack_weights(model: nn.Module, tensor: torch.Tensor, ops: str = "san_ffn") -> nn.Module:
    """Write an (n, D, D) tensor back into the model's dense linear maps, in place; returns the model.

    Parameters
    ----------
    model : transformers model
        A dense BERT-family model of the tensor's geometry.
    tensor : torch.Tensor
        Shape (n, D, D), as :func:`stack_weights` returns it.
    ops : {"san_ffn", "san", "ffn"}
        Which maps the tensor holds.

    Returns
    -------
    transformers model
        ``model``, its maps overwritten.
    """
    layers = encoder_layers(model)
    _, d_model, _ = geometry(model, ops)
    sl = model_slots(model, ops)
    if tuple(tensor.shape) != (len(sl), d_model, d_model):
        raise UnsupportedModelError(
            f"tensor shape {tuple(tensor.shape)} does not match this model's {ops} tensor "
            f"({len(sl)}, {d_model}, {d_model})"
        )
    for s in sl:
        lin = get_module(layers[s.layer], s.path)
        if not isinstance(lin, nn.Linear):
            raise UnsupportedModelError(f"layer {s.layer} '{s.path}' is {type(lin).__name__}, not a dense nn.Linear")
        _block(lin.weight, s, d_model).copy_(tensor[s.index].to(lin.weight))
    return model
