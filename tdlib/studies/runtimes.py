"""The C4 benchmark: dense against compressed under each runtime, interleaved, with an interval.

A speed-up is a ratio of two timings, and on a shared 2-core machine one timing drifts by tens of percent between
minutes. So the models of one comparison are timed in one process, in rounds: each round times every model once
(a ``torch.utils.benchmark`` block of at least ``min_block_s``), in an order that rotates from round to round. The
per-round ratio dense / compressed is what noise cannot move much, since both sides saw the same machine state; the
speed-up reported is the geometric mean of those ratios, with a 95% t-interval over the rounds.

Runtimes and precisions: :data:`tdlib.core.deploy.RUNTIMES`, fp32 everywhere and bf16 where the CPU has it natively
(not under ONNX Runtime, whose CPU provider has no bf16 matmul). Every output is checked against the eager fp32
forward of the same model before it is timed.
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Iterable

import numpy as np
import torch
from scipy import stats
from torch.utils import benchmark
from tqdm import tqdm

from tdlib.core.deploy import RUNTIMES, encoder_runner
from tdlib.core.precision import cpu_bf16_flags, cpu_flags, isa_cap, native_bf16
from tdlib.studies.provenance import cpu_model
from tdlib.studies.speed import _inputs, build_models, count_macs

# fp32 paths must agree with eager fp32 to this (max |difference| of hidden states of unit scale); bf16 to this
TOLERANCE = {"fp32": 1e-3, "bf16": 0.25}


def ratio_interval(dense_ms: Iterable[float], model_ms: Iterable[float], level: float = 0.95) -> dict:
    """Speed-up dense / model from paired rounds: geometric mean of the per-round ratios and its t-interval."""
    logs = np.log(np.asarray(list(dense_ms), float) / np.asarray(list(model_ms), float))
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
                 threads: int = 2, rounds: int = 10, min_block_s: float = 0.3, seed: int = 0) -> dict:
    """Dense vs each factorized config under each runtime and precision, per grid point; rows with intervals.

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
    precisions = ["fp32", "bf16"] if native_bf16() else ["fp32"]
    cells = [(rt, p) for rt in runtimes for p in precisions if not (rt == "onnxruntime" and p == "bf16")]
    skipped = [] if native_bf16() else ["bf16: this CPU has no native bf16 (AMX-BF16 or AVX512-BF16)"]
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
