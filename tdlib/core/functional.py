"""Numerical kernels shared by the decompositions: leading subspaces and Tucker-HOOI.

Why not ``tensorly.decomposition.tucker`` alone: for the (n, D, D) weight tensor every mode-1/2
unfolding is D x (nD) (768 x 110,592 for BERT-base), and tensorly 0.10's HOOI loop calls a full
SVD of such matrices on every iteration, ignoring its ``svd=`` argument (only the init honours
it; and its ``symeig_svd`` forms the *wide* Gram matrix). HOOI only needs the leading left
singular vectors, which the eigenvectors of the small D x D Gram matrix give at a fraction of the
cost. The loop below is tensorly's HOOI (same init, same stopping rule, tensorly's own
``multi_mode_dot``/``unfold``) with that one substitution; ``tests/test_decompose.py`` checks it
against ``tensorly.decomposition.tucker``.
"""

from __future__ import annotations

import math

import tensorly as tl
import torch
from tensorly.tenalg import multi_mode_dot
from tqdm import tqdm

tl.set_backend("pytorch")


def leading_left_singular_vectors(matrix: torch.Tensor, k: int) -> torch.Tensor:
    """The k leading left singular vectors of ``matrix`` (m x N, N possibly huge), via eigh of M M^T.

    Sign-fixed (largest-magnitude entry of each vector positive) so results are deterministic.
    """
    gram = (matrix @ matrix.T).double()
    _, vecs = torch.linalg.eigh(gram)  # ascending
    u = vecs.flip(1)[:, :k]
    idx = u.abs().argmax(dim=0)
    u = u * torch.sign(u[idx, torch.arange(u.shape[1])])[None, :]
    return u.to(matrix.dtype).contiguous()


def _contract_order(shape: tuple[int, ...], rank: tuple[int, ...], skip: int) -> list[int]:
    """Contract the modes that shrink the tensor most first: the cheapest order for multi_mode_dot."""
    modes = [m for m in range(len(shape)) if m != skip]
    return sorted(modes, key=lambda m: rank[m] / shape[m])


def project(tensor: torch.Tensor, factors: list[torch.Tensor], rank: tuple[int, ...], skip: int | None = None):
    """tensor x_m factors[m]^T over every mode but ``skip``, in the cheapest order."""
    order = _contract_order(tuple(tensor.shape), rank, -1 if skip is None else skip)
    return multi_mode_dot(tensor, [factors[m] for m in order], modes=order, transpose=True)


def random_orthonormal(rows: int, cols: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))[None, :]).to(dtype)


def hooi(
    tensor: torch.Tensor,
    rank: tuple[int, ...],
    init: str = "svd",
    n_iter_max: int = 100,
    tol: float = 1e-4,
    seed: int = 0,
    progress: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor], list[float]]:
    """Tucker decomposition by higher-order orthogonal iteration.

    Returns (core, factors, errors) with ``tensor ~= core x_0 factors[0] x_1 factors[1] ...``,
    orthonormal factors, and the relative error after each sweep. ``init='svd'`` (HOSVD) or
    ``'random'`` (random orthonormal factors, as the reference code used). Stops when the error
    changes by less than ``tol`` between sweeps (tensorly's rule).
    """
    rank = tuple(int(r) for r in rank)
    if init == "svd":
        factors = [leading_left_singular_vectors(tl.unfold(tensor, m), rank[m]) for m in range(tensor.ndim)]
    elif init == "random":
        gen = torch.Generator().manual_seed(seed)
        factors = [random_orthonormal(tensor.shape[m], rank[m], gen, tensor.dtype) for m in range(tensor.ndim)]
    else:
        raise ValueError(f"init must be 'svd' or 'random', got {init!r}")
    norm2 = float(tensor.double().pow(2).sum())
    errors: list[float] = []
    core = project(tensor, factors, rank)
    bar = tqdm(range(n_iter_max), desc=f"HOOI {rank}", disable=not progress, leave=False)
    for _ in bar:
        for m in range(tensor.ndim):
            partial = project(tensor, factors, rank, skip=m)
            factors[m] = leading_left_singular_vectors(tl.unfold(partial, m), rank[m])
        core = project(tensor, factors, rank)
        errors.append(math.sqrt(abs(norm2 - float(core.double().pow(2).sum()))) / math.sqrt(norm2))
        bar.set_postfix(rel_error=f"{errors[-1]:.4f}")
        if len(errors) > 2 and abs(errors[-2] - errors[-1]) < tol:
            break
    bar.close()
    return core, factors, errors


def tucker_to_tensor(core: torch.Tensor, factors: list[torch.Tensor]) -> torch.Tensor:
    return multi_mode_dot(core, factors, modes=list(range(core.ndim)))


def relative_error(approx: torch.Tensor, tensor: torch.Tensor) -> float:
    """||T - approx||_F / ||T||_F, accumulated in float64."""
    diff = (tensor.double() - approx.double()).pow(2).sum()
    return float(diff.sqrt() / tensor.double().pow(2).sum().sqrt())
