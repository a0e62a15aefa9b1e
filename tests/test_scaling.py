"""The scaling study's plan, trend fit and verdict rules (its runs: the smoke notebook 10 in make test)."""

import math

import pytest

from tdlib.core.errors import ConfigError
from tdlib.studies.runs import _config
from tdlib.studies.scaling import (
    ScalingPlan,
    compare_rates,
    difference,
    fit_trend,
    hours_spent,
    init_verdict,
    precision_mix,
    rate_verdict,
    reach_verdict,
    schedule,
    split_params,
    trained_in,
)
from tdlib.studies.settings import keyed, settings


def test_budgets_double_from_the_first_and_the_plan_refuses_bad_values():
    assert ScalingPlan(first_steps=256, doublings=6).budgets == [256 * 2**k for k in range(7)]
    for bad in ({"doublings": 0}, {"first_steps": 0}, {"warmup_steps": 300, "first_steps": 256},
                {"decay_check": 9, "doublings": 6}):
        with pytest.raises(ConfigError):
            ScalingPlan(**bad)
    with pytest.raises(ConfigError, match="unknown experiment parameter"):
        split_params({"first_steps": 4, "budgets": [1]})


def test_every_student_reaches_a_budget_before_any_goes_further():
    s, plan = split_params({"first_steps": 2, "doublings": 2, "warmup_steps": 1, "decay_check": 1})
    order = schedule(s, plan, ["a", "b"])
    assert [(st, name, d) for st, name, d in order] == [(2, "a", False), (2, "b", False), (4, "a", False),
                                                        (4, "b", False), (4, "a", True), (8, "a", False),
                                                        (8, "b", False)]


def _scores(slopes, offsets, tokens):
    return [{seed: off + sl * math.log2(t) for seed, (sl, off) in enumerate(zip(slopes, offsets, strict=True))}
            for t in tokens]


def test_a_log_linear_trend_is_recovered_with_an_interval_from_the_seeds():
    tokens = [2**19 * 2**k for k in range(5)]
    trend = fit_trend(tokens, _scores([1.0, 1.2, 1.4], [50, 51, 52], tokens), at_tokens=2**33)
    assert trend.slope == pytest.approx(1.2)
    assert trend.slope_interval[0] < 1.2 < trend.slope_interval[1]
    assert trend.value == pytest.approx(51 + 1.2 * 33)
    with pytest.raises(ConfigError, match="2 seeds"):
        fit_trend(tokens, [{0: 1.0}] * 5, 2**33)


def test_the_verdict_rules_read_the_interval_not_the_point():
    tokens = [2**19 * 2**k for k in range(4)]
    steep = fit_trend(tokens, _scores([3.0, 3.02, 3.04], [0, 0, 0], tokens), 2**33)
    flat = fit_trend(tokens, _scores([0.1, 0.2, 0.3], [60, 60, 60], tokens), 2**33)
    assert reach_verdict(flat, 96.7) == "not reached at the paper's budget"
    assert reach_verdict(steep, 96.7) == "reached"
    wide = fit_trend(tokens, _scores([0.0, 1.3, 2.6], [60, 60, 60], tokens), 2**33)
    assert wide.value_interval[0] < 96.7 < wide.value_interval[1]
    assert reach_verdict(wide, 96.7) == "trending toward the claim"
    assert rate_verdict(steep, flat) == "faster" and rate_verdict(flat, steep) == "slower"
    assert rate_verdict(wide, wide) == "level"
    d, interval = difference({0: 80.0, 1: 81.0, 2: 82.0}, {0: 70.0, 1: 71.5, 2: 70.5})
    assert d == pytest.approx(81 - 70.666666, abs=1e-4) and init_verdict(interval) == "the paper's init ahead"
    assert init_verdict(difference({0: 70.0, 1: 72.0}, {0: 71.0, 1: 71.5})[1]) == "level"


def test_compile_teacher_reaches_general_distillation_only():
    s = settings({"compile_teacher": True})
    assert _config(s, 10, 1e-4, "linear", 0.1, general=True).compile_teacher is True
    assert _config(s, 10, 1e-4, "linear", 0.1).compile_teacher is False  # fine-tuning and task runs keep their keys
    assert keyed({"compile_teacher": False, "seed": 0}) == {"seed": 0}  # earlier records keep their hash
    with pytest.raises(ConfigError, match="compile_teacher"):
        settings({"compile_teacher": "yes"})


def test_rates_are_compared_over_the_budgets_both_students_measured():
    tokens = [2**19 * 2**k for k in range(5)]
    flat = _scores([0.1, 0.2, 0.3], [60, 60, 60], tokens[:4])
    # a's curve bends up only at a budget b has not reached: over all of a's budgets a looks faster
    a = {"tokens": tokens, "scores": flat + [{seed: 90.0 + seed for seed in range(3)}]}
    b = {"tokens": tokens[:4], "scores": _scores([0.1, 0.25, 0.3], [60, 60, 60], tokens[:4])}
    assert rate_verdict(fit_trend(a["tokens"], a["scores"], 2**33), fit_trend(b["tokens"], b["scores"], 2**33)) \
        == "faster"
    verdict, ta, tb = compare_rates(a, b, 2**33)
    assert verdict == "level" and ta.budgets == tb.budgets == 4
    with pytest.raises(ConfigError, match="2 budgets both measured"):
        compare_rates(a, {"tokens": tokens[4:], "scores": a["scores"][4:]}, 2**33)


def test_a_point_names_the_precision_its_host_resolved():
    record = {"params": {"settings": {"precision": "auto"}}, "provenance": {"cpu_bf16": ["avx512_bf16"]}}
    assert trained_in(record) == "bf16"
    assert trained_in({**record, "provenance": {"cpu_bf16": []}}) == "fp32"
    assert trained_in({**record, "params": {"settings": {"precision": "fp32"}}}) == "fp32"


def test_a_comparison_names_the_points_trained_in_another_precision():
    tokens = [2**20 * 2**k for k in range(3)]
    bf16 = {"tokens": tokens, "trained_in": ["bf16"] * 3}
    assert precision_mix({"a": bf16, "b": bf16}) == ""
    later = {"tokens": tokens + [2**23], "trained_in": ["bf16", "bf16", "fp32", "fp32"]}
    assert precision_mix({"a": bf16, "b": later}) == "b at 4.2M tokens trained in fp32, the other 5 points in bf16"
    assert precision_mix({"a": bf16, "b": later}, [tokens[0]]) == ""  # only the budgets asked about
    assert precision_mix({"a": bf16, "b": later}, [tokens[2]]) == \
        "b at 4.2M tokens trained in fp32, the other 1 point in bf16"


def test_the_figure_opens_the_markers_of_points_trained_in_the_rarer_precision():
    import matplotlib

    matplotlib.use("Agg")
    from tdlib.paper.plots import scaling_figure

    tokens = [2**20, 2**21, 2**22]
    scores = _scores([0.1, 0.2, 0.3], [80, 80, 80], tokens)
    entries = {"a": {"tokens": tokens, "scores": scores, "trained_in": ["bf16"] * 3},
               "b": {"tokens": tokens, "scores": scores, "trained_in": ["bf16", "bf16", "fp32"]}}

    def open_markers(curves):
        fig = scaling_figure(curves, {}, 30.0, 96.7, 2**32, "score")
        ax = fig.axes[0]
        points = [ln for ln in ax.lines if ln.get_markerfacecolor() == "white" and len(ln.get_xdata())]
        return points, [t.get_text() for t in ax.get_legend().get_texts()]

    points, labels = open_markers(entries)
    assert [list(ln.get_xdata()) for ln in points] == [[2**22]]
    assert "open: trained in fp32 (the rest bf16)" in labels
    points, labels = open_markers({"a": entries["a"]})  # one precision: every marker filled, no legend entry
    assert not points and not any(label.startswith("open") for label in labels)


def test_hours_count_a_run_once_by_its_own_clock_and_each_teacher_once():
    def record(student, steps, general, run=None, bf16=False, teacher=None):
        task = {"seconds": 360.0, **({"teacher_seconds": teacher} if teacher is not None else {})}
        return {"params": {"settings": {"precision": "auto"}},
                "provenance": {"cpu_bf16": ["avx512_bf16"] if bf16 else []},
                "result": {"student": student, "schedule": "constant_with_warmup", "steps": steps,
                           "general_seconds": general, "run_seconds": run, "tasks": {"rte": task}}}

    found = [record("a", 4, 3600.0), record("a", 8, 360.0, run=7200.0, teacher=1800.0),  # resumed: its clock
             record("a", 16, 3600.0),  # a later point without the clock adds its call's time
             record("b", 4, 720.0, teacher=1800.0), record("b", 8, 720.0),  # never clocked: the calls' sum
             record("a", 4, 36.0, bf16=True)]
    by_precision = {h.precision: h for h in hours_spent(found)}
    fp32, bf16 = by_precision["fp32"], by_precision["bf16"]
    assert bf16.points == 1 and bf16.general == pytest.approx(0.01)
    assert fp32.points == 5 and fp32.runs == 2 and fp32.runs_clocked == 1
    assert fp32.general == pytest.approx(2 + 1 + 0.4)
    assert fp32.tasks == pytest.approx(0.5) and fp32.teachers == pytest.approx(0.5) and fp32.teachers_timed == 1
    assert "a lower bound" in str(fp32)
