"""Data-aware inits (tdlib.core.calibrate, tdlib.core.fitting): objectives with a known optimum, numerics guards, the
checkpoint round trip, the calibration cache."""

from __future__ import annotations

import pytest
import torch

from tdlib import compress, from_pretrained
from tdlib.core.calibrate import Calibration, calibrate
from tdlib.core.errors import ConfigError, DataError, RankError
from tdlib.core.fitting import BlockwiseFit, activation_error, sqrt_and_inverse, whitened_per_matrix, whitened_tucker
from tdlib.core.functional import hooi, tucker_to_tensor
from tdlib.core.stacking import stack_weights


def weighted_objective(approx, tensor, gram):
    diff = (tensor - approx).double()
    return float(torch.einsum("nab,ac,ncb->", diff, gram.double(), diff))


def low_rank_tensor(n=8, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    core = torch.randn(4, 6, 6, generator=gen)
    factors = [torch.randn(n, 4, generator=gen), torch.randn(d, 6, generator=gen), torch.randn(d, 6, generator=gen)]
    return tucker_to_tensor(core, factors) + 0.3 * torch.randn(n, d, d, generator=gen)


def compose(f):
    return torch.einsum("ip,npq,jq->nij", f["U"], torch.einsum("nl,lpq->npq", f["P"], f["C"]), f["V"])


def test_whitened_tucker_beats_plain_tucker_on_its_objective_and_equals_it_for_isotropic_inputs():
    tensor = low_rank_tensor()
    n, d, _ = tensor.shape
    core, factors, _ = hooi(tensor, (3, 4, 4))
    plain = tucker_to_tensor(core, factors)
    # every map reads one strongly anisotropic input: whitening is then the exact minimiser of the weighted loss
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200, d, generator=gen) * torch.logspace(0, -2, d)[None, :]
    gram = (x.T @ x).double()
    whitened = compose(whitened_tucker(tensor, gram.expand(n, d, d), 3, 4))
    assert weighted_objective(whitened, tensor, gram) < 0.8 * weighted_objective(plain, tensor, gram)
    assert activation_error(whitened, tensor, gram.expand(n, d, d)) < activation_error(plain, tensor,
                                                                                       gram.expand(n, d, d))
    # isotropic inputs: the same fit as the paper's Tucker, and the weighted error is the weight error
    iso = (3.0 * torch.eye(d, dtype=torch.float64)).expand(n, d, d)
    same = compose(whitened_tucker(tensor, iso, 3, 4))
    assert torch.allclose(same, plain, atol=1e-4 * float(tensor.abs().max()))
    rel = float((tensor - plain).norm() / tensor.norm())
    assert activation_error(plain, tensor, iso) == pytest.approx(rel, rel=1e-6)


def test_whitened_per_matrix_svd_is_the_best_rank_r_fit_in_each_input_metric():
    tensor = low_rank_tensor(n=3, d=10)
    gen = torch.Generator().manual_seed(2)
    grams = []
    for _ in range(3):
        x = torch.randn(100, 10, generator=gen) * torch.logspace(0, -1.5, 10)[None, :]
        grams.append(x.T @ x)
    grams = torch.stack(grams).double()
    u, s, vh = torch.linalg.svd(tensor, full_matrices=False)
    plain = (u[..., :3] * s[:, None, :3]) @ vh[:, :3]
    white = whitened_per_matrix(tensor, grams, 3)
    for i in range(3):
        assert weighted_objective(white[i:i + 1], tensor[i:i + 1], grams[i]) < weighted_objective(
            plain[i:i + 1], tensor[i:i + 1], grams[i])
        assert torch.linalg.matrix_rank(white[i]) == 3


def test_ill_conditioned_grams_are_damped_and_empty_ones_are_one_clear_error():
    v = torch.randn(8, 1, dtype=torch.float64)
    gram = v @ v.T  # rank 1: singular
    root, inv_root = sqrt_and_inverse(gram)
    assert torch.isfinite(root).all() and torch.isfinite(inv_root).all()
    ridge = 1e-4 * float(gram.trace()) / 8 * torch.eye(8, dtype=torch.float64)
    assert torch.allclose(root @ root, gram + ridge, atol=1e-8)
    assert torch.allclose(root @ inv_root, torch.eye(8, dtype=torch.float64), atol=1e-6)
    with pytest.raises(DataError, match="never reached"):
        sqrt_and_inverse(torch.zeros(8, 8))
    with pytest.raises(ConfigError, match="damping"):
        sqrt_and_inverse(v @ v.T, damping=0.0)
    with pytest.raises(ConfigError, match="positive integer"):
        BlockwiseFit(steps=0)


def tiny_text(n=8, t=16, seed=0, vocab=120):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, t), generator=gen)
    mask = torch.ones(n, t, dtype=torch.long)
    mask[::2, t // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_calibration_collects_each_maps_input_gram_and_every_layers_states(tiny_bert):
    text = tiny_text()
    cal = calibrate(tiny_bert, text, progress=False)
    d = tiny_bert.config.hidden_size
    k = tiny_bert.config.intermediate_size // d
    assert cal.hidden.shape == (3, 8, 16, d) and cal.grams.shape == (2 * (4 + 2 * k), d, d)
    valid = text["attention_mask"].bool()
    for layer in range(2):
        x = cal.hidden[layer][valid].double()
        first = layer * (4 + 2 * k)
        for role in range(3):  # Q, K and V read the layer's input
            assert torch.allclose(cal.grams[first + role], x.T @ x, rtol=1e-5, atol=1e-6)
    too_few = {"input_ids": text["input_ids"][:1, :4], "attention_mask": text["attention_mask"][:1, :4]}
    with pytest.raises(DataError, match="more sequences"):
        calibrate(tiny_bert, too_few, progress=False)


def test_blockwise_fit_keeps_an_exact_student_exact_and_improves_a_truncated_one(tiny_bert):
    cal = calibrate(tiny_bert, tiny_text(), progress=False)
    n = stack_weights(tiny_bert).shape[0]
    exact = compress(tiny_bert, n, tiny_bert.config.hidden_size, init="local", calibration=cal,
                     fit=BlockwiseFit(steps=1, lr=1e-6))
    assert exact.tdlib_fit["initial_loss"] < 1e-6  # full rank: Tucker is exact, the block-wise loss is zero
    small = compress(tiny_bert, 4, 8, init="local", calibration=cal, fit=BlockwiseFit(steps=40, lr=1e-2))
    report = small.tdlib_fit
    assert sum(report["loss"][-5:]) / 5 < 0.8 * report["initial_loss"]
    assert small.config.tdlib["init"] == "local"


def test_data_aware_inits_need_a_calibration_and_tucker_is_the_papers_init(tiny_bert):
    with pytest.raises(ConfigError, match="calibration"):
        compress(tiny_bert, 4, 8, init="local")
    with pytest.raises(ConfigError, match="unknown init"):
        compress(tiny_bert, 4, 8, init="svd-llm")
    assert compress(tiny_bert, 4, 8, init="tucker").config.tdlib["init"] == "pretrained"
    cal = calibrate(tiny_bert, tiny_text(), ops="san", progress=False)
    with pytest.raises(ConfigError, match="recalibrate"):
        compress(tiny_bert, 4, 8, ops="san_ffn", init="whitened", calibration=cal)


def test_a_data_aware_student_round_trips_through_a_checkpoint(tiny_bert, batch, tmp_path):
    cal = calibrate(tiny_bert, tiny_text(), progress=False)
    for init, fit in (("whitened", None), ("local", BlockwiseFit(steps=3, lr=1e-2))):
        student = compress(tiny_bert, 4, 8, init=init, calibration=cal, fit=fit).eval()
        student.save_pretrained(tmp_path / init)
        loaded = from_pretrained(tmp_path / init)
        assert loaded.config.tdlib["init"] == init
        with torch.no_grad():
            a = student(**batch).last_hidden_state
            b = loaded(**batch).last_hidden_state
        assert torch.allclose(a, b, atol=1e-5)
        assert sum(p.numel() for p in loaded.parameters()) == sum(
            p.numel() for p in compress(tiny_bert, 4, 8).parameters())


def test_calibration_cache_round_trips_and_refuses_foreign_or_corrupt_files(tiny_bert, tmp_path):
    cal = calibrate(tiny_bert, tiny_text(), identity={"teacher": "tiny"}, progress=False)
    cal.save(tmp_path / "c")
    back = Calibration.load(tmp_path / "c", {"teacher": "tiny"})
    assert back is not None and torch.equal(back.grams, cal.grams) and torch.equal(back.hidden, cal.hidden)
    assert Calibration.load(tmp_path / "c", {"teacher": "other"}) is None
    data = (tmp_path / "c" / "tensors.safetensors").read_bytes()
    (tmp_path / "c" / "tensors.safetensors").write_bytes(data[:-8] + b"\0" * 8)
    assert Calibration.load(tmp_path / "c", {"teacher": "tiny"}) is None


def test_the_study_measures_the_teacher_as_exact_and_the_peer_at_the_tucker_budget(tiny_bert):
    from tdlib.core.decompose import Tucker
    from tdlib.studies.inits import build, hidden_errors, per_matrix_rank

    text = tiny_text()
    rows = {k: v for k, v in text.items()}
    assert hidden_errors(tiny_bert, tiny_bert, rows) == [0.0, 0.0]
    n, d = stack_weights(tiny_bert).shape[:2]
    budget = Tucker.param_count((n, d, d), 8, 16)
    r = per_matrix_rank(n, d, budget)
    assert n * (2 * d * r + r * r) <= budget < n * (2 * d * (r + 1) + (r + 1) ** 2)
    with pytest.raises(RankError, match="below method II's smallest"):
        per_matrix_rank(n, d, Tucker.param_count((n, d, d), 4, 8))
    cal = calibrate(tiny_bert, text, progress=False)
    for peer in ("II", "II-whitened"):
        model, approx, report = build(tiny_bert, 8, 16, peer, cal)
        assert report["rank"] == r and report["params"] <= budget
        assert torch.allclose(stack_weights(model), approx, atol=1e-5)
        assert all(torch.linalg.matrix_rank(a) <= r for a in approx)


def test_a_checkpoint_saved_before_inits_were_recorded_loads_with_an_unknown_init(tiny_bert, tmp_path):
    import json

    compress(tiny_bert, 4, 8).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["tdlib"].pop("init") == "pretrained"
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert from_pretrained(tmp_path).config.tdlib.get("init") is None
    config["tdlib"]["init"] = "svd-llm"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="unknown init"):
        from_pretrained(tmp_path)
