"""Inference runtimes: every path gives the eager model's outputs; the benchmark's interval and C4's rule.
No timing assertions (speed is measured in notebook 04, not tested)."""

import math
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import openvino
import pytest
import torch

from tdlib import compress, set_implementation
from tdlib.core import deploy
from tdlib.core.deploy import (
    FrozenMap,
    cpu_attention,
    encoder_runner,
    export_onnx,
    export_openvino,
    freeze,
    onnx_session,
)
from tdlib.core.errors import ConfigError
from tdlib.core.modeling_tdlib import BankLinear
from tdlib.core.precision import native_bf16
from tdlib.core.ranks import BERT_BASE, encoder_macs, mac_ratio
from tdlib.paper.claims import c4_verdict
from tdlib.studies.runtimes import (
    TOLERANCE,
    across_processes,
    host_ceiling,
    interleaved,
    ratio_interval,
    run_runtimes,
)
from tdlib.studies.speed import GEOMETRIES, dense_model, kernel_rates, op_category


def _inputs(batch=2, seq=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, seq), generator=gen)
    mask = torch.ones_like(ids)
    mask[0, seq // 2:] = 0  # one padded row: the mask must reach every runtime
    return {"input_ids": ids, "attention_mask": mask}


def _runs_dense(m: FrozenMap) -> bool:
    """A frozen map that runs as its dense matrix: neither xU nor V^T."""
    return m.u_t is None and m.v is None


@pytest.fixture(scope="module")
def models():
    dense = dense_model("tiny")
    # factorized maps of both forms (fold: a = 1, fold_in: FFN down), maps that save no multiply-adds (rank_dim close
    # to D), and rebuilt ones
    return {"dense": dense, "IV-6-16": compress(dense, 6, 16, init="random").eval(),
            "IV-6-56": compress(dense, 6, 56, init="random").eval(),
            "IV-6-16 rebuilt": set_implementation(compress(dense, 6, 16, init="random"), "reconstructed").eval()}


def test_freeze_keeps_outputs_and_leaves_no_bank(models):
    inputs = _inputs()
    for name, model in models.items():
        before = {k: v.clone() for k, v in model.state_dict().items()}
        frozen = freeze(model)
        with torch.inference_mode():
            torch.testing.assert_close(frozen(**inputs).last_hidden_state, model(**inputs).last_hidden_state,
                                       atol=1e-5, rtol=0)
        assert not any(isinstance(m, BankLinear) for m in frozen.modules()), name
        assert not any(p.requires_grad for p in frozen.parameters()), name
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "freeze changed the model"
        with torch.inference_mode():  # frozen where a user's inference code runs: the same model, no inference tensors
            again = freeze(model)
        assert not any(p.is_inference() for p in again.parameters())
        if name != "dense":
            maps = [m for m in frozen.modules() if isinstance(m, FrozenMap)]
            assert len(maps) == 6 * 2  # every decomposed map of the 2 layers
            if name == "IV-6-16":  # one U^T tensor, shared by every map that starts with xU; FFN down reads x
                assert len({id(m.u_t) for m in maps if m.u_t is not None}) == 1
                assert [m.u_t is None and m.v is not None for m in maps].count(True) == 2
            else:  # rebuilt, or (d = 56 of D = 64) no map saves multiply-adds: each runs as its dense matrix
                assert all(_runs_dense(m) for m in maps), name


def test_freeze_runs_as_dense_only_the_maps_that_save_no_multiply_adds(models):
    half = compress(models["dense"], 6, 32, init="random").eval()  # d = D/2
    dense_maps = {name: _runs_dense(m) for name, m in freeze(half).named_modules()
                  if isinstance(m, FrozenMap)}
    # attention output: xU then M V^T, 2*D*d = D*D, no saving; Q, K, V share one xU; FFN up and down save
    assert {name.split(".", 3)[-1] for name, dense in dense_maps.items() if dense} == {"attention.output.dense"}
    kept = freeze(half, keep_factorized=True)
    assert not any(_runs_dense(m) for m in kept.modules() if isinstance(m, FrozenMap))
    inputs = _inputs()
    with torch.inference_mode():
        expected = half(**inputs).last_hidden_state
        for frozen in (freeze(half), kept):
            torch.testing.assert_close(frozen(**inputs).last_hidden_state, expected, atol=1e-4, rtol=0)


def test_freeze_picks_the_attention_kernel_of_the_copy_only(models):
    model = models["IV-6-16"]
    kernel = model.config._attn_implementation
    assert freeze(model).config._attn_implementation == cpu_attention()  # on a CPU: the host's faster kernel
    assert freeze(model, attention="sdpa").config._attn_implementation == "sdpa"
    assert model.config._attn_implementation == kernel
    with pytest.raises(ConfigError, match="attention"):
        freeze(model, attention="flash")


def test_cpu_attention_is_sdpa_only_where_onednn_has_amx(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(deploy, "cpu_flags", lambda: ["avx512f", "avx512_bf16", "amx_bf16"])
    assert cpu_attention() == "sdpa"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # AMX capped off
    assert cpu_attention() == "eager"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert cpu_attention() == "sdpa"
    monkeypatch.setattr(deploy, "cpu_flags", lambda: ["avx2", "avx512f", "avx512_bf16"])
    assert cpu_attention() == "eager"


@pytest.mark.parametrize("runtime", ["eager", "compiled", "onnxruntime", "openvino"])
def test_every_runtime_gives_the_eager_outputs(models, runtime, tmp_path):
    for name in ("dense", "IV-6-16"):
        reference = encoder_runner(models[name], "eager")(_inputs())
        run = encoder_runner(models[name], runtime, "fp32", threads=1, workdir=tmp_path / name)
        for shape in ((2, 16), (3, 24), (2, 16)):  # dynamic axes (onnx), a recompile (compiled, openvino), a reuse
            inputs = _inputs(*shape, seed=1)
            expected = encoder_runner(models[name], "eager")(inputs)
            torch.testing.assert_close(run(inputs), expected, atol=1e-4, rtol=0)
        assert reference.dtype == torch.float32


def test_eager_bf16_runs_a_bf16_copy_and_leaves_the_model_fp32(models):
    inputs = _inputs()
    for name in ("dense", "IV-6-16"):
        expected = encoder_runner(models[name], "eager")(inputs)
        out = encoder_runner(models[name], "eager", "bf16")(inputs)
        assert out.dtype == torch.float32 and 0 < float((out - expected).abs().max()) < TOLERANCE["bf16"]
        assert all(p.dtype == torch.float32 for p in models[name].parameters())
        torch.testing.assert_close(encoder_runner(models[name], "eager")(inputs), expected, atol=0, rtol=0)


@pytest.mark.skipif(not native_bf16(), reason="openvino's bf16 needs a CPU with native bf16")
def test_openvino_bf16_is_near_the_eager_outputs(models):
    inputs = _inputs()
    for name in ("dense", "IV-6-16"):
        out = encoder_runner(models[name], "openvino", "bf16", threads=1)(inputs)
        expected = encoder_runner(models[name], "eager")(inputs)
        assert out.dtype == torch.float32 and float((out - expected).abs().max()) < TOLERANCE["bf16"]


def test_runtime_errors_name_the_fix(models, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="runtime"):
        encoder_runner(models["dense"], "tensorrt")
    with pytest.raises(ConfigError, match="fp32 only"):
        encoder_runner(models["dense"], "onnxruntime", "bf16")
    monkeypatch.setattr(deploy, "native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="native bf16"):
        encoder_runner(models["dense"], "openvino", "bf16", workdir=tmp_path)
    with pytest.raises(ConfigError, match=r"\.onnx"):
        export_onnx(models["dense"], tmp_path / "model.bin")
    with pytest.raises(ConfigError, match=r"\.xml"):
        export_openvino(models["dense"], tmp_path / "model.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_onnx_file_runs_without_tdlib(models, tmp_path):
    path = export_onnx(models["IV-6-16"], tmp_path / "m.onnx")
    inputs = _inputs()
    out = onnx_session(path, 1).run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    expected = encoder_runner(models["IV-6-16"], "eager")(inputs).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    ops = Counter(node.op_type for node in onnx.load(path).graph.node)  # ONNX Runtime's fused kernels, per layer
    assert ops["Attention"] == ops["BiasGelu"] == 2 and not ops["Softmax"]
    assert ops["LayerNormalization"] == 5 and not ops["SkipLayerNormalization"]  # embeddings + 2 per layer, unfused
    onnx_session(path, 1, optimized_path=tmp_path / "ran.onnx")  # and ONNX Runtime does not fuse them again
    ran = Counter(node.op_type for node in onnx.load(tmp_path / "ran.onnx").graph.node)
    assert ran["Attention"] == 2 and ran["LayerNormalization"] == 5 and not ran["SkipLayerNormalization"]
    (tmp_path / "ran.onnx").unlink()
    assert Counter(n.op_type for n in onnx.load(export_onnx(models["IV-6-16"], tmp_path / "u.onnx",
                                                            fuse=False)).graph.node)["Softmax"] == 2


def test_openvino_files_run_without_tdlib(models, tmp_path):
    path = export_openvino(models["IV-6-16"], tmp_path / "m.xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    graph = openvino.Core().read_model(str(path))
    scores = [n for n in graph.get_ordered_ops() if n.get_type_name() == "MatMul" and n.get_attributes()["transpose_b"]]
    assert len(scores) == 2  # each layer's score product reads K heads-first, the transpose of K folded into it
    orders = [list(n.input_value(1).get_node().get_data()) for n in graph.get_ordered_ops()
              if n.get_type_name() == "Transpose"]
    assert [0, 2, 3, 1] not in orders
    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                                  "INFERENCE_NUM_THREADS": 1})
    for shape in ((2, 16), (3, 24)):  # dynamic batch and sequence
        inputs = _inputs(*shape)
        out = compiled({k: v.numpy() for k, v in inputs.items()})["last_hidden_state"]
        np.testing.assert_allclose(out, encoder_runner(models["IV-6-16"], "eager")(inputs).numpy(), atol=1e-4, rtol=0)


def test_ratio_interval_is_the_geometric_mean_with_a_t_interval():
    exact = ratio_interval([3.0, 6.0, 9.0], [1.0, 2.0, 3.0])
    assert exact["speedup"] == pytest.approx(3.0) and exact["low"] == pytest.approx(3.0)
    noisy = ratio_interval([2.0, 4.0, 3.0, 3.3], [1.0, 1.0, 1.0, 1.0])
    assert noisy["low"] < noisy["speedup"] < noisy["high"]
    assert noisy["speedup"] == pytest.approx(math.exp(np.mean(np.log([2.0, 4.0, 3.0, 3.3]))))
    assert math.isnan(ratio_interval([2.0], [1.0])["low"])


def test_interleaved_times_every_runner_every_round():
    runners = {name: (lambda inputs: None) for name in "abc"}
    times = interleaved(runners, {}, threads=1, rounds=3, min_block_s=0.0)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t > 0 for v in times.values() for t in v)


def test_run_runtimes_rows_carry_interval_limit_and_host():
    result = run_runtimes("tiny", [(4, 16)], [(2, 16)], ["eager", "onnxruntime"], threads=1, rounds=2,
                          min_block_s=0.0)
    assert result["host"]["cpu_model"] is not None or result["host"]["isa"] == []
    fact = [r for r in result["rows"] if r["kind"] == "tucker-factorized"]
    assert {(r["runtime"], r["precision"]) for r in fact} >= {("eager", "fp32"), ("onnxruntime", "fp32")}
    for r in fact:
        assert r["low"] <= r["speedup"] <= r["high"] and len(r["ms"]) == 2
        assert r["mac_ratio"] > 1 and r["max_abs_diff"] < TOLERANCE[r["precision"]]
        assert r["fraction_of_mac_limit"] == pytest.approx(r["speedup"] / r["mac_ratio"])


def test_across_processes_pools_each_rows_speedup_over_fresh_processes():
    benchmark = {"geometry": "tiny", "configs": [(4, 16)], "grid": [(2, 16)], "runtimes": ["eager"], "threads": 1,
                 "rounds": 2, "min_block_s": 0.0, "precisions": ["fp32"]}
    result = across_processes(2, **benchmark)
    assert result["processes"] == len(result["runs"]) == 2 and len(result["rows"]) == 2  # dense and IV-4-16
    fact = next(r for r in result["rows"] if r["kind"] == "tucker-factorized")
    per = [next(r for r in run["rows"] if r["kind"] == "tucker-factorized")["speedup"] for run in result["runs"]]
    assert fact["process_speedups"] == per and fact["processes"] == 2 and fact["rounds"] == 2
    assert fact["speedup"] == pytest.approx(math.sqrt(per[0] * per[1]))
    assert fact["low"] <= fact["speedup"] <= fact["high"] and (fact["runtime"], fact["precision"]) == ("eager", "fp32")
    with pytest.raises(ConfigError, match="at least 2 processes"):
        across_processes(1, **benchmark)


def test_host_ceiling_is_each_rounds_dense_floor_over_the_models_below_the_mac_limit():
    result = host_ceiling("tiny", [16], [(2, 16)], threads=1, rounds=2, min_run_time=0.0)
    geom = GEOMETRIES["tiny"]
    assert {r["precision"] for r in result["rows"]} == ({"fp32", "bf16"} if native_bf16() else {"fp32"})
    for row, cell in zip(result["rows"], result["kernels"], strict=True):
        assert (row["precision"], row["batch"], row["seq_len"]) == (cell["precision"], 2, 16)
        for t, dense, model in zip(cell["rounds"], row["dense_floor_ms"], row["floor_ms"], strict=True):
            fixed = geom.n_layers * (t["gelu_ms"] + t["softmax_ms"] + 2 * t["layernorm_ms"])
            gemm = {d: encoder_macs(geom, 16, d)["total"] * 32 / t["gemm_gmac_s"] / 1e6 for d in (None, 16)}
            assert math.isclose(dense, fixed + gemm[None]) and math.isclose(model, fixed + gemm[16])
        assert row["ceiling"] == pytest.approx(ratio_interval(row["dense_floor_ms"], row["floor_ms"])["speedup"])
        # the same fixed cost on both sides keeps the ceiling under the multiply-add limit
        assert 1 < row["ceiling"] < row["mac_limit"] == mac_ratio(geom, 16, 16)


def test_speed_studies_name_the_geometries_they_know():
    for study in (host_ceiling, run_runtimes):
        with pytest.raises(ConfigError, match="unknown geometry 'bert-large'.*'bert-base'"):
            study("bert-large")


def test_c4_rule_reads_the_interval():
    assert c4_verdict({"speedup": 3.0, "low": 2.8, "high": 3.2}) == "reproduced"
    assert c4_verdict({"speedup": 2.8, "low": 2.6, "high": 3.0}) == "within noise of the target"
    assert c4_verdict({"speedup": 2.5, "low": 2.4, "high": 2.69}) == "not reproduced"
    assert c4_verdict({"speedup": 2.7}) == "reproduced"  # a single-pass record: its point value


def test_profiler_ops_fall_in_the_breakdown_categories():
    assert op_category("aten::addmm") == "gemm" and op_category("aten::gelu") == "gelu"
    assert op_category("aten::native_layer_norm") == "layernorm" and op_category("aten::add") == "adds"
    assert op_category("aten::_to_copy") == "copies" and op_category("aten::embedding") == "other"


def test_kernel_rates_give_each_rows_rates_and_the_ceiling_its_non_gemm_ops_allow():
    common = {"geometry": "bert-base", "batch": 8, "seq_len": 128, "precision": "fp32"}
    rows = [{**common, "model": "dense", "kind": "dense", "gemm_ms": 900.0, "attention_ms": 60.0, "total_ms": 1000.0,
             "total_speedup": 1.0},
            {**common, "model": "IV-96-128 factorized", "kind": "tucker-factorized", "rank_dim": 128,
             "gemm_ms": 200.0, "attention_ms": 60.0, "total_ms": 300.0, "total_speedup": 1000 / 300}]
    dense, tiny = kernel_rates(rows)
    assert dense["ceiling"] == 1.0 and dense["mac_limit"] == 1.0
    assert math.isclose(tiny["ceiling"], 1000 / (1000 - 900 + 200))  # the non-GEMM 100 ms stay
    assert math.isclose(tiny["mac_limit"], mac_ratio(BERT_BASE, 128, 128))
    assert math.isclose(tiny["ceiling_of_limit"], tiny["ceiling"] / tiny["mac_limit"])
    macs = encoder_macs(BERT_BASE, 128, 128)
    assert math.isclose(tiny["gemm_gmac_s"], macs["linear"] * 8 * 128 / 200.0 / 1e6)
    assert math.isclose(tiny["attention_gmac_s"], dense["attention_gmac_s"])  # the same attention in both models


RETAIN_PROBE = """
import resource, torch
from transformers import BertConfig, BertModel
from tdlib.core.memory import retain_freed_memory
torch.manual_seed(0)
model = BertModel(BertConfig(hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=1024)).eval()
ids = torch.randint(0, 1000, (8, 128))
def faults():
    with torch.inference_mode():
        for _ in range(2):
            model(input_ids=ids)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            model(input_ids=ids)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
default = faults()
print(default, retain_freed_memory(), faults())
"""


def _glibc() -> bool:
    try:
        return "glibc" in os.confstr("CS_GNU_LIBC_VERSION").lower()
    except (AttributeError, ValueError, OSError):
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc's mallopt")
def test_retained_memory_stops_the_forwards_page_faults():
    """A fresh process: glibc's defaults fault a forward's activations back in page by page (counted, not timed);
    with the freed memory retained the next forwards reuse it."""
    out = subprocess.run([sys.executable, "-c", RETAIN_PROBE], capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL, check=True)
    default, applied, retained = out.stdout.split()
    assert applied == "True"
    assert float(default) > 500  # 8 x 128 x 1,024 floats (4 MB) per FFN activation: pages faulted in per forward
    assert float(retained) < float(default) / 4
