"""Decompositions of the stacked (n, D, D) weight tensor, scikit-learn style.

Ranks go to ``__init__``, the work happens in ``fit(tensor)``; a fitted object gives
``to_tensor()``, ``relative_error(tensor)`` and ``n_params()``. ``param_count(shape, **ranks)`` is
a classmethod, so budgets can be matched without fitting anything (the rank picker uses it).

Methods (names from ../shared/PAPER.md; n matrices of size D x D):

==========  ==============================  ====================================
method      each matrix                     parameters (weights only)
==========  ==============================  ====================================
I           W_i                             n D^2
II          U_i S_i V_i^T                   n (2 D d + d^2)
III         U S_i V^T                       2 D d + n d^2
IV/tucker   U (sum_j P_ij C_j) V^T          2 D d + l d^2 + n l
cp          U diag(p_i) V^T                 R (n + 2 D)
tt          TT cores, matrix mode first     n r1 + r1 D r2 + r2 D
            or in the middle                D r1 + r1 n r2 + r2 D
==========  ==============================  ====================================
"""

from __future__ import annotations

import time
import warnings
from typing import ClassVar

import tensorly as tl
import torch
from tensorly.decomposition import parafac, tensor_train, tucker

from tdlib.core.errors import ConfigError, RankError, check_choice, check_rank
from tdlib.core.functional import hooi, relative_error, tucker_to_tensor

tl.set_backend("pytorch")

Shape = tuple[int, int, int]


def _check_shape(tensor: torch.Tensor) -> Shape:
    if tensor.ndim != 3 or tensor.shape[1] != tensor.shape[2]:
        raise RankError(f"expected a stacked (n, D, D) weight tensor, got shape {tuple(tensor.shape)}")
    return tuple(tensor.shape)  # type: ignore[return-value]


def _hooi_effort(fit, solver: str) -> dict:
    """HOOI's effort: sweeps used, the cap, and whether the error stopped changing (``tol``) first."""
    sweeps = len(fit.errors_)
    return {"solver": solver, "iterations": sweeps, "max_iterations": fit.n_iter_max, "restarts": 1,
            "tol": fit.tol, "stop_reason": "converged" if sweeps < fit.n_iter_max else "max_iter"}


class Decomposition:
    """Base class. Subclasses set ``method``, ``rank_names`` and implement ``_fit``/``to_tensor``."""

    method: ClassVar[str] = ""
    rank_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    # -- parameters ---------------------------------------------------------------------------
    @classmethod
    def param_count(cls, shape: Shape, **ranks: int) -> int:
        raise NotImplementedError

    @classmethod
    def macs_per_map(cls, shape: Shape, **ranks: int) -> int:
        """Multiply-adds per token of applying one W_i in factorized form (best folding, no sharing).

        Parameter efficiency is not inference efficiency: this is what a budget-matched rank costs
        at run time, to set beside the reconstruction error.
        """
        raise NotImplementedError

    def ranks(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.rank_names}

    def n_params(self) -> int:
        return self.param_count(self.shape_, **self.ranks())

    @classmethod
    def check_ranks(cls, shape: Shape, **ranks: int) -> dict[str, int]:
        """Validate ranks against the tensor shape; raises RankError naming the fix."""
        n, d_model, _ = shape
        bounds = {"rank_dim": (d_model, "the hidden size D"), "rank_layer": (n, "the number of matrices n")}
        return {k: check_rank(k, v, *bounds.get(k, (None, ""))) for k, v in ranks.items()}

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, tensor: torch.Tensor) -> Decomposition:
        self.shape_ = _check_shape(tensor)
        self.check_ranks(self.shape_, **self.ranks())
        start = time.perf_counter()
        with torch.no_grad():
            self._fit(tensor.float())
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _fit(self, tensor: torch.Tensor) -> None:
        raise NotImplementedError

    def effort(self) -> dict:
        """What the fit spent: iterations, restarts and why it stopped (a closed form by default).

        Recorded beside every method's error, so a comparison shows that each got a fair effort.
        """
        return {"solver": "closed form (SVD)", "iterations": 1, "restarts": 1, "stop_reason": "exact"}

    def factors(self) -> list[torch.Tensor]:
        """The fitted tensors (what a compressed model would train), in :meth:`compose`'s order."""
        raise NotImplementedError

    def compose(self, factors: list[torch.Tensor]) -> torch.Tensor:
        """The (n, D, D) tensor from ``factors`` (differentiable: a trainable model reuses it)."""
        raise NotImplementedError

    def to_tensor(self) -> torch.Tensor:
        return self.compose(self.factors())

    def relative_error(self, tensor: torch.Tensor) -> float:
        return relative_error(self.to_tensor(), tensor)

    def __repr__(self) -> str:
        ranks = ", ".join(f"{k}={v}" for k, v in self.ranks().items())
        return f"{type(self).__name__}({ranks})"


class Raw(Decomposition):
    """I: the weights themselves (the reference point, compression ratio 1)."""

    method = "I"

    @classmethod
    def param_count(cls, shape: Shape, **ranks: int) -> int:
        n, d_model, _ = shape
        return n * d_model * d_model

    @classmethod
    def macs_per_map(cls, shape, **ranks):
        return shape[1] * shape[2]

    def _fit(self, tensor):
        self.weights_ = tensor.clone()

    def factors(self):
        return [self.weights_]

    def compose(self, factors):
        return factors[0]


class PerMatrix(Decomposition):
    """II: an independent truncated SVD of every matrix, W_i = U_i S_i V_i^T (S_i counted as d x d)."""

    method = "II"
    rank_names = ("rank_dim",)

    def __init__(self, rank_dim: int, seed: int = 0) -> None:
        super().__init__(seed)
        self.rank_dim = rank_dim

    @classmethod
    def param_count(cls, shape, rank_dim):
        n, d_model, _ = shape
        return n * (2 * d_model * rank_dim + rank_dim**2)

    @classmethod
    def macs_per_map(cls, shape, rank_dim):
        return 2 * shape[1] * rank_dim  # x U_i, then (S_i V_i^T) folded

    def _fit(self, tensor):
        u, s, vh = torch.linalg.svd(tensor, full_matrices=False)
        d = self.rank_dim
        self.U_, self.S_, self.V_ = u[..., :d], torch.diag_embed(s[..., :d]), vh[..., :d, :].transpose(1, 2)

    def factors(self):
        return [self.U_, self.S_, self.V_]

    def compose(self, factors):
        u, s, v = factors
        return u @ s @ v.transpose(1, 2)


class Tucker(Decomposition):
    """IV: Tucker with multilinear rank (l, d, d), i.e. a bank of l core matrices mixed per matrix.

    W_i = U (sum_j P_ij C_j) V^T with U = factors[1], V = factors[2], P = factors[0], C = core.
    ``solver='hooi'`` is :func:`tdlib.core.functional.hooi`; ``'tensorly'`` calls
    ``tensorly.decomposition.tucker`` (slower on these shapes, kept as the reference).
    """

    method = "IV"
    rank_names = ("rank_layer", "rank_dim")

    def __init__(self, rank_layer: int, rank_dim: int, init: str = "svd", n_iter_max: int = 100,
                 tol: float = 1e-4, solver: str = "hooi", seed: int = 0, progress: bool = False) -> None:
        super().__init__(seed)
        self.rank_layer, self.rank_dim, self.progress = rank_layer, rank_dim, progress
        self.init, self.n_iter_max, self.tol, self.solver = init, n_iter_max, tol, solver

    @classmethod
    def param_count(cls, shape, rank_layer, rank_dim):
        n, d_model, _ = shape
        return 2 * d_model * rank_dim + rank_layer * rank_dim**2 + n * rank_layer

    @classmethod
    def macs_per_map(cls, shape, rank_layer, rank_dim):
        return 2 * shape[1] * rank_dim  # x U, then (M_i V^T) folded

    def _fit(self, tensor):
        check_choice("init", self.init, ("svd", "random"))
        check_choice("solver", self.solver, ("hooi", "tensorly"))
        rank = (self.rank_layer, self.rank_dim, self.rank_dim)
        if self.solver == "hooi":
            core, factors, errors = hooi(tensor, rank, self.init, self.n_iter_max, self.tol, self.seed, self.progress)
        else:
            (core, factors), errors = tucker(tensor, rank=list(rank), init=self.init, n_iter_max=self.n_iter_max,
                                             tol=self.tol, random_state=self.seed, return_errors=True)
            errors = [float(e) for e in errors]
        self.core_, self.factors_, self.errors_ = core, factors, errors

    def effort(self) -> dict:
        return _hooi_effort(self, f"HOOI ({self.solver}, {self.init} init)")

    # names of the paper / reference code
    @property
    def P(self) -> torch.Tensor:
        return self.factors_[0]

    @property
    def C(self) -> torch.Tensor:
        return self.core_

    @property
    def U(self) -> torch.Tensor:
        return self.factors_[1]

    @property
    def V(self) -> torch.Tensor:
        return self.factors_[2]

    def factors(self):
        return [self.core_, *self.factors_]

    def compose(self, factors):
        return tucker_to_tensor(factors[0], factors[1:])


class SharedFactors(Decomposition):
    """III: one U and one V for all matrices, W_i = U S_i V^T (Tucker without a mode-0 truncation)."""

    method = "III"
    rank_names = ("rank_dim",)

    def __init__(self, rank_dim: int, n_iter_max: int = 100, tol: float = 1e-4, seed: int = 0) -> None:
        super().__init__(seed)
        self.rank_dim, self.n_iter_max, self.tol = rank_dim, n_iter_max, tol

    @classmethod
    def param_count(cls, shape, rank_dim):
        n, d_model, _ = shape
        return 2 * d_model * rank_dim + n * rank_dim**2

    @classmethod
    def macs_per_map(cls, shape, rank_dim):
        return 2 * shape[1] * rank_dim  # x U, then (S_i V^T) folded

    def _fit(self, tensor):
        n, d = tensor.shape[0], self.rank_dim
        core, factors, self.errors_ = hooi(tensor, (n, d, d), "svd", self.n_iter_max, self.tol, self.seed)
        self.U_, self.V_ = factors[1], factors[2]
        self.S_ = tl.tenalg.mode_dot(core, factors[0], 0)  # fold the (orthogonal) mode-0 factor in

    def effort(self) -> dict:
        return _hooi_effort(self, "HOOI (svd init)")

    def factors(self):
        return [self.U_, self.S_, self.V_]

    def compose(self, factors):
        u, s, v = factors
        return u @ s @ v.T


class CP(Decomposition):
    """CP / PARAFAC of rank R: W_i = U diag(p_i) V^T (tensorly ALS).

    ALS is a local method: from a random start it can stall far from a good fit, and where it stalls
    depends on the machine's floating-point path (a rank-8 fit once came out worse than rank 2). So the
    first start is tensorly's SVD init (deterministic; components beyond a mode's size are filled from
    the seed), ``n_restarts - 1`` further seeded random starts follow, and the best fit is kept. Each
    start runs until the error changes by less than ``tol`` or ``n_iter_max`` sweeps; ``stop_reason_``
    says which, so a comparison can show the effort every method got.
    """

    method = "cp"
    rank_names = ("rank",)

    def __init__(self, rank: int, n_iter_max: int = 100, tol: float = 1e-6, init: str = "svd",
                 n_restarts: int = 1, seed: int = 0) -> None:
        super().__init__(seed)
        self.rank, self.n_iter_max, self.tol, self.init, self.n_restarts = rank, n_iter_max, tol, init, n_restarts

    @classmethod
    def param_count(cls, shape, rank):
        n, d_model, _ = shape
        return rank * (n + 2 * d_model)

    @classmethod
    def macs_per_map(cls, shape, rank):
        return 2 * shape[1] * rank  # x U (D x R), then (diag(p_i) V^T) folded

    @classmethod
    def check_ranks(cls, shape, **ranks):
        return {"rank": check_rank("rank", ranks["rank"])}

    def _fit(self, tensor):
        check_choice("init", self.init, ("svd", "random"))
        check_rank("n_restarts", self.n_restarts)
        check_rank("n_iter_max", self.n_iter_max)
        self.restarts_: list[dict] = []
        best = None
        for k in range(self.n_restarts):
            init = self.init if k == 0 else "random"
            with warnings.catch_warnings():  # a rank beyond a mode's size: tensorly fills the rest, as designed
                warnings.filterwarnings("ignore", "Trying to compute SVD with n_eigenvecs", UserWarning)
                cp, errors = parafac(tensor, rank=self.rank, n_iter_max=self.n_iter_max, tol=self.tol, init=init,
                                     random_state=self.seed + k, linesearch=False, return_errors=True)
            error = relative_error(tl.cp_to_tensor(cp), tensor)
            run = {"init": init, "seed": self.seed + k, "iterations": len(errors), "rel_error": error,
                   "stop_reason": "converged" if len(errors) < self.n_iter_max else "max_iter"}
            self.restarts_.append(run)
            if best is None or error < best[1]["rel_error"]:
                best = (cp, run)
        self.cp_, chosen = best
        self.n_iter_, self.stop_reason_ = chosen["iterations"], chosen["stop_reason"]

    def effort(self) -> dict:
        return {"solver": "ALS (tensorly)", "iterations": self.n_iter_, "max_iterations": self.n_iter_max,
                "restarts": self.n_restarts, "stop_reason": self.stop_reason_, "tol": self.tol,
                "restart_errors": [r["rel_error"] for r in self.restarts_]}

    def factors(self):
        return [self.cp_.weights, *self.cp_.factors]

    def compose(self, factors):
        return tl.cp_to_tensor((factors[0], list(factors[1:])))


class TensorTrain(Decomposition):
    """Tensor train (TT-SVD, tensorly) with ranks (1, r1, r2, 1).

    ``matrix_mode='first'`` decomposes the (n, D, D) tensor as is; ``'middle'`` permutes it to
    (D, n, D) first, so the matrix index sits between the two hidden-size modes.
    """

    method = "tt"
    rank_names = ("rank1", "rank2")

    def __init__(self, rank1: int, rank2: int, matrix_mode: str = "first", seed: int = 0) -> None:
        super().__init__(seed)
        self.rank1, self.rank2, self.matrix_mode = rank1, rank2, matrix_mode

    @classmethod
    def _dims(cls, shape: Shape, matrix_mode: str) -> tuple[int, int, int]:
        n, d_model, _ = shape
        return (n, d_model, d_model) if matrix_mode == "first" else (d_model, n, d_model)

    @classmethod
    def param_count(cls, shape, rank1, rank2, matrix_mode="first"):
        a, b, c = cls._dims(shape, matrix_mode)
        return a * rank1 + rank1 * b * rank2 + rank2 * c

    @classmethod
    def macs_per_map(cls, shape, rank1, rank2, matrix_mode="first"):
        d_model = shape[1]
        if matrix_mode == "first":  # W_i = (sum_a G1[i,a] G2[a]) G3: a D x r2 matrix, then r2 x D
            return 2 * d_model * rank2
        # W_i = G1 G2[:, i, :] G3: x G1 (D x r1), then G2_i G3 folded (r1 x D), or unfolded
        return d_model * rank1 + min(rank1 * d_model, rank1 * rank2 + rank2 * d_model)

    def ranks(self) -> dict:
        return {"rank1": self.rank1, "rank2": self.rank2, "matrix_mode": self.matrix_mode}

    @classmethod
    def check_ranks(cls, shape, matrix_mode="first", **ranks):
        a, b, c = cls._dims(shape, matrix_mode)
        r1 = check_rank("rank1", ranks["rank1"], a, "the first TT mode")
        r2 = check_rank("rank2", ranks["rank2"], c, "the last TT mode")
        return {"rank1": r1, "rank2": r2, "matrix_mode": check_choice("matrix_mode", matrix_mode, ("first", "middle"))}

    def _fit(self, tensor):
        check_choice("matrix_mode", self.matrix_mode, ("first", "middle"))
        x = tensor if self.matrix_mode == "first" else tensor.permute(1, 0, 2).contiguous()
        self.tt_ = tensor_train(x, rank=[1, self.rank1, self.rank2, 1])

    def factors(self):
        return list(self.tt_.factors)

    def compose(self, factors):
        x = tl.tt_to_tensor(list(factors))
        return x if self.matrix_mode == "first" else x.permute(1, 0, 2)


METHODS: dict[str, type[Decomposition]] = {
    "I": Raw, "II": PerMatrix, "III": SharedFactors, "IV": Tucker, "tucker": Tucker, "cp": CP, "tt": TensorTrain,
}


def make(method: str, **kwargs) -> Decomposition:
    """Build a decomposition by name (``I``, ``II``, ``III``, ``IV``/``tucker``, ``cp``, ``tt``).

    Parameters
    ----------
    method : str
        ``I``, ``II``, ``III``, ``IV``/``tucker``, ``cp`` or ``tt``.
    **kwargs
        The method's ranks and options.

    Returns
    -------
    Decomposition
        An unfitted decomposition (sklearn style: ``fit(tensor)`` returns it fitted).
    """
    cls = METHODS.get(method)
    if cls is None:
        raise ConfigError(f"unknown method {method!r}; choose one of {', '.join(map(repr, METHODS))}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"method {method!r} takes ranks {cls.rank_names}: {exc}") from None


def decompose(tensor: torch.Tensor, method: str = "IV", **kwargs) -> Decomposition:
    """Fit ``method`` to the stacked tensor and return the fitted decomposition.

    Parameters
    ----------
    tensor : torch.Tensor
        The stacked (n, D, D) weights.
    method : str
        ``I`` (raw), ``II`` (per-matrix SVD), ``III`` (shared factors), ``IV``/``tucker``, ``cp`` or ``tt``.
    **kwargs
        The method's ranks and options (``rank_layer``, ``rank_dim``, ``rank``, ``seed``, ...).

    Returns
    -------
    Decomposition
        The fitted decomposition: ``to_tensor()``, ``relative_error(tensor)``, ``n_params()``, ``factors()``.
    """
    return make(method, **kwargs).fit(tensor)
