import pytest
import torch

from tdlib import CP, ConfigError, PerMatrix, RankError, Raw, SharedFactors, TensorTrain, Tucker, decompose, make

BERT = (144, 768, 768)
MINILM = (72, 384, 384)


@pytest.mark.parametrize("shape,l,d,expected", [
    (BERT, 72, 384, 11_217_024), (BERT, 36, 256, 2_757_696), (BERT, 36, 128, 791_616), (BERT, 96, 128, 1_783_296),
    (MINILM, 36, 192, 1_477_152), (MINILM, 16, 96, 222_336),
])
def test_worked_parameter_counts_of_paper(shape, l, d, expected):
    assert Tucker.param_count(shape, rank_layer=l, rank_dim=d) == expected


def test_method_formulas():
    n, D = 144, 768
    assert Raw.param_count(BERT) == 84_934_656
    assert PerMatrix.param_count(BERT, rank_dim=64) == n * (2 * D * 64 + 64**2)
    assert SharedFactors.param_count(BERT, rank_dim=384) == 2 * D * 384 + n * 384**2
    assert CP.param_count(BERT, rank=10) == 10 * (n + 2 * D)
    assert TensorTrain.param_count(BERT, rank1=5, rank2=7) == n * 5 + 5 * D * 7 + 7 * D
    assert TensorTrain.param_count(BERT, rank1=5, rank2=7, matrix_mode="middle") == D * 5 + 5 * n * 7 + 7 * D
    # III is IV with l = n (but without the n x n mixing matrix)
    assert Tucker.param_count(BERT, rank_layer=n, rank_dim=64) - n * n == SharedFactors.param_count(BERT, rank_dim=64)


@pytest.fixture(scope="module")
def low_rank_tensor():
    """A (12, 16, 16) tensor of exact multilinear rank (4, 6, 6) plus a little noise."""
    gen = torch.Generator().manual_seed(0)
    core = torch.randn(4, 6, 6, generator=gen)
    a, b, c = (torch.linalg.qr(torch.randn(m, r, generator=gen))[0] for m, r in ((12, 4), (16, 6), (16, 6)))
    t = torch.einsum("lpq,nl,ip,jq->nij", core, a, b, c)
    return t + 1e-4 * torch.randn(t.shape, generator=gen)


@pytest.mark.parametrize("method,ranks", [
    ("II", {"rank_dim": 6}), ("III", {"rank_dim": 6}), ("IV", {"rank_layer": 4, "rank_dim": 6}),
    ("tt", {"rank1": 12, "rank2": 6}), ("tt", {"rank1": 6, "rank2": 6, "matrix_mode": "middle"}),
])
def test_methods_recover_a_low_rank_tensor(low_rank_tensor, method, ranks):
    fit = decompose(low_rank_tensor, method, **ranks)
    assert fit.to_tensor().shape == low_rank_tensor.shape
    assert fit.relative_error(low_rank_tensor) < 1e-3


@pytest.fixture(scope="module")
def cp_rank3_tensor():
    """A (12, 16, 16) tensor of exact CP rank 3 with generic (well-conditioned) factors: a well-posed fit."""
    gen = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(m, 3, generator=gen) for m in (12, 16, 16))
    return torch.einsum("ir,jr,kr->ijk", a, b, c)


def test_cp_recovers_its_rank_and_error_falls_with_rank(cp_rank3_tensor):
    """Properties of the best fit, not of one ALS path: the exact rank is recovered, lower ranks cannot be."""
    errs = {r: decompose(cp_rank3_tensor, "cp", rank=r, n_iter_max=200, n_restarts=2).relative_error(cp_rank3_tensor)
            for r in (1, 2, 3)}
    assert errs[3] < 1e-2
    assert errs[1] > errs[2] + 0.1 and errs[2] > errs[3] + 0.1


def test_cp_keeps_the_best_restart_and_says_why_it_stopped(cp_rank3_tensor):
    fit = CP(2, n_iter_max=200, n_restarts=3, seed=4).fit(cp_rank3_tensor)
    effort = fit.effort()
    assert effort["restarts"] == 3 and len(effort["restart_errors"]) == 3
    assert fit.relative_error(cp_rank3_tensor) == pytest.approx(min(effort["restart_errors"]), abs=1e-6)
    assert effort["stop_reason"] in ("converged", "max_iter") and 1 <= effort["iterations"] <= 200
    capped = CP(2, n_iter_max=1, tol=0.0).fit(cp_rank3_tensor).effort()
    assert capped["stop_reason"] == "max_iter" and capped["iterations"] == 1


def test_every_method_reports_its_effort(low_rank_tensor):
    for method, ranks in (("II", {"rank_dim": 3}), ("IV", {"rank_layer": 3, "rank_dim": 4}), ("III", {"rank_dim": 4}),
                          ("tt", {"rank1": 3, "rank2": 3})):
        effort = decompose(low_rank_tensor, method, **ranks).effort()
        assert {"solver", "iterations", "restarts", "stop_reason"} <= set(effort)
    tucker = Tucker(3, 4, n_iter_max=2, tol=0.0).fit(low_rank_tensor).effort()
    assert tucker["stop_reason"] == "max_iter" and tucker["iterations"] == 2


def test_parameter_count_equals_stored_factor_sizes(low_rank_tensor):
    fit = Tucker(3, 5).fit(low_rank_tensor)
    assert fit.n_params() == fit.C.numel() + fit.P.numel() + fit.U.numel() + fit.V.numel()
    fit = SharedFactors(5).fit(low_rank_tensor)
    assert fit.n_params() == fit.U_.numel() + fit.V_.numel() + fit.S_.numel()
    fit = CP(7).fit(low_rank_tensor)
    assert fit.n_params() == sum(f.numel() for f in fit.cp_.factors)
    fit = TensorTrain(5, 4).fit(low_rank_tensor)
    assert fit.n_params() == sum(f.numel() for f in fit.tt_.factors)


def test_tucker_is_deterministic_and_matches_tensorly(low_rank_tensor):
    noisy = low_rank_tensor + 0.3 * torch.randn(low_rank_tensor.shape, generator=torch.Generator().manual_seed(5))
    a = Tucker(3, 5, seed=1).fit(noisy)
    b = Tucker(3, 5, seed=1).fit(noisy)
    assert torch.equal(a.to_tensor(), b.to_tensor())
    ref = Tucker(3, 5, solver="tensorly").fit(noisy)
    assert a.relative_error(noisy) == pytest.approx(ref.relative_error(noisy), abs=2e-3)
    # the reported HOOI error is the true reconstruction error
    assert a.errors_[-1] == pytest.approx(a.relative_error(noisy), abs=1e-5)


def test_tucker_random_init_converges_close_to_svd_init(low_rank_tensor):
    svd = Tucker(4, 6).fit(low_rank_tensor).relative_error(low_rank_tensor)
    rnd = Tucker(4, 6, init="random", seed=3).fit(low_rank_tensor).relative_error(low_rank_tensor)
    assert rnd < 1e-3 and svd < 1e-3


def test_tucker_full_rank_is_exact(low_rank_tensor):
    assert Tucker(12, 16).fit(low_rank_tensor).relative_error(low_rank_tensor) < 1e-5


@pytest.mark.parametrize("ranks,match", [
    ({"rank_layer": 0, "rank_dim": 4}, "rank_layer must be a positive integer"),
    ({"rank_layer": 2, "rank_dim": 2.5}, "rank_dim must be a positive integer"),
    ({"rank_layer": 2, "rank_dim": 17}, r"rank_dim=17 exceeds the hidden size D \(16\)"),
    ({"rank_layer": 13, "rank_dim": 4}, r"rank_layer=13 exceeds the number of matrices n \(12\)"),
    ({"rank_layer": -1, "rank_dim": 4}, "positive integer"),
])
def test_bad_ranks_get_one_clear_error(low_rank_tensor, ranks, match):
    with pytest.raises(RankError, match=match):
        Tucker(**ranks).fit(low_rank_tensor)


def test_unknown_method_and_bad_kwargs():
    with pytest.raises(ConfigError, match="unknown method 'svd'"):
        make("svd")
    with pytest.raises(ConfigError, match="takes ranks"):
        make("IV", rank=3)


def test_tt_middle_bounds_rank1_by_the_hidden_size(low_rank_tensor):
    fit = TensorTrain(14, 5, matrix_mode="middle").fit(low_rank_tensor)  # 14 > n = 12 but <= D = 16
    assert fit.n_params() == TensorTrain.param_count((12, 16, 16), 14, 5, "middle")
    with pytest.raises(RankError, match="rank1=14 exceeds the first TT mode"):
        TensorTrain(14, 5).fit(low_rank_tensor)
    with pytest.raises(ConfigError, match="unknown matrix_mode"):
        TensorTrain(4, 5, matrix_mode="last").fit(low_rank_tensor)


def test_not_a_stacked_tensor_is_rejected():
    with pytest.raises(RankError, match=r"\(n, D, D\)"):
        Tucker(2, 2).fit(torch.zeros(4, 5, 6))


def test_macs_per_map_match_the_factorized_forward():
    shape = (72, 384, 384)
    assert Raw.macs_per_map(shape) == 384 * 384
    assert Tucker.macs_per_map(shape, rank_layer=36, rank_dim=192) == 2 * 384 * 192
    assert PerMatrix.macs_per_map(shape, rank_dim=25) == 2 * 384 * 25
    assert SharedFactors.macs_per_map(shape, rank_dim=137) == 2 * 384 * 137
    assert CP.macs_per_map(shape, rank=1755) == 2 * 384 * 1755  # > D^2: slower than the dense map
    assert TensorTrain.macs_per_map(shape, 18, 201) == 2 * 384 * 201
    assert TensorTrain.macs_per_map(shape, 96, 50, "middle") == 384 * 96 + 96 * 50 + 50 * 384
