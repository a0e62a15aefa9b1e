"""Layers: the shared Tucker factor bank, and the linear maps that read from it.

``TuckerBank`` owns the trainable factors of the whole encoder: U (D x d) and V (D x d) shared by
every map, the bank of l core matrices C (l x d x d) and the mixing weights P (n x l). Matrix i of
the stacked tensor is W_i = U M_i V^T with M_i = sum_j P_ij C_j.

``BankLinear`` replaces one ``nn.Linear`` whose weight is made of a x b such D x D blocks
(a = b = 1 for Q, K, V, O; 1 x k for the FFN up-projection; k x 1 for the FFN down-projection).
Two implementations (the paper's reconstruction protocol and its naive alternative):

* ``factorized``: x -> xU -> (M V^T) or x -> xU -> M -> V^T, whichever costs fewer multiply-adds
  for this block shape, never forming a D x D matrix. Maps that read the same input tensor (Q, K
  and V) share one xU through the bank's input cache (in eval, one fused xU [G_q|G_k|G_v] matmul);
  the k FFN-up blocks share it by construction.
* ``reconstructed``: W = U M V^T is built and applied as a dense matrix.

In ``eval()`` mode the small matrices (M, M V^T, or W) are built once, without autograd, and reused
by every forward; the cache is keyed on the parameters' storage and version counters, so an
optimizer step, ``load_state_dict`` or ``.to()`` invalidates it. ``n_builds`` counters let tests
check that inference does not rebuild per forward. Gradients w.r.t. the factors need ``train()``.

``FactorStack`` / ``StackLinear`` hold any other fitted decomposition (CP, TT, II, III) as trainable
factors, so the method comparison can distil every method the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tdlib.core.errors import ConfigError, check_choice

IMPLEMENTATIONS = ("factorized", "reconstructed")


def map_macs(a: int, b: int, d_model: int, rank_dim: int) -> tuple[int, int]:
    """Per-token multiply-adds of an (a*D) -> (b*D) bank map: (folded M V^T, M then V^T).

    Both start with xU (a*D*d); folding costs a*d*b*D more, the chain a*d*b*d + b*d*D.
    """
    project = a * d_model * rank_dim
    return project + a * rank_dim * b * d_model, project + a * rank_dim * b * rank_dim + b * rank_dim * d_model


def _version_key(*tensors: torch.Tensor) -> tuple:
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)


class TuckerBank(nn.Module):
    """Trainable factors (U, V, C, P) shared by all decomposed maps of the encoder."""

    def __init__(self, n: int, d_model: int, rank_layer: int, rank_dim: int) -> None:
        super().__init__()
        self.n, self.d_model, self.rank_layer, self.rank_dim = n, d_model, rank_layer, rank_dim
        self.U = nn.Parameter(torch.empty(d_model, rank_dim))
        self.V = nn.Parameter(torch.empty(d_model, rank_dim))
        self.C = nn.Parameter(torch.empty(rank_layer, rank_dim, rank_dim))
        self.P = nn.Parameter(torch.empty(n, rank_layer))
        self.n_builds = 0  # M rebuilds (eval cache misses)
        self.n_projections = 0  # xU products computed (shared ones count once)
        self._mixed: tuple[tuple, torch.Tensor] | None = None
        self._shared: dict[str, list] = {}  # group -> [input, xU, uses left] (training path)
        self._groups: dict[str, list[BankLinear]] = {}  # group -> members, in call order (Q, K, V)
        self._fused: dict[str, tuple] = {}  # group -> (key, concatenated weight, concatenated bias)
        self._fused_out: dict[str, list] = {}  # group -> [input, {member: output}] (eval path)

    @torch.no_grad()
    def init_random(self, seed: int = 0, weight_std: float = 0.02) -> TuckerBank:
        """Random init whose reconstructed W_i have entries of std ``weight_std`` (BERT's init range)."""
        gen = torch.Generator().manual_seed(seed)
        for p in (self.U, self.V):
            q, _ = torch.linalg.qr(torch.randn(self.d_model, self.rank_dim, generator=gen, dtype=torch.float64))
            p.copy_(q)
        self.P.copy_(torch.randn(self.n, self.rank_layer, generator=gen) / math.sqrt(self.rank_layer))
        self.C.copy_(torch.randn(self.rank_layer, self.rank_dim, self.rank_dim, generator=gen)
                     * weight_std * self.d_model / self.rank_dim)
        return self

    @torch.no_grad()
    def init_from(self, P: torch.Tensor, C: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> TuckerBank:
        """Copy factors of a fitted Tucker decomposition (``tdlib.core.decompose.Tucker``) in."""
        for param, value in ((self.P, P), (self.C, C), (self.U, U), (self.V, V)):
            param.copy_(value.to(param))
        return self

    def caching(self) -> bool:
        return not self.training

    def mixed(self) -> torch.Tensor:
        """M (n, d, d), M_i = sum_j P_ij C_j; cached in eval mode."""
        if not self.caching():
            return torch.einsum("nl,lpq->npq", self.P, self.C)
        key = _version_key(self.P, self.C)
        if self._mixed is None or self._mixed[0] != key:
            with torch.no_grad():
                self.n_builds += 1
                self._mixed = (key, torch.einsum("nl,lpq->npq", self.P, self.C))
        return self._mixed[1]

    def mixed_rows(self, indices: torch.Tensor) -> torch.Tensor:
        """M_i for the given matrix indices only (any shape). In training each map mixes just its own rows:
        mixing all n per map would cost n / (a*b) times more, for every one of the encoder's maps."""
        if self.caching():
            return self.mixed()[indices]
        rows = torch.einsum("kl,lpq->kpq", self.P[indices.reshape(-1)], self.C)
        return rows.reshape(*indices.shape, self.rank_dim, self.rank_dim)

    def project(self, x: torch.Tensor, blocks: int, group: str | None = None, uses: int = 1) -> torch.Tensor:
        """xU for an input of ``blocks`` D-wide chunks -> (..., blocks * d).

        Consumers of one ``group`` (Q, K, V of a layer) that receive the *same* tensor object share
        one product: the first computes it, the next ``uses - 1`` reuse it, then the entry is dropped.
        """
        if group is not None:
            entry = self._shared.get(group)
            if entry is not None and entry[0] is x:
                entry[2] -= 1
                if entry[2] <= 0:
                    del self._shared[group]
                return entry[1]
        self.n_projections += 1
        if blocks == 1:
            xu = F.linear(x, self.U.T)
        else:
            xu = F.linear(x.unflatten(-1, (blocks, self.d_model)), self.U.T).flatten(-2)
        if group is not None and uses > 1:
            self._shared[group] = [x, xu, uses - 1]
        return xu

    def register_group(self, group: str, members: list[BankLinear]) -> None:
        """Declare maps that read one input (Q, K, V): in eval they run as one fused matmul."""
        self._groups[group] = members

    def fused_group_forward(self, member: BankLinear, x: torch.Tensor) -> torch.Tensor:
        """Eval path of a group: the first member computes xU [G_1 | G_2 | ...] + [b_1 | b_2 | ...] once.

        One (d x 3D) matmul instead of three (d x D) ones; the other members take their slice
        (a view) when they are called with the same input tensor.
        """
        group = member.group
        pending = self._fused_out.get(group)
        if pending is not None and pending[0] is x and member in pending[1]:
            out = pending[1].pop(member)
            if not pending[1]:
                del self._fused_out[group]
            return out
        members = self._groups[group]
        biases = [m.bias for m in members if m.bias is not None]
        key = (_version_key(self.U, self.V, self.C, self.P, *biases), tuple(m.implementation for m in members))
        cached = self._fused.get(group)
        if cached is None or cached[0] != key:
            with torch.no_grad():
                weight = torch.cat([m.weight_for_forward() for m in members]).contiguous()
                bias = torch.cat(biases) if len(biases) == len(members) else None
            cached = self._fused[group] = (key, weight, bias)
        y = F.linear(self.project(x, 1), cached[1], cached[2])
        outs = y.split([m.out_features for m in members], dim=-1)
        self._fused_out[group] = [x, {m: o for m, o in zip(members, outs, strict=True) if m is not member}]
        return outs[members.index(member)]

    def train(self, mode: bool = True):
        self._mixed = None
        self._shared.clear()
        self._fused.clear()
        self._fused_out.clear()
        return super().train(mode)

    def extra_repr(self) -> str:
        return f"n={self.n}, D={self.d_model}, rank_layer={self.rank_layer}, rank_dim={self.rank_dim}"


class BankLinear(nn.Module):
    """A linear map whose (a*D) x (b*D) weight is an a x b grid of bank matrices, plus the original bias."""

    def __init__(self, bank: TuckerBank, indices: list[list[int]], bias: torch.Tensor | None = None,
                 group: str | None = None, group_uses: int = 1, implementation: str = "factorized") -> None:
        super().__init__()
        object.__setattr__(self, "bank", bank)  # not a submodule: the bank is saved once, by the encoder
        self.register_buffer("indices", torch.tensor(indices, dtype=torch.long), persistent=False)
        self.a, self.b = len(indices), len(indices[0])
        self.in_features, self.out_features = self.a * bank.d_model, self.b * bank.d_model
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None
        self.group, self.group_uses = group, group_uses
        self.implementation = implementation
        # fold M V^T into one (a*d) x (b*D) matrix when that is cheaper than applying M, then V^T
        folded, chained = map_macs(self.a, self.b, bank.d_model, bank.rank_dim)
        self.fold = folded <= chained
        self.n_builds = 0
        self._cache: tuple[tuple, torch.Tensor] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, bank: TuckerBank, indices: list[list[int]], **kwargs) -> BankLinear:
        """Replace a dense ``nn.Linear`` by a bank map, keeping its bias (the converter, as in tltorch)."""
        return cls(bank, indices, linear.bias, **kwargs)

    @property
    def implementation(self) -> str:
        return self._implementation

    @implementation.setter
    def implementation(self, value: str) -> None:
        self._implementation = check_choice("implementation", value, IMPLEMENTATIONS)
        self._cache = None

    # -- the small matrices ---------------------------------------------------------------------
    def _mblock(self) -> torch.Tensor:
        """M arranged as an (a*d) x (b*d) block matrix (rows: input blocks, columns: output blocks)."""
        m = self.bank.mixed_rows(self.indices)  # (a, b, d, d)
        return m.permute(0, 2, 1, 3).reshape(self.a * self.bank.rank_dim, self.b * self.bank.rank_dim)

    def _build(self) -> torch.Tensor:
        """The per-implementation matrix, in F.linear's (out, in) layout."""
        self.n_builds += 1
        bank, mb = self.bank, self._mblock()
        d = bank.rank_dim
        if self.implementation == "reconstructed":
            m = mb.reshape(self.a, d, self.b, d)
            w = torch.einsum("ip,apbq,jq->aibj", bank.U, m, bank.V)  # (a, D, b, D), y = x W
            return w.reshape(self.in_features, self.out_features).T.contiguous()
        if self.fold:  # G = M blockdiag(V^T): (a*d) x (b*D)
            g = torch.einsum("apbq,jq->apbj", mb.reshape(self.a, d, self.b, d), bank.V)
            return g.reshape(self.a * d, self.out_features).T.contiguous()
        return mb.T.contiguous()

    def weight_for_forward(self) -> torch.Tensor:
        if not self.bank.caching():
            return self._build()
        key = (_version_key(self.bank.U, self.bank.V, self.bank.C, self.bank.P), self.implementation)
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self._build())
        return self._cache[1]

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.group is not None and self.fold and self.implementation == "factorized" and self.bank.caching()
                and self.group in self.bank._groups):
            return self.bank.fused_group_forward(self, x)
        w = self.weight_for_forward()
        if self.implementation == "reconstructed":
            return F.linear(x, w, self.bias)
        xu = self.bank.project(x, self.a, self.group, self.group_uses)
        if self.fold:
            return F.linear(xu, w, self.bias)
        z = F.linear(xu, w)  # (..., b*d)
        if self.b == 1:
            return F.linear(z, self.bank.V, self.bias)
        y = F.linear(z.unflatten(-1, (self.b, self.bank.rank_dim)), self.bank.V).flatten(-2)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, blocks={self.a}x{self.b}, "
                f"implementation={self.implementation!r}, fold={self.fold}, group={self.group!r}")


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


BANK_NAME = "tdlib_bank"


def bank_of(model: nn.Module) -> TuckerBank:
    base = getattr(model, "base_model", model)
    bank = getattr(base.encoder, BANK_NAME, None)
    if bank is None:
        raise ConfigError(f"{type(model).__name__} is not compressed (no {BANK_NAME}); call tdlib.compress first")
    return bank
