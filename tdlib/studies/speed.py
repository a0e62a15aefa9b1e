"""Benchmarks: inference speed of dense vs compressed encoders, and Tucker fitting time.

Timing follows one rule: every ratio compares models timed in the same process, with the same
fixed thread count, by ``torch.utils.benchmark`` (warm-up, then the median of repeated blocks).
Beside every measured speed-up stands the multiply-add (MAC) ratio computed from the shapes
(:func:`tdlib.core.ranks.encoder_macs`, attention included), and the fraction of it achieved.

Models timed (one process): the dense encoder; the Tucker model with ``implementation='factorized'``
(cached M V^T) and ``'reconstructed'`` (cached dense W); and, at the same parameter count, two
peers replacing the same linear maps: per-matrix low rank (method II, :class:`LowRankLinear`) and
tltorch's ``FactorizedLinear(factorization='tucker')``. Weights are random for BERT-base geometry
(speed does not depend on their values, and no hub is needed) and pre-trained for MiniLM.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable

import tltorch
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from tqdm import tqdm
from transformers import AutoConfig, BertConfig, BertModel

from tdlib.core.decompose import Tucker
from tdlib.core.deploy import encoder_runner, precision_copy
from tdlib.core.errors import check_choice
from tdlib.core.layers import LowRankLinear
from tdlib.core.memory import retain_freed_memory
from tdlib.core.modeling import compress, count_params, set_implementation
from tdlib.core.modeling_tdlib import get_module, set_module
from tdlib.core.precision import native_bf16
from tdlib.core.pretrained import load_model, resolve
from tdlib.core.ranks import BERT_BASE, MINILM, Geometry, encoder_macs, mac_ratio
from tdlib.core.stacking import encoder_layers

GEOMETRIES = {"bert-base": BERT_BASE, "minilm": MINILM, "tiny": Geometry(2, 64, 4)}
# (path in a layer, input blocks a, output blocks b)
MAPS = [("attention.self.query", 1, 1), ("attention.self.key", 1, 1), ("attention.self.value", 1, 1),
        ("attention.output.dense", 1, 1), ("intermediate.dense", 1, 4), ("output.dense", 4, 1)]


def geometry_of(name: str) -> Geometry:
    """The :class:`Geometry` called ``name`` in :data:`GEOMETRIES`; ConfigError naming the choices otherwise."""
    return GEOMETRIES[check_choice("geometry", name, tuple(GEOMETRIES))]


def dense_config(geometry: str) -> BertConfig:
    """The dense encoder's config: MiniLM's own, or BERT's for the geometry (64-wide heads)."""
    if geometry == "minilm":
        return AutoConfig.from_pretrained(resolve("minilm"))
    geom = geometry_of(geometry)
    return BertConfig(hidden_size=geom.d_model, num_hidden_layers=geom.n_layers,
                      num_attention_heads=geom.d_model // 64, intermediate_size=geom.ffn_blocks * geom.d_model)


def dense_model(geometry: str, seed: int = 0) -> BertModel:
    """The dense encoder: MiniLM's real weights, or a random BERT-base (speed is weight-independent)."""
    if geometry == "minilm":
        return load_model("minilm").eval()
    config = dense_config(geometry)
    torch.manual_seed(seed)
    return BertModel(config).eval()


def _replace_maps(model: nn.Module, make) -> nn.Module:
    out = copy.deepcopy(model)
    for layer in encoder_layers(out):
        for path, a, b in MAPS:
            set_module(layer, path, make(get_module(layer, path), a, b))
    return out.eval()


def low_rank_peer(model: nn.Module, budget: int) -> nn.Module:
    """Method II at ``budget`` decomposed parameters: rank r with n * 2 D r ~= budget."""
    n_layers, d_model = len(encoder_layers(model)), model.config.hidden_size
    rank = max(1, round(budget / (12 * n_layers * 2 * d_model)))
    return _replace_maps(model, lambda lin, a, b: LowRankLinear.from_linear(lin, a, b, d_model, rank))


def tltorch_peer(model: nn.Module, budget: int) -> nn.Module:
    """tltorch ``FactorizedLinear`` (Tucker, factorized forward), each map at budget / dense share of params."""

    dense = 12 * len(encoder_layers(model)) * model.config.hidden_size ** 2
    fraction = budget / dense
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _replace_maps(model, lambda lin, a, b: tltorch.FactorizedLinear.from_linear(
            lin, rank=fraction, factorization="tucker", implementation="factorized", n_tensorized_modes=1))


def decomposed_params(model: nn.Module) -> int:
    """Weights of the 12L decomposable maps as they are stored (bank, peer factors or dense)."""
    total = 0
    for layer in encoder_layers(model):
        for path, _, _ in MAPS:
            module = get_module(layer, path)
            total += sum(p.numel() for name, p in module.named_parameters() if not name.endswith("bias"))
    bank = getattr(model.base_model.encoder, "tdlib_bank", None)
    return total + (sum(p.numel() for p in bank.parameters()) if bank is not None else 0)


def _inputs(batch: int, seq_len: int, vocab: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq_len), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


MIN_RUNS = 5  # timed blocks per forward, at least


def time_forward(model: nn.Module, inputs: dict, threads: int, min_run_time: float,
                 precision: str = "fp32", min_runs: int = MIN_RUNS) -> dict:
    """Median wall time of one inference forward (ms), torch.utils.benchmark, fixed threads, in ``precision`` as the
    eager runtime runs it (:func:`tdlib.core.deploy.precision_copy`: in bf16 a copy with bf16 weights).

    At least ``min_runs`` timed blocks: a forward slower than ``min_run_time`` (BERT-base at batch 8 x 128 takes
    over a second on 2 cores) would otherwise be one sample, and a speed-up is a ratio of two medians.
    """

    model = precision_copy(model, precision)

    @torch.inference_mode()
    def forward():
        model(**inputs)

    forward()  # warm-up: builds eval caches, allocator, oneDNN primitives
    timer = benchmark.Timer(stmt="forward()", globals={"forward": forward}, num_threads=threads)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    if len(m.times) < min_runs:  # slow forwards: more single-call blocks, merged (times normalised per call)
        m = benchmark.Measurement.merge([m, *(timer.timeit(number=1) for _ in range(min_runs - len(m.times)))])[0]
    return {"median_ms": m.median * 1e3, "iqr_ms": m.iqr * 1e3, "runs": len(m.times)}


def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_macs(model: nn.Module, inputs: dict) -> int:
    """Multiply-adds of one forward, counted by ``torch.utils.flop_counter`` from the ops actually run.

    Counted on a warm model (eval caches built). torch 2.13's counter has no entry for the CPU
    flash-attention kernel that SDPA dispatches to, so it is registered here with torch's own SDPA
    formula (QK^T and AV).
    """

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}
    with torch.inference_mode():
        model(**inputs)  # build the eval caches first: a one-time cost, not per forward
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(**inputs)
    return counter.get_total_flops() // 2


def _memory_probe(geometry: str, name: str, config: list[int] | None, peers: bool, batch: int, seq_len: int,
                  seed: int) -> float:
    """In a fresh interpreter: peak extra RSS (MB) of one forward of model ``name`` (built from ``config``)."""
    torch.set_num_threads(1)
    models = build_models(geometry, [tuple(config)] if config else [], peers=peers, seed=seed)
    model = models[name][0]
    for other in [k for k in models if k != name]:
        del models[other]
    inputs = _inputs(batch, seq_len, model.config.vocab_size, seed)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed build memory back, so the baseline is the model
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the RSS high-water mark (VmHWM) to the current RSS
    before = _status_kb("VmRSS")
    with torch.inference_mode():
        model(**inputs)  # cold: includes building the eval caches (M V^T or W), part of inference memory
    return max(0, _status_kb("VmHWM") - before) / 1024


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":"))


def peak_forward_memory_mb(geometry: str, name: str, batch: int, seq_len: int, seed: int = 0,
                          config: tuple[int, int] | None = None, peers: bool = False) -> float | None:
    """Peak extra resident memory of one inference forward (MB), measured in a fresh interpreter.

    A subprocess per model keeps models from sharing a high-water mark (and avoids fork after
    OpenMP threads started, which can deadlock). It builds the model, releases freed memory
    (``malloc_trim``), resets the kernel's RSS high-water mark, and reports how far one cold forward
    (activations plus the eval caches it builds) raises it above the loaded model. ``name`` is a
    :func:`build_models` name, built from ``config`` (rank_layer, rank_dim; None for the dense model)
    with the peers when ``peers``. Linux only (``/proc/self/clear_refs``); None elsewhere.
    """
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    cmd = [sys.executable, "-m", "tdlib.studies.speed", "--memory-probe",
           json.dumps({"geometry": geometry, "name": name, "config": list(config) if config else None, "peers": peers,
                       "batch": batch, "seq_len": seq_len, "seed": seed})]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        warnings.warn(f"memory probe for {name!r} failed: {proc.stderr.strip().splitlines()[-1:]}", stacklevel=2)
        return None
    return float(proc.stdout.strip().splitlines()[-1])


def build_models(geometry: str, configs: Iterable[tuple[int, int]], peers: bool = True, seed: int = 0) -> dict:
    """name -> (model, info): dense, and per Tucker config the two protocols and the peers."""
    dense = dense_model(geometry, seed)
    init = "pretrained" if geometry == "minilm" else "random"
    models = {"dense": (dense, {"kind": "dense", "rank_dim": None})}
    for rank_layer, rank_dim in configs:
        tag = f"IV-{rank_layer}-{rank_dim}"
        fact = compress(dense, rank_layer, rank_dim, init=init, seed=seed).eval()
        budget = count_params(fact).decomposed
        info = {"rank_layer": rank_layer, "rank_dim": rank_dim, "budget": budget}
        models[f"{tag} factorized"] = (fact, {**info, "kind": "tucker-factorized"})
        models[f"{tag} reconstructed"] = (set_implementation(copy.deepcopy(fact), "reconstructed"),
                                          {**info, "kind": "tucker-reconstructed"})
        if peers:
            models[f"{tag} II-lowrank peer"] = (low_rank_peer(dense, budget), {**info, "kind": "II-lowrank"})
            models[f"{tag} tltorch peer"] = (tltorch_peer(dense, budget), {**info, "kind": "tltorch-tucker"})
    return models


def run_speed(geometry: str = "minilm", configs: Iterable[tuple[int, int]] = ((36, 192), (16, 96)),
              grid: Iterable[tuple[int, int]] = ((8, 128),), threads: int = 2, min_run_time: float = 1.0,
              peers: bool = True, memory: bool = True, seed: int = 0) -> dict:
    """Time every model over the (batch, seq_len) grid; return rows with speed-up and MAC ratio."""
    torch.set_num_threads(threads)
    retain_freed_memory()
    geom = geometry_of(geometry)
    models = build_models(geometry, list(configs), peers, seed)
    rows = []
    grid = list(grid)
    cells = [(b, s, name) for b, s in grid for name in models]
    dense_ms: dict[tuple[int, int], float] = {}
    dense_macs: dict[tuple[int, int], int] = {}
    for batch, seq_len, name in tqdm(cells, desc=f"speed {geometry}"):
        model, info = models[name]
        inputs = _inputs(batch, seq_len, model.config.vocab_size, seed)
        timing = time_forward(model, inputs, threads, min_run_time)
        if name == "dense":
            dense_ms[batch, seq_len] = timing["median_ms"]
        row = {"geometry": geometry, "model": name, **info, "batch": batch, "seq_len": seq_len, **timing,
               "decomposed_params": decomposed_params(model),
               "param_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20}
        row["speedup"] = dense_ms[batch, seq_len] / timing["median_ms"]
        row["macs"] = count_macs(model, inputs)
        if name == "dense":
            dense_macs[batch, seq_len] = row["macs"]
        row["mac_ratio"] = dense_macs[batch, seq_len] / row["macs"]
        row["fraction_of_mac_limit"] = row["speedup"] / row["mac_ratio"]
        d = info.get("rank_dim")
        # the analytic model of tdlib.core.ranks, for the rows it describes (a cross-check of the counter)
        if info["kind"] in ("dense", "tucker-factorized"):
            row["mac_ratio_analytic"] = mac_ratio(geom, d, seq_len) if d else 1.0
        rows.append(row)
    bf16 = bf16_column(models, rows, threads, min_run_time, seed)
    if memory:  # at the largest grid point only: one fresh process per model
        batch, seq_len = max(grid, key=lambda g: g[0] * g[1])
        for row in tqdm([r for r in rows if (r["batch"], r["seq_len"]) == (batch, seq_len)], desc="peak memory"):
            config = (row["rank_layer"], row["rank_dim"]) if "rank_layer" in row else None
            row["peak_forward_mb"] = peak_forward_memory_mb(geometry, row["model"], batch, seq_len, seed, config,
                                                            peers=row["kind"] in ("II-lowrank", "tltorch-tucker"))
    return {"geometry": geometry, "threads": threads, "min_run_time": min_run_time, "rows": rows, "bf16": bf16}


def bf16_column(models: dict, rows: list[dict], threads: int, min_run_time: float, seed: int = 0) -> str:
    """Dense bf16 vs compressed bf16 (``bf16_median_ms``, ``bf16_speedup``) on every dense and factorized row,
    where the CPU has native bf16; elsewhere bf16 is emulated (far slower than fp32) and the column is skipped.
    Returns what was done, for the record."""

    if not native_bf16():
        return "skipped: this CPU has no native bf16 (AMX-BF16 or AVX512-BF16)"
    dense = {}
    for row in sorted(rows, key=lambda r: r["kind"] != "dense"):  # dense first: the speed-up's denominator
        if row["kind"] not in ("dense", "tucker-factorized"):
            continue
        model = models[row["model"]][0]
        inputs = _inputs(row["batch"], row["seq_len"], model.config.vocab_size, seed)
        row["bf16_median_ms"] = time_forward(model, inputs, threads, min_run_time, "bf16")["median_ms"]
        if row["kind"] == "dense":
            dense[row["batch"], row["seq_len"]] = row["bf16_median_ms"]
        row["bf16_speedup"] = dense[row["batch"], row["seq_len"]] / row["bf16_median_ms"]
    return "measured"


# torch.profiler op names by category (self CPU time): what compression shrinks (gemm) and what it leaves (the rest)
CATEGORIES = {
    "gemm": ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear", "aten::einsum"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::scaled_dot_product_attention",
                  "aten::softmax", "aten::_softmax"),
    "gelu": ("aten::gelu",),
    "layernorm": ("aten::layer_norm", "aten::native_layer_norm"),
    "adds": ("aten::add", "aten::add_", "aten::mul", "aten::div", "aten::sub"),
    "copies": ("aten::copy_", "aten::contiguous", "aten::clone", "aten::cat", "aten::to", "aten::_to_copy",
               "aten::empty", "aten::empty_strided", "aten::resize_", "aten::split", "aten::view", "aten::reshape",
               "aten::transpose", "aten::permute", "aten::expand", "aten::slice", "aten::unflatten",
               "aten::flatten", "aten::as_strided", "aten::t"),
}


def op_category(name: str) -> str:
    """The category of a profiler op name (``other``: embeddings, masks, anything not listed)."""
    return next((cat for cat, names in CATEGORIES.items() if name in names), "other")


def op_breakdown(model: nn.Module, inputs: dict, threads: int = 2, repeats: int = 5, precision: str = "fp32") -> dict:
    """Where one eager forward's time goes (``torch.profiler``, self CPU time, mean of ``repeats``), by
    :data:`CATEGORIES`: ``gemm`` (what compression shrinks), ``attention`` (SDPA and softmax), ``gelu``,
    ``layernorm``, ``adds`` (bias, residual and elementwise), ``copies`` (casts, layout, views), ``other``.
    The forward is the eager runtime's (:func:`tdlib.core.deploy.encoder_runner`): in bf16, a bf16 copy of the model.
    """
    torch.set_num_threads(threads)
    run = encoder_runner(model, "eager", precision, threads)
    totals = dict.fromkeys([*CATEGORIES, "other"], 0.0)
    run(inputs)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            run(inputs)
    for event in prof.key_averages():
        totals[op_category(event.key)] += event.self_cpu_time_total / 1e3 / repeats
    total = sum(totals.values())
    return {**{f"{k}_ms": v for k, v in totals.items()}, "total_ms": total,
            **{f"{k}_share": v / total for k, v in totals.items()}}


def _dense_row(rows: list[dict], row: dict) -> dict:
    """The dense model's row at ``row``'s geometry, batch, sequence length and precision."""
    return next(r for r in rows if r["kind"] == "dense" and all(r[k] == row[k] for k in
                                                                ("geometry", "batch", "seq_len", "precision")))


def breakdown(geometry: str, configs: Iterable[tuple[int, int]], grid: Iterable[tuple[int, int]] = ((8, 128),),
              threads: int = 2, seed: int = 0) -> list[dict]:
    """:func:`op_breakdown` of the dense model and each Tucker config (factorized), per grid point, in fp32 and (where
    the CPU has it natively) bf16, one process."""
    models = {name: (m, info) for name, (m, info) in build_models(geometry, list(configs), peers=False,
                                                                   seed=seed).items()
              if info["kind"] in ("dense", "tucker-factorized")}
    precisions = ["fp32", "bf16"] if native_bf16() else ["fp32"]
    cells = [(b, s, p, name) for b, s in grid for p in precisions for name in models]
    rows = []
    for batch, seq_len, precision, name in tqdm(cells, desc=f"profile {geometry}"):
        model, info = models[name]
        inputs = _inputs(batch, seq_len, model.config.vocab_size, seed)
        rows.append({"geometry": geometry, "model": name, **info, "batch": batch, "seq_len": seq_len,
                     "precision": precision, **op_breakdown(model, inputs, threads, precision=precision)})
    for row in rows:
        dense = _dense_row(rows, row)
        row["gemm_speedup"] = dense["gemm_ms"] / row["gemm_ms"]
        row["total_speedup"] = dense["total_ms"] / row["total_ms"]
    return rows


def kernel_rates(rows: list[dict]) -> list[dict]:
    """What each :func:`breakdown` row's kernels achieve, and what that allows.

    Per row: the GEMMs' and attention's multiply-adds per second (GMAC/s, from
    :func:`tdlib.core.ranks.encoder_macs`), and the **ceiling**: the speed-up over dense if every op other than the
    GEMMs costs what it costs in dense (attention, GELU, LayerNorm, adds, copies: the same activations in both
    models), ``dense_total / (dense_total - dense_gemm + gemm)``, beside the multiply-add limit and its fraction.
    A ceiling below a target's fraction of the limit says the target needs the non-GEMM ops faster, not the GEMMs.
    """
    out = []
    for row in rows:
        geom = GEOMETRIES[row["geometry"]]
        macs = encoder_macs(geom, row["seq_len"], row.get("rank_dim"))
        tokens = row["batch"] * row["seq_len"]
        dense = _dense_row(rows, row)
        ceiling = dense["total_ms"] / (dense["total_ms"] - dense["gemm_ms"] + row["gemm_ms"])
        limit = mac_ratio(geom, row["rank_dim"], row["seq_len"]) if row.get("rank_dim") else 1.0
        out.append({"model": row["model"], "batch": row["batch"], "seq_len": row["seq_len"],
                    "precision": row["precision"], "gemm_gmac_s": macs["linear"] * tokens / row["gemm_ms"] / 1e6,
                    "attention_gmac_s": macs["attention"] * tokens / row["attention_ms"] / 1e6,
                    "total_speedup": row["total_speedup"], "ceiling": ceiling, "mac_limit": limit,
                    "ceiling_of_limit": ceiling / limit})
    return out


def time_tucker(shape: tuple[int, int, int] = (144, 768, 768), rank_layer: int = 72, rank_dim: int = 384,
                seed: int = 0, threads: int = 2) -> dict:
    """Wall time of Tucker-HOOI on a random tensor of the given shape (BERT-base: 144 x 768 x 768)."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    tensor = torch.randn(shape, generator=gen) * 0.02
    start = time.perf_counter()
    fit = Tucker(rank_layer, rank_dim, seed=seed).fit(tensor)
    return {"shape": list(shape), "rank_layer": rank_layer, "rank_dim": rank_dim, "threads": threads,
            "seconds": time.perf_counter() - start, "sweeps": len(fit.errors_), "rel_error": fit.errors_[-1]}


if __name__ == "__main__":  # python -m tdlib.studies.speed --memory-probe '{json}': used by peak_forward_memory_mb
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-probe":
        print(_memory_probe(**json.loads(sys.argv[2])))
    else:
        raise SystemExit("usage: python -m tdlib.studies.speed --memory-probe JSON (internal); "
                         "see python -m tdlib bench")
