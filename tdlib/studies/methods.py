"""Claim C1: decomposition methods compared at equal parameter budgets, and decomposability spectra.

:func:`match_ranks` picks, for one method, the ranks whose parameter count is as close as possible
to a budget without exceeding it; where a method has two ranks (Tucker's (l, d), TT's (r1, r2)) it
returns every candidate on that budget's frontier, and :func:`compare_methods` keeps the one with
the lowest reconstruction error (each method at its best, so the comparison is fair to all).

:func:`spectra` measures where the redundancy is: singular values of each matrix alone
(intra-matrix) against the mode unfoldings of the stacked tensor (inter-matrix, mode 0; shared
input/output subspaces, modes 1 and 2), as energy captured vs rank.
"""

from __future__ import annotations

import math
import time

import tensorly as tl
import torch
from tqdm import tqdm

from tdlib.core.decompose import METHODS, Decomposition, PerMatrix, SharedFactors, TensorTrain, Tucker
from tdlib.core.errors import RankError

Shape = tuple[int, int, int]
COMPARED = ("II", "III", "IV", "cp", "tt-first", "tt-middle")
CP_MEMORY_LIMIT = 4 * 2**30  # bytes of the (D^2 x R) Khatri-Rao product tensorly's ALS materialises


def _largest(count, upper: int, budget: int) -> int:
    """Largest r in [1, upper] with count(r) <= budget (count increasing), or 0."""
    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def match_ranks(method: str, shape: Shape, budget: int, candidates: int = 6) -> list[dict]:
    """Rank settings of ``method`` within ``budget`` parameters (closest first); [] if none fits."""
    n, D, _ = shape
    if method == "II":
        d = _largest(lambda r: PerMatrix.param_count(shape, r), D, budget)
        return [{"rank_dim": d}] if d else []
    if method == "III":
        d = _largest(lambda r: SharedFactors.param_count(shape, r), D, budget)
        return [{"rank_dim": d}] if d else []
    if method == "cp":
        r = budget // (n + 2 * D)
        return [{"rank": r}] if r else []
    if method == "IV":
        out = []
        for d in sorted({max(1, round(D * f)) for f in (1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2, 3 / 4)}):
            l = _largest(lambda x, d=d: Tucker.param_count(shape, x, d), n, budget)  # noqa: E741
            if l:
                out.append({"rank_layer": l, "rank_dim": d})
        return _spread(out, candidates)
    if method in ("tt-first", "tt-middle"):
        mode = method.split("-")[1]
        first = n if mode == "first" else D
        out = []
        for f in (1 / 8, 1 / 4, 1 / 2, 3 / 4, 1):
            r1 = max(1, round(first * f))
            r2 = _largest(lambda x, r1=r1: TensorTrain.param_count(shape, r1, x, mode), D, budget)
            if r2:
                out.append({"rank1": r1, "rank2": r2, "matrix_mode": mode})
        return _spread(out, candidates)
    raise RankError(f"unknown method {method!r}; compare one of {COMPARED}")


def _spread(items: list, k: int) -> list:
    """At most k items, evenly spaced: a small frontier search instead of a full one."""
    if len(items) <= k:
        return items
    step = (len(items) - 1) / (k - 1)
    return [items[round(i * step)] for i in range(k)]


def method_class(method: str) -> type[Decomposition]:
    """The decomposition class behind a compared method name (both TT variants are ``TensorTrain``)."""
    if method not in COMPARED:
        raise RankError(f"unknown method {method!r}; compare one of {COMPARED}")
    return METHODS["tt" if method.startswith("tt") else method]


def fit_method(method: str, ranks: dict, tensor: torch.Tensor, seed: int = 0, cp_iters: int = 100,
               cp_restarts: int = 1):
    """Fit one compared method; CP (the only non-closed-form, non-HOOI fit) takes its ALS effort here."""
    kwargs = dict(ranks, seed=seed)
    if method == "cp":
        kwargs.update(n_iter_max=cp_iters, n_restarts=cp_restarts)
    return method_class(method)(**kwargs).fit(tensor)


def compare_methods(tensor: torch.Tensor, budgets: list[int], methods=COMPARED, seed: int = 0, cp_iters: int = 100,
                    cp_restarts: int = 1, progress: bool = True, keep_fits: bool = False) -> list[dict]:
    """For each budget and method: the best-error ranks within budget, with error, params, time and effort.

    ``keep_fits`` adds the fitted object of each chosen row as ``row["fit"]`` (not JSON: pop it before saving),
    so a caller that trains from the fits does not fit every method twice.

    ``effort`` records what each fit spent (iterations, restarts, why it stopped), so a reader can check
    that no method won by getting more optimisation than another.
    """
    shape = tuple(tensor.shape)
    raw = shape[0] * shape[1] * shape[2]
    rows = []
    jobs = [(b, m) for b in budgets for m in methods]
    for budget, method in tqdm(jobs, desc="methods x budgets", disable=not progress):
        base = {"method": method, "budget": budget, "budget_ratio": raw / budget}
        options = match_ranks(method, shape, budget)
        if not options:
            rows.append({**base, "skipped": "no ranks fit this budget"})
            continue
        if method == "cp" and shape[1] * shape[2] * options[0]["rank"] * 4 > CP_MEMORY_LIMIT:
            gib = shape[1] * shape[2] * options[0]["rank"] * 4 / 2**30
            rows.append({**base, "ranks": options[0], "skipped": f"CP-ALS needs a {gib:.1f} GiB Khatri-Rao product"})
            continue
        best = None
        for ranks in options:
            start = time.perf_counter()
            fit = fit_method(method, ranks, tensor, seed, cp_iters, cp_restarts)
            row = {**base, "ranks": ranks, "params": fit.n_params(), "ratio": raw / fit.n_params(),
                   "rel_error": fit.relative_error(tensor), "seconds": time.perf_counter() - start,
                   "candidates": len(options), "effort": fit.effort()}
            if best is None or row["rel_error"] < best["rel_error"]:
                best = {**row, "fit": fit} if keep_fits else row
        rows.append(best)
    return rows


def _energy(singular_values: torch.Tensor) -> list[float]:
    """Cumulative fraction of squared Frobenius norm captured by the leading k singular values."""
    e = singular_values.double().pow(2)
    return (e.cumsum(0) / e.sum()).tolist()


def spectra(tensor: torch.Tensor) -> dict:
    """Energy captured vs rank: each matrix alone (mean/min/max over matrices) and the 3 mode unfoldings."""
    s = torch.linalg.svdvals(tensor.double())  # (n, D)
    per_matrix = torch.tensor([_energy(row) for row in s])
    out = {"shape": list(tensor.shape),
           "per_matrix": {"mean": per_matrix.mean(0).tolist(), "min": per_matrix.min(0).values.tolist(),
                          "max": per_matrix.max(0).values.tolist()}}
    for mode in range(3):
        unfolded = tl.unfold(tensor.double(), mode)
        gram = unfolded @ unfolded.T  # svdvals of a wide matrix through its Gram matrix
        vals = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0).sqrt()
        out[f"mode{mode}"] = _energy(vals)
    return out


def rank_for_energy(energy: list[float], target: float) -> int:
    """Smallest rank whose captured energy reaches ``target`` (e.g. 0.9)."""
    return next((i + 1 for i, e in enumerate(energy) if e >= target - 1e-12), len(energy))


def budgets_from_ratios(shape: Shape, ratios: list[float]) -> list[int]:
    raw = math.prod(shape)
    return [int(raw / r) for r in ratios]
