"""Benchmark machinery: MAC counting, peers, records. No timing assertions (speed is measured, not tested)."""

import json

import pytest
import torch

from tdlib import compress
from tdlib.cli import main
from tdlib.core.layers import LowRankLinear
from tdlib.core.ranks import encoder_macs
from tdlib.studies.speed import GEOMETRIES, count_macs, dense_model, low_rank_peer, run_speed, time_tucker, tltorch_peer


def _inputs(batch=2, seq=16):
    ids = torch.randint(1000, 30000, (batch, seq), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.fixture(scope="module")
def tiny_dense():
    return dense_model("tiny")


def test_counted_macs_match_the_analytic_model(tiny_dense):
    geom, inputs = GEOMETRIES["tiny"], _inputs()
    tokens = 2 * 16
    pooler = 2 * 64 * 64  # the counter also sees the pooler (2 sequences)
    assert count_macs(tiny_dense, inputs) - pooler == encoder_macs(geom, 16)["total"] * tokens
    for d in (8, 24):
        model = compress(tiny_dense, 6, d, init="random").eval()
        assert count_macs(model, inputs) - pooler == encoder_macs(geom, 16, d)["total"] * tokens


def test_low_rank_linear_is_the_blockwise_svd():
    torch.manual_seed(0)
    for a, b in ((1, 1), (1, 4), (4, 1)):
        lin = torch.nn.Linear(16 * a, 16 * b)
        full = LowRankLinear.from_linear(lin, a, b, 16, 16)
        x = torch.randn(3, 5, 16 * a)
        torch.testing.assert_close(full(x), lin(x), rtol=1e-4, atol=1e-4)
        low = LowRankLinear.from_linear(lin, a, b, 16, 4)
        assert sum(p.numel() for n, p in low.named_parameters() if n != "bias") == a * b * 2 * 16 * 4


def test_peers_replace_every_map_at_the_budget(tiny_dense):
    budget = 20_000
    for peer in (low_rank_peer(tiny_dense, budget), tltorch_peer(tiny_dense, budget)):
        out = peer(**_inputs()).last_hidden_state
        assert out.shape == (2, 16, 64) and torch.isfinite(out).all()
        from tdlib.studies.speed import decomposed_params

        assert 0.5 * budget < decomposed_params(peer) < 1.5 * budget


def test_run_speed_rows_are_complete(tiny_dense):
    result = run_speed("tiny", configs=[(6, 16)], grid=[(1, 8)], min_run_time=0.01, memory=False)
    names = [r["model"] for r in result["rows"]]
    assert names == ["dense", "IV-6-16 factorized", "IV-6-16 reconstructed", "IV-6-16 II-lowrank peer",
                     "IV-6-16 tltorch peer"]
    for row in result["rows"]:
        assert row["median_ms"] > 0 and row["macs"] > 0
        assert row["fraction_of_mac_limit"] == pytest.approx(row["speedup"] / row["mac_ratio"])
    fact = result["rows"][1]
    assert fact["mac_ratio"] == pytest.approx(fact["mac_ratio_analytic"], rel=0.02)


def test_a_forward_slower_than_min_run_time_is_still_timed_several_times():
    """A speed-up is a ratio of two medians: a slow model (BERT-base at 8 x 128) must not be one sample."""
    import time

    from tdlib.studies.speed import time_forward

    class Slow(torch.nn.Module):
        def forward(self, **inputs):
            time.sleep(0.03)

    timing = time_forward(Slow(), {}, threads=1, min_run_time=0.001, min_runs=4)
    assert timing["runs"] >= 4 and timing["median_ms"] > 0


def test_memory_probe_runs_in_a_fresh_process():
    from tdlib.studies.speed import peak_forward_memory_mb

    mb = peak_forward_memory_mb("tiny", "IV-6-16 factorized", 2, 16, config=(6, 16))
    assert mb is not None and mb >= 0
    peer = peak_forward_memory_mb("tiny", "IV-6-16 II-lowrank peer", 2, 16, config=(6, 16), peers=True)
    assert peer is not None and peer >= 0


def test_time_tucker_reports_fit():
    out = time_tucker((12, 16, 16), 4, 6)
    assert out["seconds"] > 0 and 0 < out["rel_error"] < 1 and out["sweeps"] >= 1


def test_bench_cli_writes_a_record_with_provenance(tmp_path, capsys):
    out = tmp_path / "tucker.json"
    assert main(["bench", "tucker", "--shape", "12x16x16", "--rank-layer", "4", "--rank-dim", "6",
                 "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["params"]["shape"] == [12, 16, 16]
    prov = record["provenance"]
    assert prov["seed"] == 0 and prov["packages"]["torch"].startswith("2.13") and "sha" in prov["git"]
    assert main(["bench", "speed", "--geometry", "nope"]) == 2
    assert main(["bench", "speed", "--grid", "8by128"]) == 2


def test_bf16_column_where_native_and_skipped_where_not(monkeypatch):
    from tdlib.studies import speed

    monkeypatch.setattr(speed, "native_bf16", lambda device="cpu": False)
    result = run_speed("tiny", configs=[(6, 16)], grid=[(1, 8)], min_run_time=0.01, peers=False, memory=False)
    assert result["bf16"].startswith("skipped: this CPU has no native bf16")
    assert all("bf16_speedup" not in r for r in result["rows"])
    monkeypatch.setattr(speed, "native_bf16", lambda device="cpu": True)  # emulated here: tiny shapes only
    result = run_speed("tiny", configs=[(6, 16)], grid=[(1, 8)], min_run_time=0.01, peers=False, memory=False)
    timed = {r["model"]: r for r in result["rows"] if "bf16_speedup" in r}
    assert result["bf16"] == "measured" and set(timed) == {"dense", "IV-6-16 factorized"}
    assert timed["dense"]["bf16_speedup"] == 1.0 and timed["IV-6-16 factorized"]["bf16_median_ms"] > 0


def test_padded_batches_look_like_dynamic_padding():
    from tdlib.studies.train_speed import padded, random_batch

    batch = padded(random_batch(8, 32, 2000, seed=0), seed=0)
    mask, ids = batch["attention_mask"], batch["input_ids"]
    lengths = mask.sum(1)
    assert lengths[0] == 32 and bool((lengths >= 8).all()) and len(set(lengths.tolist())) > 1
    assert bool((mask == (torch.arange(32)[None] < lengths[:, None]).long()).all())  # right padding
    assert bool((ids[mask == 0] == 0).all())


def test_train_bench_measures_each_stage_the_ablation_and_parity(monkeypatch):
    from conftest import tiny_config
    from transformers import BertForSequenceClassification, BertModel

    from tdlib.studies import train_speed as bench_train

    monkeypatch.setattr(bench_train, "matmul_rate", lambda dtype, threads, **kw: 1e10)  # measured in real runs
    torch.manual_seed(0)
    teacher = BertModel(tiny_config(vocab_size=2000)).eval()
    task = BertForSequenceClassification(tiny_config(vocab_size=2000, num_labels=2))
    student = BertModel(tiny_config(vocab_size=2000, num_hidden_layers=1))
    out = bench_train.run_train_bench(teacher, task, {"s": student}, {"precision": "fp32", "dropout": False,
                                      "train_word_embeddings": False}, threads=1, batch=4, seq_len=16,
                                      task_seq_len=16, min_run_time=0.01, parity_steps=2, progress=False)
    assert {(r["setting"], r["stage"]) for r in out["rows"]} >= {("paper recipe", "finetune"), ("profile", "general")}
    paper = [r for r in out["rows"] if r["setting"] == "paper recipe"]
    assert all(r["attention"] == "sdpa" for r in paper)
    assert all(r["attention"] == "eager" for r in out["rows"] if r["setting"] == "profile")  # auto, on a CPU
    # each stage's settings are timed in the same interleaved rounds; the others carry a speed-up with its interval
    assert {len(r["ms"]) for r in out["rows"]} == {5}
    for r in out["rows"]:
        assert ("speedup" in r) == (r["setting"] != "paper recipe")
        if "speedup" in r:
            assert r["low"] <= r["speedup"] <= r["high"] and r["rounds"] == 5
    assert {r["setting"] for r in out["rows"] if r["stage"] == "general"} == {
        "paper recipe", "profile", "profile, teacher targets cached"}
    changes = {a["change"]: a for a in out["ablation"]}
    assert changes["task stage 1, padded batch: SDPA"]["attention"] == "sdpa"
    assert changes["+ eager attention (padded batch)"]["attention"] == "eager"
    assert all(a["step_ms"] > 0 for a in changes.values() if "step_ms" in a)
    stage2 = [a for a in out["ablation"] if a.get("stage") == "task stage 2"]
    assert [a["change"] for a in stage2] == ["task stage 2 (s, padded batch): teacher forward every step",
                                             "task stage 2 (s, padded batch): + teacher logits from the file"]
    # the teacher's forward is counted in the first and not in the second
    assert stage2[0]["gflop_per_step"] > stage2[1]["gflop_per_step"] > 0
    assert len(out["parity"]["fp32"]) == 2
