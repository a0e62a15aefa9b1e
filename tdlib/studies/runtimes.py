"""The C4 benchmark: dense against compressed under each runtime, interleaved, with an interval.

A speed-up is a ratio of two timings, and on a shared 2-core machine one timing drifts by tens of percent between
minutes. So the models of one comparison are timed in one process, in rounds: each round times every model once
(a ``torch.utils.benchmark`` block of at least ``min_block_s``), in an order that rotates from round to round. The
per-round ratio dense / compressed is what noise cannot move much, since both sides saw the same machine state; the
speed-up reported is the geometric mean of those ratios, with a 95% t-interval over the rounds.

Runtimes and precisions: :data:`tdlib.core.deploy.RUNTIMES`, fp32 everywhere and bf16 where the CPU has it natively
(not under ONNX Runtime, whose CPU provider has no bf16 matmul). Every output is checked against the eager fp32
forward of the same model before it is timed.

:func:`host_ceiling` gives what the benchmark's targets are read against: the speed-up each config could reach on
this host if both models ran every op at the fastest rate measured here for its kind.
"""

from __future__ import annotations

import copy
import math
import multiprocessing
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch.utils import benchmark
from tqdm import tqdm

from tdlib.core.deploy import RUNTIMES, encoder_runner
from tdlib.core.errors import ConfigError, check_choice
from tdlib.core.precision import cpu_bf16_flags, cpu_flags, isa_cap, native_bf16
from tdlib.core.ranks import Geometry, encoder_macs, mac_ratio
from tdlib.studies.provenance import cpu_model
from tdlib.studies.speed import _inputs, build_models, count_macs, dense_config, geometry_of

# fp32 paths must agree with eager fp32 to this (max |difference| of hidden states of unit scale); bf16 to this
TOLERANCE = {"fp32": 1e-3, "bf16": 0.25}


def ratio_interval(dense_ms: Iterable[float], model_ms: Iterable[float], level: float = 0.95) -> dict:
    """Speed-up dense / model from paired rounds: geometric mean of the per-round ratios and its t-interval."""
    return geometric_interval(np.asarray(list(dense_ms), float) / np.asarray(list(model_ms), float), level)


def geometric_interval(ratios: Iterable[float], level: float = 0.95) -> dict:
    """The geometric mean of ``ratios`` and its ``level`` t-interval (on their logs), and how many there were."""
    logs = np.log(np.asarray(list(ratios), float))
    mean = float(logs.mean())
    if len(logs) < 2:
        return {"speedup": math.exp(mean), "low": math.nan, "high": math.nan, "rounds": len(logs)}
    half = float(stats.t.ppf(0.5 + level / 2, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs)))
    return {"speedup": math.exp(mean), "low": math.exp(mean - half), "high": math.exp(mean + half),
            "rounds": len(logs)}


def interleaved(runners: dict, inputs: dict, threads: int, rounds: int, min_block_s: float) -> dict[str, list[float]]:
    """ms per forward of each runner, one block per runner per round, in an order that rotates every round."""
    timers, numbers = {}, {}
    for name, run in runners.items():
        run(inputs)  # warm-up (a compiled runner compiles here)
        timers[name] = benchmark.Timer(stmt="run(inputs)", globals={"run": run, "inputs": inputs},
                                       num_threads=threads)
        once = timers[name].timeit(number=1).median
        numbers[name] = max(1, math.ceil(min_block_s / max(once, 1e-6)))
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timers[name].timeit(number=numbers[name]).median * 1e3)
    return times


def across_processes(processes: int, **benchmark) -> dict:
    """:func:`run_runtimes` (its keyword arguments ``benchmark``) in ``processes`` fresh processes, one after another,
    and each row's speed-up pooled over them: the interval that a verdict read from it must survive.

    The interleaved rounds of one process share its state (where its allocations landed, what else ran on the host
    in those minutes), and its interval covers only the noise within it. Measured on one 2-core AMX host with the
    same eager code, IV-96-128's fp32 speed-up at 8 x 128 was 2.68x [2.64, 2.73] in one process and 2.88x
    [2.83, 2.92] in another (the runtime record b48adccf246d as made at 43213a1, and as made again at 0e2cb4d):
    intervals that exclude each other.

    Returns
    -------
    dict
        ``{"geometry", "host", "threads", "processes", "rows", "runs"}``: ``runs`` each process's own result;
        ``rows`` those of the first process with ``speedup`` [``low``, ``high``] the geometric mean of the
        processes' speed-ups and its 95% t-interval over processes (``process_speedups``), ``median_ms`` the median
        of the processes' medians, and ``fraction_of_mac_limit`` from the pooled speed-up.
    """
    if processes < 2:
        raise ConfigError(f"across_processes needs at least 2 processes for an interval, got {processes}")
    runs = []
    for _ in tqdm(range(processes), desc="processes"):
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs.append(pool.submit(run_runtimes, **benchmark).result())
    rows = []
    for cell in zip(*(run["rows"] for run in runs), strict=True):
        speedups = [row["speedup"] for row in cell]
        pooled = geometric_interval(speedups)
        count = pooled.pop("rounds")
        rows.append({**{k: v for k, v in cell[0].items() if k != "ms"}, **pooled, "processes": count,
                     "process_speedups": speedups, "median_ms": float(np.median([row["median_ms"] for row in cell])),
                     "fraction_of_mac_limit": pooled["speedup"] / cell[0]["mac_ratio"],
                     "max_abs_diff": max(row["max_abs_diff"] for row in cell)})
    return {"geometry": runs[0]["geometry"], "host": host(), "threads": runs[0]["threads"], "processes": processes,
            "rows": rows, "runs": runs}


def host() -> dict:
    """The machine a timing belongs to: CPU model, native-bf16 instruction sets, AVX2/AVX-512 presence, and any
    instruction-set cap set in the environment (then ``native_bf16`` is what the capped libraries use)."""
    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    out = {"cpu_model": cpu_model(), "isa": isa, "native_bf16": list(cpu_bf16_flags()) if native_bf16() else []}
    cap = isa_cap()
    return {**out, "isa_cap": cap} if cap else out


def run_runtimes(geometry: str = "bert-base", configs: Iterable[tuple[int, int]] = ((72, 384), (96, 128)),
                 grid: Iterable[tuple[int, int]] = ((1, 128), (8, 128)), runtimes: Iterable[str] = RUNTIMES,
                 threads: int = 2, rounds: int = 10, min_block_s: float = 0.3, seed: int = 0,
                 precisions: Iterable[str] = ("fp32", "bf16")) -> dict:
    """Dense vs each factorized config under each runtime and precision, per grid point; rows with intervals.
    ``precisions``: those to time, bf16 only where the CPU has it natively.

    Returns ``{"host", "threads", "rows", "skipped"}``; a row per (runtime, precision, batch, seq_len, model) with
    ``median_ms``, the per-round ``ms``, ``speedup`` [``low``, ``high``] against dense under the same runtime and
    precision, the counted multiply-add ratio and the fraction of it reached, and ``max_abs_diff`` from the eager
    fp32 forward.
    """
    torch.set_num_threads(threads)
    built = {name: (m, info) for name, (m, info) in build_models(geometry, list(configs), peers=False,
                                                                  seed=seed).items()
             if info["kind"] in ("dense", "tucker-factorized")}
    models = {name: m for name, (m, _) in built.items()}
    precisions = [check_choice("precision", p, ("fp32", "bf16")) for p in precisions]
    skipped = [] if native_bf16() or "bf16" not in precisions else [
        "bf16: this CPU has no native bf16 (AMX-BF16 or AVX512-BF16)"]
    precisions = [p for p in precisions if p == "fp32" or native_bf16()]
    cells = [(rt, p) for rt in runtimes for p in precisions if not (rt == "onnxruntime" and p == "bf16")]
    rows = []
    references: dict[tuple, torch.Tensor] = {}  # (model, batch, seq_len) -> its eager fp32 output, made once
    with tempfile.TemporaryDirectory() as tmp:
        bar = tqdm(total=len(cells) * len(list(grid)), desc=f"runtimes {geometry}")
        for runtime, precision in cells:
            torch._dynamo.reset()  # each cell compiles its models afresh, well inside dynamo's recompile limit
            # every runner times its own copy of each model, as compiled and onnxruntime do (they freeze one): in two
            # interleaved runs, eager IV-96-128 timed in place (the model as built) ran 8-13% slower than a copy of
            # it, and a copy against a copy 1.00x; why is not known
            runners = {name: encoder_runner(copy.deepcopy(m) if runtime == "eager" else m, runtime, precision,
                                            threads, workdir=f"{tmp}/{i}")
                       for i, (name, m) in enumerate(models.items())}
            for batch, seq_len in grid:
                inputs = _inputs(batch, seq_len, models["dense"].config.vocab_size, seed)
                diffs = {}
                for name, run in runners.items():
                    key = (name, batch, seq_len)
                    if key not in references:
                        references[key] = encoder_runner(models[name], "eager", "fp32")(inputs)
                    diffs[name] = float((run(inputs) - references[key]).abs().max())
                    if diffs[name] > TOLERANCE[precision]:
                        raise AssertionError(f"{name} under {runtime}/{precision} differs from eager fp32 by "
                                             f"{diffs[name]:.3g} (> {TOLERANCE[precision]})")
                times = interleaved(runners, inputs, threads, rounds, min_block_s)
                macs = {name: count_macs(m, inputs) for name, m in models.items()}
                for name, ms in times.items():
                    ratio = ratio_interval(times["dense"], ms)
                    mac_ratio = macs["dense"] / macs[name]
                    rows.append({"runtime": runtime, "precision": precision, "batch": batch, "seq_len": seq_len,
                                 "model": name, **built[name][1], "median_ms": float(np.median(ms)), "ms": ms, **ratio,
                                 "mac_ratio": mac_ratio, "fraction_of_mac_limit": ratio["speedup"] / mac_ratio,
                                 "max_abs_diff": diffs[name]})
                bar.update()
            del runners
        bar.close()
    return {"geometry": geometry, "host": host(), "threads": threads, "rows": rows, "skipped": skipped}


def _kernel_ms(fn, threads: int, min_run_time: float) -> float:
    """Median ms of one call of ``fn()`` (torch.utils.benchmark, warm-up first)."""
    fn()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def _floor_kernels(geom: Geometry, heads: int, batch: int, seq_len: int, precision: str, threads: int,
                   min_run_time: float) -> dict:
    """One round of :func:`host_ceiling`'s kernel timings (ms per call) and the fastest GEMM rate (GMAC/s)."""
    D, wide, tokens = geom.d_model, geom.ffn_blocks * geom.d_model, batch * seq_len
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    x, h = torch.randn(tokens, D, dtype=dtype), torch.randn(tokens, wide, dtype=dtype)
    scores = torch.randn(batch, heads, seq_len, seq_len, dtype=dtype)
    gamma, beta = torch.ones(D, dtype=dtype), torch.zeros(D, dtype=dtype)
    rates = []
    with torch.inference_mode():
        for n_in, n_out in ((D, D), (D, wide), (wide, D)):  # the dense model's three GEMM shapes
            a, w = torch.randn(tokens, n_in, dtype=dtype), torch.randn(n_out, n_in, dtype=dtype)
            rates.append(tokens * n_in * n_out / _kernel_ms(lambda a=a, w=w: F.linear(a, w), threads, min_run_time)
                         / 1e6)
        return {"gemm_gmac_s": max(rates),
                "gelu_ms": _kernel_ms(lambda: F.gelu(h), threads, min_run_time),
                "softmax_ms": _kernel_ms(lambda: torch.softmax(scores, -1), threads, min_run_time),
                "layernorm_ms": _kernel_ms(lambda: F.layer_norm(x, (D,), gamma, beta), threads, min_run_time)}


def host_ceiling(geometry: str = "bert-base", rank_dims: Iterable[int] = (384, 128),
                 grid: Iterable[tuple[int, int]] = ((1, 128), (8, 128)), threads: int = 2, rounds: int = 5,
                 min_run_time: float = 0.2) -> dict:
    """The speed-up over dense that each compressed model could reach on this host if both models ran every op at
    the fastest rate measured here for its kind: the ceiling the benchmark's targets are read against.

    Per precision (fp32, and bf16 where native) and grid point, each of ``rounds`` rounds times with
    ``torch.utils.benchmark``, as single eager kernels:

    - the dense model's three GEMM shapes over batch x seq tokens (D -> D, D -> kD, kD -> D); the fastest of their
      multiply-add rates runs every GEMM of both models, attention's QK^T and AV included
      (:func:`tdlib.core.ranks.encoder_macs`);
    - per layer, what no compression shrinks: GELU over (tokens, kD), softmax over (batch, heads, seq, seq), and
      LayerNorm over (tokens, D), twice.

    A model's floor is ``layers * (gelu + softmax + 2 * layernorm) + MACs / rate``; the ceiling is dense's floor over
    the compressed model's, per round, as a geometric mean with its 95% interval (:func:`ratio_interval`). Bias and
    residual adds, embeddings, masks and copies are left out (they can fuse into a GEMM or a LayerNorm, or are small),
    the small compressed GEMMs get the fastest dense GEMM's rate, and each kernel runs call after call on the same
    buffers, which stay in cache (a GELU over 8 x 128 x 3,072 floats ran 0.57 ms so, 1.1 ms on buffers cycled through
    400 MB: a probe on a 2-core AMX host). Each of these raises the ceiling, so a target above it is out of reach
    for any runtime that runs dense's GEMMs as fast as this host's fastest kernel, with a GELU, softmax and LayerNorm
    no faster than PyTorch's. Only a slower dense GEMM (every GEMM slower, for both models, leaves the fixed costs a
    smaller share: a weaker baseline, not a faster model) or faster kernels for those three ops raise the ratio past
    it.

    Returns
    -------
    dict
        ``{"geometry", "host", "threads", "kernels", "rows"}``: ``kernels`` one entry per (precision, batch,
        seq_len) with each round's timings; ``rows`` one per (precision, batch, seq_len, rank_dim) with the rounds'
        ``dense_floor_ms`` and ``floor_ms``, the ``ceiling`` [``low``, ``high``], the multiply-add limit and the
        ceiling's fraction of it.
    """
    torch.set_num_threads(threads)
    geom, heads = geometry_of(geometry), dense_config(geometry).num_attention_heads
    precisions = ["fp32", "bf16"] if native_bf16() else ["fp32"]
    kernels, rows = [], []
    cells = [(p, b, s) for p in precisions for b, s in grid]
    for precision, batch, seq_len in tqdm(cells, desc=f"host ceiling {geometry}"):
        timed = [_floor_kernels(geom, heads, batch, seq_len, precision, threads, min_run_time)
                 for _ in range(rounds)]
        kernels.append({"precision": precision, "batch": batch, "seq_len": seq_len, "rounds": timed})
        tokens = batch * seq_len

        def floor(rank_dim, t, tokens=tokens, seq_len=seq_len):
            fixed = geom.n_layers * (t["gelu_ms"] + t["softmax_ms"] + 2 * t["layernorm_ms"])
            return fixed + encoder_macs(geom, seq_len, rank_dim)["total"] * tokens / t["gemm_gmac_s"] / 1e6
        dense = [floor(None, t) for t in timed]
        for rank_dim in rank_dims:
            model = [floor(rank_dim, t) for t in timed]
            ratio = ratio_interval(dense, model)
            limit = mac_ratio(geom, rank_dim, seq_len)
            rows.append({"precision": precision, "batch": batch, "seq_len": seq_len, "rank_dim": rank_dim,
                         "dense_floor_ms": dense, "floor_ms": model, "ceiling": ratio["speedup"], "low": ratio["low"],
                         "high": ratio["high"], "mac_limit": limit, "ceiling_of_limit": ratio["speedup"] / limit})
    return {"geometry": geometry, "host": host(), "threads": threads, "kernels": kernels, "rows": rows}
