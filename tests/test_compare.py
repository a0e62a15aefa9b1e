import pytest
import torch

from tdlib.core.decompose import TensorTrain
from tdlib.core.errors import RankError
from tdlib.studies.methods import (
    COMPARED,
    budgets_from_ratios,
    compare_methods,
    match_ranks,
    method_class,
    rank_for_energy,
    spectra,
)

SHAPE = (12, 16, 16)


@pytest.mark.parametrize("method", COMPARED)
def test_matched_ranks_stay_within_budget_and_are_tight(method):
    budget = 600
    options = match_ranks(method, SHAPE, budget)
    assert options
    cls = method_class(method)
    assert all(cls.param_count(SHAPE, **ranks) <= budget for ranks in options)
    best = max(cls.param_count(SHAPE, **r) for r in options)
    assert best > 0.6 * budget


def test_tt_middle_counts_the_permuted_shape():
    (ranks, *_) = match_ranks("tt-middle", SHAPE, 600)
    assert ranks["matrix_mode"] == "middle"
    assert TensorTrain.param_count(SHAPE, ranks["rank1"], ranks["rank2"], "middle") <= 600


def test_method_class_maps_both_tt_variants():
    assert method_class("tt-first") is method_class("tt-middle") is TensorTrain
    with pytest.raises(RankError, match="unknown method 'tucker2'"):
        method_class("tucker2")


def test_no_rank_fits_a_tiny_budget():
    assert match_ranks("IV", SHAPE, 10) == []


def test_compare_methods_on_a_tucker_structured_tensor():
    """On a tensor that *is* low multilinear rank, Tucker must win at a budget that fits it."""
    gen = torch.Generator().manual_seed(0)
    core = torch.randn(3, 4, 4, generator=gen)
    a, b, c = (torch.linalg.qr(torch.randn(m, r, generator=gen))[0] for m, r in ((12, 3), (16, 4), (16, 4)))
    tensor = torch.einsum("lpq,nl,ip,jq->nij", core, a, b, c)
    budget = 300  # Tucker (3, 4) needs 2*16*4 + 3*16 + 12*3 = 212
    rows = compare_methods(tensor, [budget], progress=False)
    by = {r["method"]: r for r in rows}
    assert set(by) == set(COMPARED)
    assert by["IV"]["rel_error"] < 1e-4
    assert all(by["IV"]["rel_error"] <= r["rel_error"] for r in rows if "rel_error" in r)
    assert all(r["params"] <= budget for r in rows if "params" in r)


def test_cp_memory_guard_skips_with_a_reason(monkeypatch):
    import tdlib.studies.methods as compare

    monkeypatch.setattr(compare, "CP_MEMORY_LIMIT", 10)
    rows = compare_methods(torch.randn(SHAPE), [600], methods=("cp",), progress=False)
    assert "Khatri-Rao" in rows[0]["skipped"]


def test_spectra_energy_is_cumulative_and_complete():
    out = spectra(torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)))
    for key in ("mode0", "mode1", "mode2"):
        e = out[key]
        assert e == sorted(e) and e[-1] == pytest.approx(1.0)
    assert len(out["mode0"]) == 12 and len(out["mode1"]) == 16
    assert len(out["per_matrix"]["mean"]) == 16
    assert rank_for_energy([0.5, 0.8, 0.95, 1.0], 0.9) == 3


def test_budgets_from_ratios():
    assert budgets_from_ratios((72, 384, 384), [7.2]) == [int(72 * 384 * 384 / 7.2)]
