import json

import pytest
import torch
from conftest import tiny_config
from transformers import BertModel

from tdlib import (
    BankLinear,
    CheckpointError,
    ConfigError,
    RankError,
    UnsupportedModelError,
    compress,
    count_params,
    from_pretrained,
    reconstruct_dense,
    set_implementation,
)
from tdlib.core.layers import bank_of


def hidden(model, batch):
    with torch.no_grad():
        return model(**batch).last_hidden_state


def test_factorized_equals_reconstructed(tiny_bert, batch):
    model = compress(tiny_bert, rank_layer=5, rank_dim=12).eval()
    fact = hidden(model, batch)
    set_implementation(model, "reconstructed")
    torch.testing.assert_close(hidden(model, batch), fact, rtol=1e-4, atol=1e-5)


def test_training_mode_paths_agree_too(tiny_bert, batch):
    model = compress(tiny_bert, 5, 12).train()
    fact = model(**batch).last_hidden_state
    set_implementation(model, "reconstructed")
    torch.testing.assert_close(model(**batch).last_hidden_state, fact, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ops", ["san", "ffn", "san_ffn"])
def test_full_ranks_reproduce_the_dense_model(tiny_bert, batch, ops):
    n = {"san": 8, "ffn": 16, "san_ffn": 24}[ops]
    model = compress(tiny_bert, rank_layer=n, rank_dim=32, ops=ops).eval()
    torch.testing.assert_close(hidden(model, batch), hidden(tiny_bert, batch), rtol=1e-4, atol=1e-4)


def test_full_rank_minilm_matches_teacher(minilm):
    ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 102]])
    model = compress(minilm, 72, 384).eval()
    torch.testing.assert_close(hidden(model, {"input_ids": ids}), hidden(minilm, {"input_ids": ids}),
                               rtol=1e-3, atol=1e-3)


def test_compress_keeps_the_teacher_untouched(tiny_bert):
    before = {k: v.clone() for k, v in tiny_bert.state_dict().items()}
    compress(tiny_bert, 3, 8)
    assert all(torch.equal(before[k], v) for k, v in tiny_bert.state_dict().items())
    assert not any(isinstance(m, BankLinear) for m in tiny_bert.modules())


def test_biases_layernorms_embeddings_are_the_originals(tiny_bert):
    model = compress(tiny_bert, 3, 8)
    sd, ref = model.state_dict(), tiny_bert.state_dict()
    kept = [k for k in ref if not k.endswith(".weight") or "LayerNorm" in k or "embeddings" in k or "pooler" in k]
    assert kept and all(torch.equal(sd[k], ref[k]) for k in kept)


def test_no_rebuild_per_forward_in_eval(tiny_bert, batch):
    model = compress(tiny_bert, 5, 12).eval()
    bank = bank_of(model)
    linears = [m for m in model.modules() if isinstance(m, BankLinear)]
    hidden(model, batch)
    builds = (bank.n_builds, sum(m.n_builds for m in linears))
    assert builds == (1, len(linears))
    for _ in range(3):
        hidden(model, batch)
    assert (bank.n_builds, sum(m.n_builds for m in linears)) == builds


def test_cache_is_dropped_when_parameters_change(tiny_bert, batch):
    model = compress(tiny_bert, 5, 12)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    model(**batch).last_hidden_state.pow(2).mean().backward()
    model.eval()
    before = hidden(model, batch)
    opt.step()  # in-place update, while in eval mode
    after = hidden(model, batch)
    assert not torch.allclose(before, after)
    set_implementation(model, "reconstructed")
    torch.testing.assert_close(hidden(model, batch), after, rtol=1e-4, atol=1e-5)


def test_training_rebuilds_every_step_and_reaches_every_factor(tiny_bert, batch):
    model = compress(tiny_bert, 5, 12).train()
    model(**batch).last_hidden_state.sum().backward()
    bank = bank_of(model)
    for name in ("U", "V", "C", "P"):
        assert getattr(bank, name).grad is not None and getattr(bank, name).grad.abs().sum() > 0
    assert bank.n_builds == 0  # training never touches the cache


def test_one_mixing_per_training_forward_gives_the_per_map_gradients(tiny_bert, batch, monkeypatch):
    model = compress(tiny_bert, 5, 12).train()
    bank = bank_of(model)
    calls = []
    einsum = torch.einsum
    monkeypatch.setattr(torch, "einsum", lambda eq, *ops: calls.append(eq) or einsum(eq, *ops))

    def grads():
        model.zero_grad()
        for _ in range(2):  # two forwards, then backwards: gradient accumulation, each pass its own graph
            loss = model(**batch).last_hidden_state.square().mean()
            loss.backward()
        return {k: v.grad.clone() for k, v in bank.named_parameters()}, loss.detach()

    shared, loss = grads()
    assert calls.count("nl,lpq->npq") == 2 and bank._pass is None  # once per encoder forward, dropped after
    monkeypatch.setattr(type(bank), "begin_pass", lambda self: None)  # each map mixes its own rows
    per_map, loss_ref = grads()
    assert calls.count("kl,lpq->kpq") > 2
    torch.testing.assert_close(loss, loss_ref)
    for name in per_map:
        torch.testing.assert_close(shared[name], per_map[name], rtol=1e-4, atol=1e-6)


def test_qkv_share_one_projection_per_layer(tiny_bert, batch):
    model = compress(tiny_bert, 5, 12).eval()
    bank = bank_of(model)
    hidden(model, batch)
    # per layer: 1 (Q/K/V) + 1 (attention output) + 1 (FFN up) = 3 projections; FFN down reads x through U M
    assert bank.n_projections == 3 * 2
    assert [m.form for m in model.modules() if isinstance(m, BankLinear)].count("fold_in") == 2
    assert not bank._shared  # nothing left dangling after the forward


def test_classifier_head_and_random_init(tiny_classifier, batch):
    model = compress(tiny_classifier, 4, 8, init="random", seed=3)
    logits = model(**batch).logits
    assert logits.shape == (3, 3)
    assert model.tdlib_decomposition is None
    w = bank_of(model)
    weights = torch.einsum("ip,npq,jq->nij", w.U, torch.einsum("nl,lpq->npq", w.P, w.C), w.V)
    assert 0.005 < weights.std().item() < 0.05  # BERT's init scale, not zeros or blow-up


def test_save_and_load_round_trip(tmp_path, tiny_classifier, batch):
    model = compress(tiny_classifier, 4, 8, ops="san").eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    cfg = json.loads((tmp_path / "config.json").read_text())["tdlib"]
    assert (cfg["rank_layer"], cfg["rank_dim"], cfg["ops"], cfg["base_model_type"]) == (4, 8, "san", "bert")
    loaded = from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)
    assert count_params(loaded) == count_params(model)


def test_load_errors_are_clear(tmp_path, tiny_bert):
    with pytest.raises(CheckpointError, match="no config.json"):
        from_pretrained(tmp_path / "missing")
    tiny_bert.save_pretrained(tmp_path / "dense")
    with pytest.raises(CheckpointError, match="dense model"):
        from_pretrained(tmp_path / "dense")
    good = tmp_path / "good"
    compress(tiny_bert, 3, 8).save_pretrained(good)
    (good / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt"):
        from_pretrained(good)
    (good / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="lacks model.safetensors"):
        from_pretrained(good)


def test_checkpoint_from_other_ranks_is_rejected(tmp_path, tiny_bert):
    compress(tiny_bert, 3, 8).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["tdlib"]["rank_dim"] = 16
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match its config"):
        from_pretrained(tmp_path)


def test_config_with_wrong_keys_is_rejected(tmp_path, tiny_bert):
    compress(tiny_bert, 3, 8).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["tdlib"]["rank"] = cfg["tdlib"].pop("rank_dim")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"unknown keys \['rank'\] / lacks \['rank_dim'\]"):
        from_pretrained(tmp_path)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"rank_layer": 0, "rank_dim": 4}, RankError, "rank_layer must be a positive integer"),
    ({"rank_layer": 3, "rank_dim": "8"}, RankError, "rank_dim must be a positive integer"),
    ({"rank_layer": 3, "rank_dim": 33}, RankError, "exceeds the hidden size"),
    ({"rank_layer": 25, "rank_dim": 4}, RankError, "exceeds the number of san_ffn matrices"),
    ({"rank_layer": 9, "rank_dim": 4, "ops": "san"}, RankError, "exceeds the number of san matrices"),
    ({"rank_layer": 3, "rank_dim": 4, "ops": "attn"}, ConfigError, "unknown ops"),
    ({"rank_layer": 3, "rank_dim": 4, "implementation": "dense"}, ConfigError, "unknown implementation"),
    ({"rank_layer": 3, "rank_dim": 4, "init": "zeros"}, ConfigError, "unknown init"),
])
def test_bad_arguments_get_one_clear_error(tiny_bert, kwargs, error, match):
    with pytest.raises(error, match=match):
        compress(tiny_bert, **kwargs)


def test_bad_models_are_rejected():
    with pytest.raises(UnsupportedModelError, match="no BERT-style encoder"):
        compress(torch.nn.Linear(3, 3), 1, 1)
    with pytest.raises(UnsupportedModelError, match="not a multiple"):
        compress(BertModel(tiny_config(intermediate_size=100)), 2, 4)
    compress(BertModel(tiny_config(intermediate_size=100)), 2, 4, ops="san")  # attention only is fine


def test_compressing_twice_is_rejected(tiny_bert):
    with pytest.raises(ConfigError, match="already compressed"):
        compress(compress(tiny_bert, 3, 8), 3, 8)


def test_count_params_and_ratio(tiny_bert, minilm):
    dense = count_params(tiny_bert)
    assert dense.ratio == 1.0 and dense.decomposed == 24 * 32 * 32
    comp = count_params(compress(tiny_bert, 5, 12))
    assert comp.decomposed == 2 * 32 * 12 + 5 * 144 + 24 * 5
    assert comp.encoder_bias_ln == dense.encoder_bias_ln and comp.embeddings == dense.embeddings
    assert comp.ratio == pytest.approx(24 * 1024 / comp.decomposed)
    counts = count_params(compress(minilm, 36, 192))
    assert counts.decomposed == 1_477_152 and round(counts.ratio, 1) == 7.2


def test_reconstruct_dense_gives_a_plain_bert(tiny_bert, batch):
    model = compress(tiny_bert, 5, 12).eval()
    dense = reconstruct_dense(model)
    assert not any(isinstance(m, BankLinear) for m in dense.modules())
    torch.testing.assert_close(hidden(dense, batch), hidden(model, batch), rtol=1e-4, atol=1e-5)


def test_fused_qkv_in_eval_matches_the_per_map_path(tiny_bert, batch):
    model = compress(tiny_bert, 5, 12).eval()
    fused = hidden(model, batch)
    assert bank_of(model)._fused and not bank_of(model)._fused_out  # built, and nothing left pending
    bank_of(model)._groups.clear()  # the unfused eval path
    torch.testing.assert_close(hidden(model, batch), fused, rtol=1e-5, atol=1e-6)


def test_fused_cache_follows_bias_updates(tiny_bert, batch):
    model = compress(tiny_bert, 5, 12).eval()
    before = hidden(model, batch)
    with torch.no_grad():
        model.encoder.layer[0].attention.self.value.bias.add_(1.0)  # (a key-bias shift is softmax-invariant)
    after = hidden(model, batch)
    assert not torch.allclose(before, after)
    set_implementation(model, "reconstructed")
    torch.testing.assert_close(hidden(model, batch), after, rtol=1e-4, atol=1e-5)


def test_set_implementation_on_a_dense_model_is_one_clear_error(tiny_bert):
    from tdlib.core.errors import ConfigError

    with pytest.raises(ConfigError, match="BertModel is not compressed by tdlib.*compress it first"):
        set_implementation(tiny_bert, "factorized")


def test_zero_init_starts_every_map_at_zero_and_still_trains(tiny_bert, batch):
    """The protocol-1 floor: W_i = 0 at the start (embeddings, biases, LayerNorms alone), a non-zero gradient
    (given non-zero biases, as a pre-trained model has: with zero biases and zero maps every gradient is zero)."""
    from tdlib.core.layers import bank_of

    with torch.no_grad():
        for name, p in tiny_bert.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    zero = compress(tiny_bert, 4, 8, init="zero")
    bank = bank_of(zero)
    assert float(bank.C.abs().max()) == 0.0 and float(bank.U.abs().max()) > 0
    zero.train()
    zero(**batch).last_hidden_state.pow(2).mean().backward()
    assert float(bank.C.grad.abs().max()) > 0


def test_eval_caches_built_under_bf16_autocast_stay_full_precision(tiny_bert, batch):
    model = compress(tiny_bert, 5, 12).eval()
    with torch.no_grad():
        expected = compress(tiny_bert, 5, 12).eval()(**batch).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the first forward (and so the cache) under autocast
            model(**batch)
        torch.testing.assert_close(model(**batch).last_hidden_state, expected)  # then fp32: the same numbers
