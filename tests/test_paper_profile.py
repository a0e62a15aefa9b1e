"""A dry run of the `paper` profile's whole code path on stand-ins: eight GLUE tasks (MNLI with both dev
splits), a tiny BERT, a few steps per stage, and the multi-process path (2 CPU processes over gloo) that
`make reproduce PROFILE=paper` takes on a machine with several GPUs."""

import pytest

from tdlib.core.errors import ConfigError, DataError
from tdlib.data.glue import PAPER_TASKS, dev_splits, get_task, task_files
from tdlib.paper.reproduce import load_profile
from tdlib.studies.experiments import glue_record, resolve_processes
from tdlib.studies.settings import GLUE_DEFAULTS

STAND_INS = dict(students=[[8, 16]], baselines=[[1, 16]], max_train_examples=None, max_length=16, batch_size=4,
                 finetune_steps=2, general_steps=2, general_sequences=16, general_max_length=16, stage1_steps=1,
                 stage2_steps=1, checkpoint_every=0)


def test_paper_profile_runs_end_to_end_on_two_processes(monkeypatch, tmp_path, tiny_glue8_dir, tiny_corpus,
                                                         tiny_teacher_dir):
    monkeypatch.setenv("GLUE_DIR", str(tiny_glue8_dir))
    monkeypatch.setenv("TDLIB_CORPUS", str(tiny_corpus))
    monkeypatch.setenv("TDLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TDLIB_NUM_PROCESSES", "2")
    monkeypatch.setenv("TDLIB_RESULTS", str(tmp_path / "results"))
    paper = {k: v for k, v in load_profile("paper")["03_glue"].items() if k in GLUE_DEFAULTS}
    assert sorted(paper["tasks"]) == sorted(PAPER_TASKS) and paper["teacher"] == "bert-base-uncased"
    params = {**paper, **STAND_INS, "teacher": str(tiny_teacher_dir)}  # the paper's settings, tiny sizes
    record = glue_record(params, "paper", force=True)
    result = record["result"]
    assert set(result["tasks"]) == set(PAPER_TASKS)
    mnli = result["tasks"]["mnli"]
    assert {"acc_m", "acc_mm", "score_m", "score_mm"} <= set(mnli["metrics"]) and mnli["n_dev"] == 16
    assert set(mnli["data"]) == {"train", "dev_matched", "dev_mismatched"}
    for student in mnli["students"].values():
        assert {"acc_m", "acc_mm"} <= set(student["metrics"])
    # the GLUE average has nine columns: MNLI-m and MNLI-mm count separately, as in the paper
    teacher_cols = [t["metrics"]["score"] for k, t in result["tasks"].items() if k != "mnli"]
    teacher_cols += [mnli["metrics"]["score_m"], mnli["metrics"]["score_mm"]]
    assert result["summary"]["teacher"]["glue"] == pytest.approx(sum(teacher_cols) / 9)
    history = (tmp_path / "runs" / "paper" / "finetune").glob("rte-*/history.json")
    import json

    assert json.loads(next(history).read_text())["num_processes"] == 2
    assert record["provenance"]["profile"] == "paper"
    assert len(record["provenance"]["data"]) == sum(len(get_task(t).splits) for t in PAPER_TASKS)


def test_mnli_reads_both_dev_splits_and_wnli_is_refused_with_the_reason(tiny_glue8_dir):
    assert dev_splits("mnli") == ("dev_matched", "dev_mismatched") and dev_splits("rte") == ("dev",)
    assert [p.name for p in task_files("mnli", tiny_glue8_dir)] == ["train.tsv", "dev_matched.tsv",
                                                                     "dev_mismatched.tsv"]
    with pytest.raises(DataError, match="WNLI is left out, as in the paper"):
        get_task("wnli")


def test_process_count_is_checked(monkeypatch):
    assert resolve_processes(3) == 3 and resolve_processes("2") == 2
    monkeypatch.setenv("TDLIB_NUM_PROCESSES", "auto")
    assert resolve_processes() >= 1
    with pytest.raises(ConfigError, match="positive integer or 'auto'"):
        resolve_processes("many")
