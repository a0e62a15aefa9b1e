"""The GLUE and method experiments end to end on a tiny teacher, tiny GLUE folder and tiny corpus."""

import pytest

from tdlib.errors import ConfigError
from tdlib.experiments import glue_experiment, method_experiment, settings

TINY = dict(tasks=["rte", "stsb"], students=[[8, 16]], baselines=[[1, 16]], batch_size=8, max_length=16,
            finetune_steps=4, general_steps=3, general_sequences=24, general_max_length=16, stage1_steps=2,
            stage2_steps=3, checkpoint_every=2)


@pytest.fixture
def env(monkeypatch, tiny_glue_dir, tiny_corpus, tiny_teacher_dir):
    monkeypatch.setenv("GLUE_DIR", str(tiny_glue_dir))
    monkeypatch.setenv("TDLIB_CORPUS", str(tiny_corpus))
    return {**TINY, "teacher": str(tiny_teacher_dir)}


def test_glue_experiment_end_to_end_and_rerun(env, tmp_path):
    result = glue_experiment({**env, "pooling": "mean"}, tmp_path, progress=False)
    assert set(result["tasks"]) == {"rte", "stsb"}
    assert list(result["students"]) == ["IV-8-16", "dense-1L-16-70"]
    tucker, dense = result["students"].values()
    assert abs(tucker["params"] - dense["params"]) <= 16, "the baseline matches the Tucker budget"
    for task in result["tasks"].values():
        assert set(task["students"]) == set(result["students"]) and "score" in task["metrics"]
        assert task["n_train"] == 48 and task["n_dev"] == 24 and len(task["data"]["train"]) == 64  # sha256
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
    again = glue_experiment({**env, "pooling": "mean"}, tmp_path, progress=False)
    assert again["tasks"] == result["tasks"] and again["summary"] == result["summary"]


def test_method_experiment_trains_each_method_identically(env, tmp_path):
    result = method_experiment({**env, "task": "rte", "ratio": 8.0, "methods": ["IV", "cp", "tt-first"]}, tmp_path,
                               progress=False)
    assert set(result["methods"]) == {"IV", "cp", "tt-first"}
    for row in result["methods"].values():
        assert row["params"] <= result["budget"] and 0 <= row["metrics"]["acc"] <= 1 and row["init_error"] > 0
        assert 0 <= row["fidelity"]["agreement"] <= 1 and row["fidelity"]["soft_ce"] > 0


def test_unknown_experiment_parameters_are_named():
    with pytest.raises(ConfigError, match=r"unknown experiment parameter\(s\) \['studnets'\]"):
        settings({"studnets": [[1, 2]]})


def test_baselines_are_optional_per_student(tiny_bert):
    from tdlib.experiments import student_specs

    names = [s["name"] for s in student_specs(settings({"students": [[8, 16], [4, 8]], "baselines": [[1, 16]]}),
                                              tiny_bert)]
    assert names == ["IV-8-16", "dense-1L-16-70", "IV-4-8"]
    assert [s["name"] for s in student_specs(settings({"students": [[8, 16]], "baselines": []}), tiny_bert)] == [
        "IV-8-16"]


def test_a_refused_run_directory_fails_before_any_model_loads(env, tmp_path, monkeypatch):
    from tdlib import experiments
    from tdlib.models import load_tokenizer

    s = settings(env)
    out = tmp_path / "gen"
    out.mkdir()
    (out / "run.json").write_text('{"config": {"steps": 999}, "identity": {}}')

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the run directory was checked")

    monkeypatch.setattr(experiments, "load_model", no_loading)
    with pytest.raises(ConfigError, match="holds a run with a different configuration"):
        experiments.run_general(s, experiments.tucker_spec(8, 16), load_tokenizer(env["teacher"]), None, {}, out=out,
                                progress=False)
