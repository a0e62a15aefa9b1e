import pytest

from tdlib import BERT_BASE, MINILM, RankError, Tucker, encoder_macs, mac_ratio, pick_ranks


def test_dense_macs_per_token():
    macs = encoder_macs(BERT_BASE, seq_len=128)
    assert macs["linear"] == 12 * 12 * 768 * 768
    assert macs["attention"] == 12 * 2 * 128 * 768


def test_mac_ratio_grows_as_rank_dim_shrinks():
    ratios = [mac_ratio(BERT_BASE, d) for d in (384, 256, 128, 64)]
    assert ratios == sorted(ratios)
    assert 3.5 < mac_ratio(BERT_BASE, 128) < 4.5  # the ~1/48 model's limit on BERT-base
    assert mac_ratio(BERT_BASE, 768) < 1  # full rank costs more than dense


def test_pick_ranks_meets_the_budget():
    choices = pick_ranks(MINILM, ratio=7.1)
    budget = int(72 * 384 * 384 / 7.1)
    assert all(c.n_params <= budget for c in choices)
    assert all(c.n_params == Tucker.param_count((72, 384, 384), c.rank_layer, c.rank_dim) for c in choices)
    best = max(choices, key=lambda c: c.n_params)
    assert best.n_params > 0.97 * budget
    d192 = [c for c in choices if c.rank_dim == 192]
    assert d192 and d192[0].rank_layer == 36


def test_pick_ranks_errors():
    with pytest.raises(RankError, match="exactly one"):
        pick_ranks(MINILM)
    with pytest.raises(RankError, match="ratio must be > 1"):
        pick_ranks(MINILM, ratio=0.5)
    with pytest.raises(RankError, match="no Tucker ranks fit"):
        pick_ranks(MINILM, budget=100)


def test_a_ratio_too_high_names_the_ratio_and_the_limit():
    with pytest.raises(RankError, match=r"no Tucker ranks fit ratio 1e\+09 \(a budget of 0 parameters\).* a ratio of "
                                        r"at most [0-9.]+; ask for a smaller ratio"):
        pick_ranks(MINILM, ratio=1e9)
