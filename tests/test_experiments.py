"""The GLUE and method experiments end to end on a tiny teacher, tiny GLUE folder and tiny corpus."""

import pytest

from tdlib.core.errors import ConfigError
from tdlib.core.pretrained import load_model
from tdlib.studies.experiments import glue_experiment, method_experiment, teacher_experiment
from tdlib.studies.runs import epoch_ends
from tdlib.studies.settings import keyed, settings
from tdlib.studies.specs import TuckerSpec

PAIR_HEADS = {"rte": "mean", "stsb": "cosine"}  # STS-B read by the cosine of its two sentence embeddings


def test_glue_experiment_end_to_end_and_rerun(env, tmp_path):
    result = glue_experiment(settings({**env, "pooling": PAIR_HEADS, "finetune_steps": 7}), tmp_path, progress=False)
    assert set(result["tasks"]) == {"rte", "stsb"}
    assert list(result["students"]) == ["IV-8-16", "dense-1L-16-70"]
    tucker, dense = result["students"].values()
    assert abs(tucker["params"] - dense["params"]) <= 16, "the baseline matches the Tucker budget"
    for task in result["tasks"].values():
        assert set(task["students"]) == set(result["students"]) and "score" in task["metrics"]
        assert task["n_train"] == 48 and task["n_dev"] == 24 and len(task["data"]["train"]) == 64  # sha256
        # the teacher's dev curve: one point per epoch end, the last one the reported teacher
        assert [p["step"] for p in task["curve"]] == epoch_ends(7, 6) == [6, 7]
        assert task["curve"][-1]["score"] == pytest.approx(task["metrics"]["score"], abs=1e-6)
        for st in task["students"].values():
            assert st["logit_std"] >= 0 and set(st["fidelity"]) & {"agreement", "mse_to_teacher"}
    assert result["tasks"]["stsb"]["majority"]["score"] == 0.0  # a constant score correlates with nothing
    assert 0.3 < result["tasks"]["rte"]["majority"]["acc"] < 0.7
    summary = result["summary"]
    assert summary["majority class"]["glue"] == pytest.approx(result["tasks"]["rte"]["majority"]["acc"] / 2)
    assert summary["teacher"]["percent_of_teacher"] == 100.0
    assert summary["IV-8-16"]["percent_of_teacher"] == pytest.approx(
        100 * summary["IV-8-16"]["glue"] / summary["teacher"]["glue"])
    # every run is finished: reloaded, not retrained
    again = glue_experiment(settings({**env, "pooling": PAIR_HEADS, "finetune_steps": 7}), tmp_path, progress=False)
    assert again["tasks"] == result["tasks"] and again["summary"] == result["summary"]
    student = result["tasks"]["stsb"]["students"]["IV-8-16"]["model"]
    assert type(load_model(student)).__name__ == "BertCosinePairForSequenceClassification"
    # the teacher's logits, kept beside it: RTE's training rows (stage 2's targets) and each task's dev rows
    logits = {task: list(tmp_path.glob(f"finetune/{task}-*/logits/*.npy")) for task in ("rte", "stsb")}
    assert len(logits["rte"]) == 2 and len(logits["stsb"]) == 1  # STS-B's stage 2 reads the gold scores


def test_the_teacher_study_records_curves_and_its_runs_are_the_glue_experiments(env, tmp_path):
    params = {**env, "pooling": "mean", "finetune_steps": 7}
    study = teacher_experiment(settings(params), tmp_path, progress=False)
    assert set(study["tasks"]) == {"rte", "stsb"}
    for task in study["tasks"].values():
        assert [p["step"] for p in task["curve"]] == [6, 7] and task["epochs"] == pytest.approx(7 / 6)
        assert task["curve"][-1]["score"] == pytest.approx(task["metrics"]["score"], abs=1e-6)
    assert study["glue"] == pytest.approx(sum(t["metrics"]["score"] for t in study["tasks"].values()) / 2)
    # notebook 03 with the same settings finds these runs finished: the same teachers, not trained again
    glue = glue_experiment(settings({**params, "curve_points": 0}), tmp_path, progress=False)
    for name, task in glue["tasks"].items():
        assert task["metrics"] == study["tasks"][name]["metrics"]
        assert task["seconds"] == study["tasks"][name]["seconds"]  # the finished run's history, reloaded


def test_epoch_ends_mark_every_epoch_and_the_last_step():
    assert epoch_ends(10, 4) == [4, 8, 10]
    assert epoch_ends(8, 4) == [4, 8]
    assert epoch_ends(3, 6) == [3]  # a run shorter than an epoch: its last step only


def test_method_experiment_trains_each_method_identically(env, tmp_path):
    s = settings({**env, "task": "rte", "ratio": 8.0, "methods": ["IV", "cp", "tt-first"]})
    result = method_experiment(s, tmp_path, progress=False)
    assert set(result["methods"]) == {"IV", "cp", "tt-first"}
    for row in result["methods"].values():
        assert row["params"] <= result["budget"] and 0 <= row["metrics"]["acc"] <= 1 and row["init_error"] > 0
        assert 0 <= row["fidelity"]["agreement"] <= 1 and row["fidelity"]["soft_ce"] > 0
    # with task_seeds: one run per seed, the seed-0 run read back (its folder is the one above), the mean kept
    before = sorted((tmp_path / "methods" / "rte").iterdir())
    seeded = method_experiment(settings({**env, "task": "rte", "ratio": 8.0, "methods": ["IV", "cp", "tt-first"],
                                "task_seeds": [0, 1]}), tmp_path, progress=False)
    assert len(list((tmp_path / "methods" / "rte").iterdir())) == 2 * len(before)
    for method, row in seeded["methods"].items():
        seeds = row["seeds"]
        assert seeds["0"]["metrics"] == result["methods"][method]["metrics"]
        assert row["metrics"]["acc"] == pytest.approx((seeds["0"]["metrics"]["acc"] + seeds["1"]["metrics"]["acc"]) / 2)
        assert row["range"]["acc"] == sorted([seeds["0"]["metrics"]["acc"], seeds["1"]["metrics"]["acc"]])
        assert row["params"] == result["methods"][method]["params"]


def test_method_experiment_general_distils_each_method_from_the_pretrained_teacher(env, tmp_path, monkeypatch,
                                                                                   tiny_corpus):
    monkeypatch.setenv("TDLIB_HELDOUT", str(tiny_corpus))
    params = {**env, "task": "rte", "ratio": 8.0, "methods": ["II", "cp"], "general": True, "curve_points": 2,
              "proxy_sequences": 4, "general_objective": "all_layers_cos", "teacher_cache": True}
    result = method_experiment(settings(params), tmp_path, progress=False)
    assert result["proxies"]["teacher"]["cosine"] == 1.0
    for method, row in result["methods"].items():
        general = row["general"]
        assert general["params"] == row["params"] <= result["budget"]  # the general student is the task student
        assert [p["step"] for p in general["curve"]] == [0, 3] and len(general["loss"]) == 3
        assert set(general["milestones"]) == {"cosine@90%", "cosine@95%", "stsb@90%", "stsb@95%"}
        run = next((tmp_path / "methods" / "rte").glob(f"{method}-*"))
        assert str(tmp_path / "general") in (run / "stage1" / "run.json").read_text()  # its encoder
    # the task-only variant decomposes the fine-tuned teacher instead: other fits, other runs
    alone = method_experiment(settings({**params, "general": False}), tmp_path, progress=False)
    assert "general" not in alone["methods"]["II"] and "proxies" not in alone
    assert alone["methods"]["cp"]["init_error"] != result["methods"]["cp"]["init_error"]
    assert len(list((tmp_path / "methods" / "rte").iterdir())) == 4
    # a method student is built from the fit its rank search chose, never refitted from the spec alone
    from tdlib.studies.runs import build_student
    from tdlib.studies.specs import MethodSpec

    with pytest.raises(ConfigError, match="II-4 is a method student: build it from its fitted decomposition"):
        build_student(MethodSpec("II", {"rank_dim": 4}), load_model(env["teacher"]), 0)


def test_unknown_experiment_parameters_are_named():
    with pytest.raises(ConfigError, match=r"unknown experiment parameter\(s\) \['studnets'\]"):
        settings({"studnets": [[1, 2]]})


def test_baselines_are_optional_per_student(tiny_bert):
    from tdlib.studies.runs import student_specs

    names = [s.name for s in student_specs(settings({"students": [[8, 16], [4, 8]], "baselines": [[1, 16]]}),
                                              tiny_bert)]
    assert names == ["IV-8-16", "dense-1L-16-70", "IV-4-8"]
    assert [s.name for s in student_specs(settings({"students": [[8, 16]], "baselines": []}), tiny_bert)] == [
        "IV-8-16"]


def test_a_refused_run_directory_fails_before_any_model_loads(env, tmp_path, monkeypatch):
    from tdlib.core.pretrained import load_tokenizer
    from tdlib.studies import runs

    s = settings(env)
    out = tmp_path / "gen"
    out.mkdir()
    (out / "run.json").write_text('{"config": {"steps": 999}, "identity": {}}')

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the run directory was checked")

    monkeypatch.setattr(runs, "load_model", no_loading)
    with pytest.raises(ConfigError, match="holds a run with a different configuration"):
        runs.run_general(s, TuckerSpec(8, 16), load_tokenizer(env["teacher"]), None, {}, out=out, progress=False)


def test_recovery_curves_controls_and_the_all_layer_objective(env, tmp_path, monkeypatch, tiny_corpus):
    """Curves at geometric steps for every student and control; milestones name measured or extrapolated steps."""
    monkeypatch.setenv("TDLIB_HELDOUT", str(tiny_corpus))
    params = {**env, "tasks": ["rte"], "pooling": "mean", "general_steps": 4, "curve_points": 3, "proxy_sequences": 8,
              "general_objective": "all_layers_cos", "teacher_cache": True,
              "controls": [{"init": "zero"}, {"objective": "last_layer"}]}
    result = glue_experiment(settings(params), tmp_path, progress=False)
    assert result["proxies"]["teacher"]["cosine"] == 1.0 and result["proxies"]["stsb_pairs"] == 24  # all of them
    assert list(result["controls"]) == ["IV-8-16 init=zero", "IV-8-16 objective=last_layer"]
    for group in ("students", "controls"):
        for entry in result[group].values():
            assert [p["step"] for p in entry["curve"]] == [0, 2, 4]
            assert all(-1.0 <= p["cosine"] <= 1.0 and -100 <= p["stsb"] <= 100 for p in entry["curve"]), entry["curve"]
            assert set(entry["milestones"]) == {"cosine@90%", "cosine@95%", "stsb@90%", "stsb@95%"}
    zero = result["controls"]["IV-8-16 init=zero"]
    plain = result["students"]["IV-8-16"]
    assert zero["curve"][0] != plain["curve"][0], "the zero-map init starts elsewhere than the Tucker init"
    assert result["students"]["IV-8-16"]["objective"] == "all_layers_cos"
    assert result["controls"]["IV-8-16 objective=last_layer"]["objective"] == "last_layer"


def test_proxy_pairs_score_the_first_stsb_dev_pairs_and_stay_out_of_the_key_when_all(env, tmp_path, monkeypatch,
                                                                                    tiny_corpus):
    monkeypatch.setenv("TDLIB_HELDOUT", str(tiny_corpus))
    params = {**env, "tasks": ["rte"], "pooling": "mean", "general_steps": 2, "curve_points": 2, "proxy_sequences": 4,
              "proxy_pairs": 10, "baselines": []}
    result = glue_experiment(settings(params), tmp_path, progress=False)
    assert result["proxies"]["stsb_pairs"] == 10
    assert "proxy_pairs" not in keyed({**params, "proxy_pairs": None}) and keyed(params)["proxy_pairs"] == 10
    for bad in (1, 2.5, "all", True):
        with pytest.raises(ConfigError, match="proxy_pairs"):
            settings({**params, "proxy_pairs": bad})


def test_unknown_control_override_is_named(env, tmp_path):
    with pytest.raises(ConfigError, match="not \\['ranks'\\]"):
        glue_experiment(settings({**env, "controls": [{"ranks": 3}]}), tmp_path, progress=False)


def test_curve_steps_are_geometric_and_milestones_say_how_they_were_found():
    from tdlib.distill.proxies import milestone_label, milestones
    from tdlib.studies.runs import curve_steps

    assert curve_steps(160, 5) == [0, 20, 40, 80, 160] and curve_steps(160, 0) == [] and curve_steps(3, 5) == [0, 1, 3]
    curve = [{"step": 0, "cosine": 0.1, "stsb": 50.0}, {"step": 10, "cosine": 0.5, "stsb": 70.0},
             {"step": 20, "cosine": 0.97, "stsb": 80.0}]
    m = milestones(curve, {"cosine": 1.0, "stsb": 100.0})
    assert m["cosine@95%"] == {"step": 20, "kind": "measured"}
    est = m["stsb@90%"]  # +10 points per doubling: 90 at 40 steps
    assert est["kind"].startswith("extrapolated") and est["step"] == pytest.approx(40.0)
    flat = milestones([{"step": 0, "cosine": 0.1, "stsb": 50.0}, {"step": 10, "cosine": 0.2, "stsb": 60.0},
                       {"step": 20, "cosine": 0.2, "stsb": 59.0}], {"cosine": 1.0, "stsb": 100.0})
    assert flat["stsb@90%"]["step"] is None and "flat" in flat["stsb@90%"]["kind"]
    # a nearly flat rise is not turned into a step count far past anything measured
    slow = milestones([{"step": 10, "cosine": 0.2, "stsb": 60.0}, {"step": 20, "cosine": 0.21, "stsb": 60.1}],
                      {"cosine": 1.0, "stsb": 100.0})
    assert slow["stsb@90%"]["step"] is None and slow["stsb@90%"]["kind"].startswith("beyond 100x")
    assert slow["stsb@90%"]["extrapolated_step"] > 100 * 20
    assert [milestone_label(m[k]) for k in ("cosine@95%", "stsb@90%")] == ["20", "~40 (extrapolated)"]
    assert milestone_label(slow["stsb@90%"]) == "beyond 100x the steps measured"
    assert milestone_label(flat["stsb@90%"]) == "not reached"


def test_init_experiment_measures_every_init_and_distils_from_the_data_aware_one(env, tmp_path, monkeypatch,
                                                                                 tiny_corpus):
    from tdlib.core.modeling import from_pretrained
    from tdlib.studies.inits import init_experiment

    monkeypatch.setenv("TDLIB_HELDOUT", str(tiny_corpus))
    glue = {**env, "tasks": ["rte"], "pooling": "mean", "general_steps": 2, "curve_points": 2, "proxy_sequences": 8,
            "general_objective": "all_layers_cos", "teacher_cache": True}
    params = {"teacher": env["teacher"], "ops": "san_ffn", "configs": [[8, 16]],
              "inits": ["zero", "pretrained", "whitened", "local", "II-whitened"], "calibration_sequences": 8,
              "fit_steps": 3, "fit_lr": 1e-2, "fit_batch": 4, "curve_configs": [[8, 16]], "curve_inits": ["local"],
              "seed": 0, "glue": glue}
    result = init_experiment(params, tmp_path, progress=False)
    assert [r["init"] for r in result["rows"]] == params["inits"]
    assert result["calibration"]["sequences"] == 8 and result["calibration"]["tokens"] >= 32
    for row in result["rows"]:
        assert len(row["hidden_error"]) == 2 and 0.0 <= row["weight_error"] and -1.0 <= row["cosine"] <= 1.0
    rows = {r["init"]: r for r in result["rows"]}
    assert rows["zero"]["weight_error"] == pytest.approx(1.0)
    assert rows["local"]["fit"]["steps"] == 3 and "final_loss" in rows["local"]["fit"]
    curve = result["curves"]["IV-8-16 init=local"]
    assert [p["step"] for p in curve["curve"]] == [0, 2] and curve["init"] == "local"
    saved = from_pretrained(next((tmp_path / "general").glob("IV-8-16_init-local-*")) / "model")
    assert saved.config.tdlib["init"] == "local"
    with pytest.raises(ConfigError, match="curve_points"):
        init_experiment({**params, "glue": {**glue, "curve_points": 0}}, tmp_path, progress=False)


def test_init_study_curves_share_03s_control_runs_and_keep_data_aware_options():
    """07's zero-map curve is 03's zero-map control (one spec, so one run folder); a data-aware init's spec
    carries its fit and calibration settings, which then key its run."""
    from tdlib.studies.inits import curve_spec
    from tdlib.studies.runs import control_specs
    from tdlib.studies.settings import settings

    glue = settings({"teacher": "minilm", "students": [[36, 192]], "ops": "san_ffn", "proxy_sequences": 256,
                     "general_objective": "all_layers_cos", "controls": [{"init": "zero"}]})
    params = {"ops": "san_ffn", "fit_steps": 100, "fit_lr": 3e-3, "fit_batch": 16, "calibration_sequences": 128}
    assert curve_spec(params, glue, 36, 192, "zero") == control_specs(glue)[0]
    local = curve_spec(params, glue, 36, 192, "local")
    assert local.fit == {"steps": 100, "lr": 3e-3, "batch_size": 16}
    assert local.calibration == {"sequences": 128, "skip": 256} and local.name == "IV-36-192 init=local"
    assert "fit" not in curve_spec(params, glue, 36, 192, "random").as_dict()


def test_task_seeds_give_the_mean_the_range_and_each_seeds_runs(env, tmp_path):
    """task_seeds repeats task distillation per seed; the seed-``seed`` run is the run without task_seeds."""
    params = {**env, "pooling": PAIR_HEADS, "tasks": ["rte"], "task_curve": [0, 3]}
    one = glue_experiment(settings(params), tmp_path, progress=False)
    many = glue_experiment(settings({**params, "task_seeds": [0, 1]}), tmp_path, progress=False)
    entry, single = many["tasks"]["rte"]["students"]["IV-8-16"], one["tasks"]["rte"]["students"]["IV-8-16"]
    assert set(entry["seeds"]) == {"0", "1"}
    assert entry["seeds"]["0"]["metrics"] == single["metrics"], "seed 0 is read back, not retrained"
    for key, (lo, hi) in entry["range"].items():
        values = [run["metrics"][key] for run in entry["seeds"].values()]
        assert (lo, hi) == (min(values), max(values))
        assert entry["metrics"][key] == pytest.approx(sum(values) / 2)
    assert [p["step"] for p in entry["curve"]] == [0, 3]
    assert entry["curve"][-1]["metrics"]["score"] == pytest.approx(entry["metrics"]["score"])
    row = many["summary"]["IV-8-16"]
    assert set(row["seeds"]) == {"0", "1"}
    assert row["percent_of_teacher"] == pytest.approx(sum(row["seeds"].values()) / 2)  # one task: mean of means


def test_task_seeds_are_checked():
    for bad in ([], [0, 0], [-1], "0,1", [True]):
        with pytest.raises(ConfigError, match="task_seeds"):
            settings({"task_seeds": bad})


def test_task_objective_trains_stage_1_on_every_layer_in_its_own_run(env, tmp_path):
    """task_objective sets stage 1's loss; the paper's loss keeps its run (and key), the other gets its own."""
    import json

    params = {**env, "pooling": PAIR_HEADS, "tasks": ["rte"]}
    glue_experiment(settings(params), tmp_path, progress=False)
    glue_experiment(settings({**params, "task_objective": "all_layers_cos"}), tmp_path, progress=False)
    runs = sorted(tmp_path.glob("task/rte/IV-8-16-*"))
    assert len(runs) == 2
    terms = [set(json.loads((run / "stage1" / "history.json").read_text())["loss"]) for run in runs]
    assert sorted(terms, key=len) == [{"loss", "att", "rep"}, {"loss", "att", "rep", "layers", "cos"}]
    with pytest.raises(ConfigError, match="task_objective"):
        settings({"task_objective": "every_layer"})


def test_a_glue_record_leaves_a_later_parameter_out_of_its_key_at_its_old_value(monkeypatch):
    """finetune_head_lr reached notebooks 03 and 05 after their records were made: at None it computes what they
    computed, so it stays out of the key (every earlier record, and 07's and 09's keys, hold); set, it is in it."""
    import tdlib.studies.experiments as ex
    from tdlib.studies.settings import keyed

    seen = []
    monkeypatch.setattr(ex, "cached", lambda name, params, compute, **kw: seen.append(params))
    monkeypatch.setattr(ex, "task_files", lambda task: [])  # the key alone: no data read
    glue_record = ex.glue_record
    glue_record({"tasks": ["rte"], "finetune_head_lr": None}, "cpu")
    glue_record({"tasks": ["rte"], "finetune_head_lr": {"rte": 1e-3}}, "cpu")
    assert seen == [{"tasks": ["rte"]}, {"tasks": ["rte"], "finetune_head_lr": {"rte": 1e-3}}]
    assert keyed({"finetune_lr": None, "finetune_head_lr": None}) == {"finetune_lr": None}


def test_teacher_seed_records_one_record_per_seed(monkeypatch):
    import tdlib.studies.experiments as ex

    calls = []
    monkeypatch.setattr(ex, "teacher_record", lambda params, profile, force=None, extra=None: calls.append(params)
                        or {"params": params})
    params = {"tasks": ["cola", "sst2", "rte"], "seed": 0, "finetune_lr": 3e-5}
    out = ex.teacher_seed_records(params, {"rte": [2, 1], "cola": [1]}, "cpu")
    assert list(out) == [1, 2]  # seed order; each seed's tasks in the notebook's task order
    assert [c["tasks"] for c in calls] == [["cola", "rte"], ["rte"]] and [c["seed"] for c in calls] == [1, 2]
    assert all(c["finetune_lr"] == 3e-5 for c in calls)  # the recipe itself is unchanged
    assert ex.teacher_seed_records(params, None, "cpu") == {} and len(calls) == 2


@pytest.mark.parametrize("extra_seeds, needle", [({"mnli": [1]}, "does not run"), ({"rte": []}, "non-empty list"),
                                                 ({"rte": [1.5]}, "integer"), ({"rte": 1}, "list"),
                                                 ({"rte": [0]}, "own seed 0"), ({"rte": [1, 1]}, "distinct")])
def test_teacher_seed_records_bad_input_is_one_error(extra_seeds, needle):
    from tdlib.studies.experiments import teacher_seed_records

    with pytest.raises(ConfigError, match=needle):
        teacher_seed_records({"tasks": ["cola", "rte"], "seed": 0}, extra_seeds, "cpu")
