"""The task-distillation budget study (notebook 09) on the tiny teacher, GLUE folder and corpus."""

import pytest

from tdlib.core.errors import ConfigError
from tdlib.studies.aggregate import curve_glue
from tdlib.studies.budget import task_budget_experiment
from tdlib.studies.experiments import glue_experiment
from tdlib.studies.settings import check_curve, settings


@pytest.fixture
def glue(env):
    return {**env, "pooling": "mean"}


def test_stage2_curves_reuse_the_glue_experiments_runs_and_end_at_the_final_model(glue, tmp_path):
    first = glue_experiment(settings(glue), tmp_path, progress=False)
    params = {"glue": glue, "models": ["IV-8-16"], "task_lrs": [1e-3, 1e-4], "stage2_steps": 4, "curve": [4, 0, 2]}
    study = task_budget_experiment(params, tmp_path, progress=False)
    # the same teachers as the GLUE experiment: its finished runs, reloaded
    for task, entry in study["tasks"].items():
        assert entry["metrics"] == first["tasks"][task]["metrics"]
    assert list(study["students"]) == ["IV-8-16 lr=0.001", "IV-8-16 lr=0.0001"]
    for entry in study["students"].values():
        assert entry["stage1_steps"] == 2 and entry["stage2_steps"] == 4
        for run in entry["tasks"].values():
            assert [p["step"] for p in run["curve"]] == [0, 2, 4]
            assert run["steps"] == [2, 4]
            # the curve's last point is the final model the run reports
            assert run["curve"][-1]["metrics"] == pytest.approx(run["metrics"], abs=1e-6)
            assert all(p["logit_std"] >= 0 for p in run["curve"])
        assert [p["step"] for p in entry["glue"]] == [0, 2, 4]
        last = entry["glue"][-1]
        assert last["percent_of_teacher"] == pytest.approx(100 * last["glue"] / study["teacher_glue"])
    a, b = study["students"].values()
    assert a["tasks"]["rte"]["loss"] != b["tasks"]["rte"]["loss"], "each learning rate is its own run"


def test_the_glue_experiments_own_task_curve_is_the_studys_curve_and_its_runs_are_read_not_trained(glue,
                                                                                                   tmp_path):
    glue = {**glue, "task_lr": 1e-3, "task_curve": [3, 0, 1]}  # the env's stage2_steps is 3
    first = glue_experiment(settings(glue), tmp_path, progress=False)
    ours = first["tasks"]["rte"]["students"]["IV-8-16"]
    assert [p["step"] for p in ours["curve"]] == [0, 1, 3]
    assert ours["curve"][-1]["metrics"] == pytest.approx(ours["metrics"], abs=1e-6)
    assert "curve" in first["tasks"]["stsb"]["students"]["dense-1L-16-70"]  # the baselines too
    runs = sorted((tmp_path / "task").rglob("history.json"))
    study = task_budget_experiment({"glue": glue, "models": ["IV-8-16"], "task_lrs": [1e-3], "stage2_steps": 3,
                                    "curve": [0, 1, 3]}, tmp_path, progress=False)
    assert sorted((tmp_path / "task").rglob("history.json")) == runs, "03's runs were reused, none trained"
    for task, run in study["students"]["IV-8-16 lr=0.001"]["tasks"].items():
        assert run["curve"] == first["tasks"][task]["students"]["IV-8-16"]["curve"]


def test_a_longer_general_budget_trains_one_general_run_per_student_and_reads_03s_back(glue, tmp_path, monkeypatch,
                                                                                       tiny_corpus):
    from tdlib.studies.budget import general_trend

    monkeypatch.setenv("TDLIB_HELDOUT", str(tiny_corpus))
    glue = {**glue, "task_lr": 1e-3, "task_curve": [0, 3], "curve_points": 2, "proxy_sequences": 4}
    first = glue_experiment(settings(glue), tmp_path, progress=False)
    general = sorted(p.parent for p in (tmp_path / "general").rglob("history.json"))
    study = task_budget_experiment({"glue": glue, "models": ["IV-8-16", "dense-1L-16-70"], "task_lrs": [1e-3],
                                    "general_budgets": [6], "stage2_steps": 3, "curve": [0, 3]}, tmp_path,
                                   progress=False)
    assert list(study["students"]) == ["IV-8-16 lr=0.001", "IV-8-16 lr=0.001 general=6",
                                       "dense-1L-16-70 lr=0.001", "dense-1L-16-70 lr=0.001 general=6"]
    new = sorted(p.parent for p in (tmp_path / "general").rglob("history.json"))
    assert len(new) == len(general) + 2 and set(general) <= set(new), "one new general run per student"
    ours, longer = study["students"]["IV-8-16 lr=0.001"], study["students"]["IV-8-16 lr=0.001 general=6"]
    for task, run in ours["tasks"].items():  # 03's budget: 03's own task runs, read back
        assert run["curve"] == first["tasks"][task]["students"]["IV-8-16"]["curve"]
    assert ours["general"]["steps"] == 3 and longer["general"]["steps"] == 6
    assert longer["general"]["tokens"] == 2 * ours["general"]["tokens"]
    assert set(longer["general"]["proxies"]) >= {"stsb", "cosine"} and "stsb" in study["proxies_teacher"]
    assert longer["tasks"]["rte"]["loss"] != ours["tasks"]["rte"]["loss"], "the longer budget is its own encoder"
    trend = general_trend(study, "IV-8-16", 1e-3, 90.0)
    assert [p["step"] for p in trend["points"]] == [3, 6]
    assert trend["points"][1]["percent_of_teacher"] == longer["glue"][-1]["percent_of_teacher"]
    assert general_trend(study, "IV-8-16", 2e-3, 90.0) is None  # no such task lr: no trend


@pytest.mark.parametrize("bad", [[0], [2.5], "1024", [True]])
def test_general_budgets_must_be_positive_step_counts(glue, tmp_path, bad):
    with pytest.raises(ConfigError, match="general_budgets must be a list of positive step counts"):
        task_budget_experiment({"glue": glue, "models": ["IV-8-16"], "task_lrs": [1e-3], "general_budgets": bad,
                                "stage2_steps": 2, "curve": [0, 2]}, tmp_path, progress=False)
    assert not (tmp_path / "general").exists(), "refused before anything trains"


def test_a_task_curve_is_checked_where_the_settings_are_made(glue):
    from tdlib.studies.settings import settings

    with pytest.raises(ConfigError, match="task_curve must end at stage2_steps \\(3\\)"):
        settings({**glue, "task_curve": [0, 2]})
    with pytest.raises(ConfigError, match="task_curve must be a list"):
        settings({**glue, "task_curve": 3})
    with pytest.raises(ConfigError, match="task_curve needs stage2_steps"):
        settings({**glue, "stage2_steps": None, "task_curve": [0, 3]})
    assert settings({**glue, "task_curve": None}).task_curve is None


def test_the_curve_and_the_models_are_checked_before_anything_trains(glue, tmp_path):
    with pytest.raises(ConfigError, match="end at stage2_steps"):
        check_curve([0, 5], 10)
    with pytest.raises(ConfigError, match="stage-2 steps >= 0"):
        check_curve([-1, 10], 10)
    assert check_curve([10, 0, 5, 5], 10) == [0, 5, 10]
    with pytest.raises(ConfigError, match="not notebook 03's students.*IV-8-16"):
        task_budget_experiment({"glue": glue, "models": ["IV-9-9"], "task_lrs": [1e-3], "stage2_steps": 2,
                                "curve": [0, 2]}, tmp_path, progress=False)


def test_the_glue_average_is_taken_at_the_steps_every_task_measured():
    runs = {"rte": {"curve": [{"step": 0, "metrics": {"acc": 0.5, "score": 0.5}},
                              {"step": 2, "metrics": {"acc": 0.7, "score": 0.7}}]},
            "stsb": {"curve": [{"step": 0, "metrics": {"pearson": 0.1, "spearman": 0.1, "score": 0.1}},
                               {"step": 1, "metrics": {"pearson": 0.2, "spearman": 0.2, "score": 0.2}},
                               {"step": 2, "metrics": {"pearson": 0.3, "spearman": 0.3, "score": 0.3}}]}}
    out = curve_glue(runs, ["rte", "stsb"], teacher_glue=0.8)
    assert [p["step"] for p in out] == [0, 2]
    assert out[1]["glue"] == pytest.approx(0.5) and out[1]["percent_of_teacher"] == pytest.approx(62.5)


def test_the_trend_over_the_last_doubling_and_its_extrapolation_to_a_target():
    from tdlib.studies.budget import doubling_trend

    pts = [{"step": s, "percent_of_teacher": p} for s, p in ((0, 50.0), (80, 60.0), (160, 64.0))]
    assert doubling_trend(pts, 90.0) == {"gain": pytest.approx(4.0), "trend": "closing",
                                         "doublings": pytest.approx(6.5)}
    flat = doubling_trend([*pts[:2], {"step": 160, "percent_of_teacher": 60.5}], 90.0)
    assert flat["trend"] == "flat" and flat["doublings"] is None
    assert doubling_trend(pts[:1], 90.0)["trend"] is None
    assert doubling_trend(pts, 60.0)["doublings"] == 0.0  # already past the target


def test_the_stage_2_trend_compares_lengths_on_the_seeds_both_ran():
    from tdlib.studies.budget import stage2_trend

    def entry(steps, end, **extra):
        return {"student": "IV-36-192", "task_lr": 1e-3, "general_steps": 256, "stage2_steps": steps, **extra,
                "glue": [{"step": 0, "percent_of_teacher": 70.0}, {"step": steps, "percent_of_teacher": end}]}

    # 640 steps with three seeds (mean 87.0), 1,280 with seed 0 alone: seed 0 against seed 0, not 87.0 against it
    result = {"students": {
        "a": entry(640, 87.0, task_seeds=[0, 1, 2], seeds={"0": 85.0, "1": 88.0, "2": 88.0}),
        "b": entry(1280, 86.5, task_seeds=[0], arm={"stage2_steps": 1280}),
        "c": entry(640, 99.0, task_seeds=[0], arm={"stage1_steps": 80}),  # a stage-1 arm: another question
        "d": entry(640, 99.0, general_steps=1024)}}  # another general budget
    found = stage2_trend(result, "IV-36-192", 1e-3, 256, 90.0)
    assert found["seeds"] == [0]
    assert [(p["step"], p["percent_of_teacher"]) for p in found["points"]] == [(640, 85.0), (1280, 86.5)]
    assert found["gain"] == pytest.approx(1.5) and found["trend"] == "closing"
    result["students"]["b"].update(task_seeds=[0, 1, 2], seeds={"0": 86.0, "1": 87.0, "2": 86.5})
    found = stage2_trend(result, "IV-36-192", 1e-3, 256, 90.0)  # both ran three seeds: their means
    assert found["seeds"] == [0, 1, 2] and found["points"][0]["percent_of_teacher"] == pytest.approx(87.0)
    assert found["gain"] == pytest.approx(-0.5) and found["trend"] == "flat"
    del result["students"]["b"]
    assert stage2_trend(result, "IV-36-192", 1e-3, 256, 90.0) is None  # one length


def test_the_gain_is_per_doubling_when_the_last_two_points_are_further_apart():
    from tdlib.studies.budget import doubling_trend

    pts = [{"step": 256, "percent_of_teacher": 82.0}, {"step": 1024, "percent_of_teacher": 86.0}]  # 2 doublings
    assert doubling_trend(pts, 90.0) == {"gain": pytest.approx(2.0), "trend": "closing",
                                         "doublings": pytest.approx(2.0)}
    pts[1]["percent_of_teacher"] = 83.5  # +0.75 per doubling: flat
    assert doubling_trend(pts, 90.0)["trend"] == "flat"


def test_a_task_arm_changes_stage_1_from_03s_student_and_stays_out_of_the_general_trend(glue, tmp_path):
    from tdlib.studies.budget import general_trend

    glue = {**glue, "task_lr": 1e-3, "task_curve": [0, 3]}
    glue_experiment(settings(glue), tmp_path, progress=False)
    general = sorted((tmp_path / "general").rglob("history.json"))
    arm = {"stage1_steps": 4, "task_objective": "all_layers_cos", "models": ["IV-8-16"]}
    study = task_budget_experiment({"glue": glue, "models": ["IV-8-16", "dense-1L-16-70"], "task_lrs": [1e-3],
                                    "task_arms": [arm], "stage2_steps": 3, "curve": [0, 3]}, tmp_path,
                                   progress=False)
    # the arm runs for the models it names alone; its name says what it changes
    assert list(study["students"]) == ["IV-8-16 lr=0.001", "IV-8-16 lr=0.001 stage1=4 all_layers_cos",
                                       "dense-1L-16-70 lr=0.001"]
    assert sorted((tmp_path / "general").rglob("history.json")) == general, "the arm reads 03's student"
    plain, armed, _ = study["students"].values()
    assert armed["arm"] == arm and armed["stage1_steps"] == 4 and armed["task_objective"] == "all_layers_cos"
    assert plain["stage1_steps"] == 2 and plain["task_objective"] == "last_layer" and "arm" not in plain
    assert armed["tasks"]["rte"]["steps"] == [4, 3]
    assert armed["tasks"]["rte"]["loss"]["stage1"] != plain["tasks"]["rte"]["loss"]["stage1"]
    assert general_trend(study, "IV-8-16", 1e-3, 90.0) is None, "an arm is not another general budget"


def test_a_task_arm_can_lengthen_stage_2_its_curve_the_studys_points_then_its_end(glue, tmp_path):
    from tdlib.studies.budget import arm_curve, arm_label, vs_dense

    assert arm_curve([0, 40, 80, 160, 320, 640], 1280) == [0, 40, 80, 160, 320, 640, 1280]
    assert arm_curve([0, 40, 80, 160], 100) == [0, 40, 80, 100]
    assert arm_label({"stage2_steps": 1280, "models": ["IV-36-192"]}) == "stage2=1280"
    glue = {**glue, "task_lr": 1e-3, "task_curve": [0, 3]}
    glue_experiment(settings(glue), tmp_path, progress=False)
    models = ["IV-8-16", "dense-1L-16-70"]
    study = task_budget_experiment({"glue": glue, "models": models, "task_lrs": [1e-3],
                                    "task_arms": [{"stage2_steps": 5}], "stage2_steps": 3, "curve": [0, 3]},
                                   tmp_path, progress=False)
    assert list(study["students"]) == ["IV-8-16 lr=0.001", "IV-8-16 lr=0.001 stage2=5", "dense-1L-16-70 lr=0.001",
                                       "dense-1L-16-70 lr=0.001 stage2=5"]
    plain, longer = (study["students"][f"IV-8-16 lr=0.001{x}"] for x in ("", " stage2=5"))
    assert plain["stage2_steps"] == 3 and longer["stage2_steps"] == 5 and longer["stage1_steps"] == 2
    for task, run in longer["tasks"].items():
        assert run["steps"] == [2, 5] and [p["step"] for p in run["curve"]] == [0, 3, 5]
        # the same stage 1 (03's), so the same model at step 0; stage 2 is its own, longer run
        assert run["curve"][0]["metrics"] == pytest.approx(plain["tasks"][task]["curve"][0]["metrics"], abs=1e-6)
    assert [p["step"] for p in longer["glue"]] == [0, 3, 5]
    assert vs_dense(study, models, longer) == pytest.approx(
        longer["glue"][-1]["percent_of_teacher"]
        - study["students"]["dense-1L-16-70 lr=0.001 stage2=5"]["glue"][-1]["percent_of_teacher"])


@pytest.mark.parametrize("bad, match", [([{"stage3_steps": 5}], "not \\['stage3_steps'\\]"),
                                        ([{"stage1_steps": 0}], "stage1_steps must be a positive integer"),
                                        ([{"stage2_steps": True}], "stage2_steps must be a positive integer"),
                                        ([{"task_objective": "tinybert"}], "must be one of"),
                                        ({"stage1_steps": 80}, "list of non-empty dicts"), ([{}], "non-empty"),
                                        ([{"models": ["IV-8-16"]}], "must change stage1_steps or task_obj"),
                                        ([{"stage1_steps": 4, "models": ["IV-9-9"]}], "list of the study's models"),
                                        ([{"stage1_steps": 4, "models": []}], "list of the study's models")])
def test_task_arms_are_checked_before_anything_trains(glue, tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        task_budget_experiment({"glue": glue, "models": ["IV-8-16"], "task_lrs": [1e-3], "task_arms": bad,
                                "stage2_steps": 2, "curve": [0, 2]}, tmp_path, progress=False)
    assert not any(tmp_path.iterdir()), "refused before anything trains"


def test_task_seeds_average_a_models_stage_2_over_seeds_and_read_03s_seed_back(glue, tmp_path):
    glue = {**glue, "task_lr": 1e-3, "task_curve": [0, 3]}
    glue_experiment(settings(glue), tmp_path, progress=False)
    before = {p.parent for p in (tmp_path / "task").rglob("stage2/history.json")}
    study = task_budget_experiment({"glue": glue, "models": ["IV-8-16", "dense-1L-16-70"], "task_lrs": [1e-3],
                                    "task_seeds": {"IV-8-16": [0, 1]}, "stage2_steps": 3, "curve": [0, 3]},
                                   tmp_path, progress=False)
    after = {p.parent for p in (tmp_path / "task").rglob("stage2/history.json")}
    assert len(after - before) == len(glue["tasks"]), "one new run per task: seed 1's; seed 0's is 03's, read back"
    tucker, dense = study["students"].values()
    assert tucker["task_seeds"] == [0, 1] and dense["task_seeds"] == [0] and "seeds" not in dense
    assert sorted(tucker["seeds"]) == ["0", "1"]
    for run in tucker["tasks"].values():
        assert sorted(run["seeds"]) == ["0", "1"] and "model" not in run["seeds"]["1"]
        assert [p["step"] for p in run["curve"]] == [0, 3]
    # the entry's GLUE average is the mean of its seeds' (the average over tasks is linear in each task's score)
    mean = sum(tucker["seeds"].values()) / 2
    assert tucker["glue"][-1]["percent_of_teacher"] == pytest.approx(mean, abs=1e-6)


@pytest.mark.parametrize("bad, match", [([0, 1], "must map a model"), ({"IV-9-9": [0]}, "not one of the study"),
                                        ({"IV-8-16": []}, "non-empty list"), ({"IV-8-16": [0, 0]}, "distinct"),
                                        ({"IV-8-16": [-1]}, "integers >= 0")])
def test_task_seeds_are_checked_before_anything_trains(glue, tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        task_budget_experiment({"glue": glue, "models": ["IV-8-16"], "task_lrs": [1e-3], "task_seeds": bad,
                                "stage2_steps": 2, "curve": [0, 2]}, tmp_path, progress=False)
    assert not any(tmp_path.iterdir()), "refused before anything trains"


def test_vs_dense_pairs_each_tucker_entry_with_its_baseline_seed_by_seed():
    from tdlib.studies.budget import dense_baseline, vs_dense

    models = ["IV-36-192", "dense-1L-384-1155", "IV-16-96", "dense-1L-144-484"]
    assert [dense_baseline(models, m) for m in models] == ["dense-1L-384-1155", None, "dense-1L-144-484", None]

    def entry(student, end, seeds=None, arm=None):
        return {"student": student, "task_lr": 1e-3, "general_steps": 256, "glue": [{"percent_of_teacher": end}],
                **({"seeds": seeds} if seeds else {}), **({"arm": arm} if arm else {})}

    arm = {"stage1_steps": 80}
    result = {"students": {
        "t": entry("IV-16-96", 86.0, {"0": 86.0, "1": 87.0, "2": 85.0}),
        "d": entry("dense-1L-144-484", 84.0, {"0": 85.0, "1": 83.0, "2": 84.0}),
        "t arm": entry("IV-16-96", 85.0, arm={**arm, "models": ["IV-16-96", "dense-1L-144-484"]}),
        "d arm": entry("dense-1L-144-484", 84.5, arm={**arm, "models": ["IV-16-96", "dense-1L-144-484"]}),
        "t7": entry("IV-36-192", 87.0)}}
    s = result["students"]
    assert vs_dense(result, models, s["t"]) == pytest.approx((1.0 + 4.0 + 1.0) / 3)  # each seed against its own
    assert vs_dense(result, models, s["t arm"]) == pytest.approx(0.5), "an arm against the baseline's same arm"
    assert vs_dense(result, models, s["t7"]) is None, "no baseline entry in the study"
    assert vs_dense(result, models, s["d"]) is None


def test_glue_overrides_key_a_study_by_the_03_settings_it_ran_under_and_bad_ones_fail(monkeypatch):
    """An override of 03's settings lands in the record's ``glue``: a study under an earlier teacher has the key it
    had when those were the profile's settings. A misspelt setting is one error, before anything runs."""
    import tdlib.studies.budget as budget
    from tdlib.paper.reproduce import glue_params

    seen = []
    monkeypatch.setattr(budget, "cached", lambda name, params, compute, **kw: seen.append(params))
    monkeypatch.setattr(budget, "task_files", lambda task: [])  # the key alone: no data read
    monkeypatch.setattr(budget, "proxy_files", lambda: [])
    base = {"models": ["IV-16-96"], "stage2_steps": 640}
    budget.task_budget_record({**base, "glue_overrides": None}, glue_params("cpu"), "runs", "cpu")
    budget.task_budget_record({**base, "glue_overrides": {"finetune_lr": 1.0}}, glue_params("cpu"), "runs", "cpu")
    assert "glue_overrides" not in seen[0] and "glue_overrides" not in seen[1]
    assert seen[0]["glue"] == glue_params("cpu") and seen[1]["glue"] == {**glue_params("cpu"), "finetune_lr": 1.0}
    for bad in ({"finetune_lrs": 1.0}, [1.0]):
        with pytest.raises(ConfigError, match="glue_overrides must be a dict of notebook 03's settings"):
            budget.task_budget_record({**base, "glue_overrides": bad}, glue_params("cpu"), "runs", "cpu")
