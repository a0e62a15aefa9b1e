"""Layers of the compared methods: per-matrix low rank (method II) and any fitted decomposition as trainable factors.

The paper's method IV (the shared ``TuckerBank`` and the ``BankLinear`` maps that read it) lives in
:mod:`tdlib.core.modeling_tdlib`, the self-contained model file a checkpoint carries. Here: ``LowRankLinear`` (method
II as a layer, the speed benchmark's peer), ``FactorStack`` / ``StackLinear`` (CP, TT, II, III held as trainable
factors, so the method comparison distils every method the same way), and :func:`bank_of`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tdlib.core.errors import ConfigError
from tdlib.core.modeling_tdlib import BANK_NAME, TuckerBank, _version_key


class LowRankLinear(nn.Module):
    """Method II as a layer: every D x D block has its own rank-r factors, W_i = A_i B_i (A: D x r, B: r x D).

    The peer that per-matrix low-rank compression (SVD per matrix) gives at a parameter budget; used by
    the speed benchmark and the method comparison. Blocks that read one input share one matmul for
    their A_i (FFN up), and blocks that feed one output share one matmul for their B_i (FFN down).
    """

    def __init__(self, a: int, b: int, d_model: int, rank: int, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.a, self.b, self.d_model, self.rank = a, b, d_model, rank
        self.in_features, self.out_features = a * d_model, b * d_model
        if a > 1 and b > 1:
            raise ValueError("LowRankLinear supports 1 x b or a x 1 block grids")
        blocks = a * b
        self.A = nn.Parameter(torch.randn(blocks, d_model, rank) / math.sqrt(d_model))
        self.B = nn.Parameter(torch.randn(blocks, rank, d_model) * 0.02 / math.sqrt(rank))
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, a: int, b: int, d_model: int, rank: int) -> LowRankLinear:
        """Truncated SVD of every block of a dense layer (y = x W orientation)."""
        layer = cls(a, b, d_model, rank, linear.bias)
        w = linear.weight.detach().T.reshape(a, d_model, b, d_model).permute(0, 2, 1, 3).reshape(a * b, d_model,
                                                                                                    d_model)
        u, s, vh = torch.linalg.svd(w.float(), full_matrices=False)
        with torch.no_grad():
            layer.A.copy_(u[..., :rank] * s[:, None, :rank].sqrt())
            layer.B.copy_(s[:, :rank, None].sqrt() * vh[:, :rank, :])
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.a == 1:  # one input: all A_i in one matmul, then each B_i on its slice
            h = F.linear(x, self.A.permute(0, 2, 1).reshape(-1, self.d_model))  # (..., b*r)
            if self.b == 1:
                return F.linear(h, self.B[0].T, self.bias)
            y = torch.einsum("...kr,krj->...kj", h.unflatten(-1, (self.b, self.rank)), self.B).flatten(-2)
            return y if self.bias is None else y + self.bias
        h = torch.einsum("...ki,kir->...kr", x.unflatten(-1, (self.a, self.d_model)), self.A).flatten(-2)
        return F.linear(h, self.B.reshape(-1, self.d_model).T, self.bias)  # one output: all B_i in one matmul


class FactorStack(nn.Module):
    """Any fitted decomposition of the stacked tensor, as trainable factors (protocol 1 for every method).

    The C1 comparison trains CP, TT, II, III and IV students identically, so the only thing that
    differs between them is the decomposition. The factors are parameters; the (n, D, D) tensor is
    composed from them by the decomposition's own (differentiable) ``compose`` once per forward in
    training and once per parameter version in eval. This is the reconstruction protocol: fair for
    accuracy, not for speed (the speed benchmark compares factorized layers).
    """

    def __init__(self, fit) -> None:
        super().__init__()
        object.__setattr__(self, "fit", fit)  # the decomposition object (ranks, compose), not a module
        self.factors = nn.ParameterList([nn.Parameter(f.detach().clone().float()) for f in fit.factors()])
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def tensor(self) -> torch.Tensor:
        key = (_version_key(*self.factors), torch.is_grad_enabled(), self.training)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.fit.compose(list(self.factors)))
        return self._cache[1]

    def n_params(self) -> int:
        return sum(p.numel() for p in self.factors)


class StackLinear(nn.Module):
    """A linear map whose weight is an a x b grid of matrices of a :class:`FactorStack` (y = x W + b)."""

    def __init__(self, stack: FactorStack, indices: list[list[int]], bias: torch.Tensor | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "stack", stack)  # shared: registered once, on the encoder
        self.indices = indices
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.stack.tensor()
        w = torch.cat([torch.cat([t[i] for i in row], dim=1) for row in self.indices], dim=0)  # (in, out)
        return F.linear(x, w.T, self.bias)



def bank_of(model: nn.Module) -> TuckerBank:
    base = getattr(model, "base_model", model)
    bank = getattr(base.encoder, BANK_NAME, None)
    if bank is None:
        raise ConfigError(f"{type(model).__name__} is not compressed (no {BANK_NAME}); call tdlib.compress first")
    return bank
