"""The front page: the claims table's cells and verdicts, the README's blocks and its code, and where a notebook run
with parameters of its own writes."""

import re
from pathlib import Path

import nbformat
import pytest
import yaml

from tdlib.paper import claims as front
from tdlib.paper.readme import read_block
from tdlib.studies.records import ROOT, save_record

README = ROOT / "README.md"


def cells(table: str) -> list[str]:
    return [c.strip() for line in table.splitlines() if line.startswith("|") and not line.startswith("| ---")
            for c in line.strip().strip("|").split("|")]


def test_the_readme_claims_table_has_no_cell_over_200_characters():
    table = read_block("claims", README)
    assert len([line for line in table.splitlines() if line.startswith("| C")]) == 6
    long = [c for c in cells(table) if len(c) > front.MAX_CELL]
    assert not long, f"claims-table cells over {front.MAX_CELL} characters: {long}"


def test_every_cell_computed_from_the_committed_records_fits():
    table = front.rows()
    assert [r["claim"] for r in table] == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert all(r["verdict"] in front.VERDICTS for r in table)
    assert max(len(c) for c in cells(front.markdown(table))) <= front.MAX_CELL


def glue_result(student_scores: dict[str, list[float]], ratio: dict[str, float]) -> dict:
    """A GLUE record's result with two tasks (cola: majority 0.0, teacher 0.4; rte: majority 0.5, teacher 0.7)."""
    teacher, majority = {"cola": 0.4, "rte": 0.7}, {"cola": 0.0, "rte": 0.5}
    tasks = {t: {"metrics": {"score": teacher[t]}, "majority": {"score": majority[t]},
                 "students": {n: {"metrics": {"score": s[i]}} for n, s in student_scores.items()}}
             for i, t in enumerate(teacher)}
    students = {n: {"kind": "baseline" if n.startswith("dense") else "tucker", "ratio": ratio[n],
                    "params": 1_000_000, "tokens": 524_288, **({"budget_of": "IV-16-96"} if n.startswith("dense")
                                                                else {})} for n in student_scores}
    glue = {n: (s[0] + s[1]) / 2 for n, s in student_scores.items()}
    summary = {"teacher": {"glue": 0.55, "percent_of_teacher": 100.0},
               "majority class": {"glue": 0.25, "percent_of_teacher": 100 * 0.25 / 0.55},
               **{n: {"glue": g, "percent_of_teacher": 100 * g / 0.55} for n, g in glue.items()}}
    return {"tasks": tasks, "students": students, "summary": summary}


def test_the_gain_over_the_majority_class_counts_a_score_below_it_as_the_floor():
    res = glue_result({"IV-16-96": [0.2, 0.4], "dense-1L": [0.4, 0.7]}, {"IV-16-96": 48.0, "dense-1L": 48.0})
    # cola gains 0.2 of 0.4; rte's 0.4 is below its floor 0.5: no gain (not -0.1); teacher gains 0.6 in all
    assert front.gain_share(res, "IV-16-96") == pytest.approx(100 * 0.2 / 0.6)
    assert front.gain_share(res, "dense-1L") == pytest.approx(100.0)


def test_glue_verdicts_follow_the_papers_targets(tmp_path):
    for rte, verdict in ((0.66, "short at our budget"), (0.67, "reproduced")):  # 96.4% and 97.3% of the teacher
        res = glue_result({"IV-16-96": [0.4, rte], "dense-1L": [0.4, 0.7]}, {"IV-16-96": 47.8, "dense-1L": 47.8})
        save_record(tmp_path / "03_glue" / "g.json", {"teacher": "minilm"}, res, profile="cpu")
        c3 = {r["claim"]: r for r in front.rows(tmp_path)}["C3"]
        assert c3["verdict"] == verdict
    assert "of its gain over majority" in c3["ours"] and "dense peer" in c3["ours"] and "0.52M tokens" in c3["ours"]
    res = glue_result({"IV-16-96": [0.2, 0.5], "dense-1L": [0.4, 0.7]}, {"IV-16-96": 47.8, "dense-1L": 47.8})
    save_record(tmp_path / "03_glue" / "g.json", {"teacher": "minilm"}, res, profile="cpu")
    table = {r["claim"]: r for r in front.rows(tmp_path)}
    assert table["C3"]["verdict"] == "short at our budget" and table["C2"]["verdict"] == "pending"  # no 1/7 student
    assert table["C1"]["verdict"] == table["C4"]["verdict"] == "pending"


def test_speed_and_method_verdicts(tmp_path):
    row = {"kind": "tucker-factorized", "batch": 8, "seq_len": 128, "fraction_of_mac_limit": 0.8, "mac_ratio": 3.9,
           "rank_layer": 96, "rank_dim": 128, "decomposed_params": 1_783_296}
    for speedup, verdict in ((2.69, "not reproduced"), (2.7, "reproduced")):
        save_record(tmp_path / "04_speed" / "b.json", {"geometry": "bert-base"},
                    {"threads": 2, "rows": [{**row, "speedup": speedup}]}, profile="cpu")
        assert {r["claim"]: r for r in front.rows(tmp_path)}["C4"]["verdict"] == verdict
    # the interleaved benchmark, when recorded, decides by its interval, and its other runtimes are cited
    timed = {**row, "model": "IV-96-128 factorized", "budget": 1_783_296, "precision": "fp32", "speedup": 2.9}
    rows = [{**timed, "runtime": "eager", "low": 2.65, "high": 3.1}, {**timed, "runtime": "onnxruntime", "low": 2.8,
                                                                       "high": 3.0}]
    save_record(tmp_path / "04_runtimes" / "r.json", {"geometry": "bert-base"},
                {"threads": 2, "host": {"cpu_model": "Some(R) CPU(TM) Processor", "isa": ["avx2", "avx512f"]},
                 "rows": rows}, profile="cpu")
    c4 = {r["claim"]: r for r in front.rows(tmp_path)}["C4"]
    assert c4["verdict"] == "within noise of the target"
    assert "2.90x [2.65, 3.10]" in c4["ours"] and "onnxruntime 2.90x" in c4["ours"]
    assert "(Some CPU, avx512f)" in c4["ours"]  # the CPU's name without marks, its widest instruction set
    # another host's record (custom parameters, newer) joins notebook 04's host table but does not move the row
    other = [{**r, "speedup": 3.5, "low": 3.4, "high": 3.6} for r in rows]
    save_record(tmp_path / "04_runtimes" / "s.json", {"geometry": "bert-base", "rounds": 11},
                {"threads": 2, "host": {"cpu_model": "Other CPU", "isa": ["amx_bf16"]}, "rows": other},
                profile="custom")
    assert {r["claim"]: r for r in front.rows(tmp_path)}["C4"]["ours"] == c4["ours"]
    # the benchmark repeated across processes, when recorded, decides by its interval over processes
    pooled = [{**rows[0], "speedup": 2.8, "low": 2.72, "high": 2.88, "processes": 8}]
    save_record(tmp_path / "04_c4" / "p.json", {"geometry": "bert-base", "processes": 8},
                {"threads": 2, "host": {"cpu_model": "Some(R) CPU(TM) Processor", "isa": ["avx2", "avx512f"]},
                 "rows": pooled}, profile="cpu")
    c4 = {r["claim"]: r for r in front.rows(tmp_path)}["C4"]
    assert c4["verdict"] == "reproduced" and "2.80x [2.72, 2.88] over 8 processes" in c4["ours"]
    assert "onnxruntime 2.90x" in c4["ours"]  # the other runtimes, from the runtime benchmark
    errors = {"IV": 0.90, "cp": 0.92}
    save_record(tmp_path / "02_methods" / "a.json", {"tensor": "minilm"},
                [{"method": m, "budget_ratio": 48.0, "rel_error": e} for m, e in errors.items()], profile="cpu")
    assert {r["claim"]: r for r in front.rows(tmp_path)}["C1"]["verdict"] == "reproduced"
    methods = {"IV": {"metrics": {"score": 0.6}}, "cp": {"metrics": {"score": 0.7}}}
    save_record(tmp_path / "02_methods_distilled" / "d.json", {}, {"task": "sst2", "ratio": 48.0, "methods": methods})
    c1 = {r["claim"]: r for r in front.rows(tmp_path)}["C1"]
    assert c1["verdict"] == "mixed" and "SST-2 after task distillation: Tucker #2 of 2" in c1["ours"]


def test_the_readmes_python_runs(tmp_path, monkeypatch):
    """Every python block of the README, in order, in one namespace (a scratch folder as the working directory)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 (the README's own code)
    assert namespace["counts"].ratio > 40 and (tmp_path / "iv-16-96" / "config.json").is_file()


@pytest.fixture
def profiles(tmp_path, monkeypatch):
    """A notebook with parameters ``profile`` and ``x`` (default 1), the committed profile giving x = 1 and profile
    ``t`` giving x = 2, in scratch folders that :mod:`tdlib.paper.reproduce` reads."""
    from tdlib.paper import reproduce

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "tdlib", "display_name": "tdlib", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("profile = 'cpu'\nx = 1", metadata={"tags": ["parameters"]})]
    (tmp_path / "nb").mkdir()
    nbformat.write(nb, tmp_path / "nb" / "97_p.ipynb")
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "cpu.yaml").write_text(yaml.safe_dump({"97_p": {"x": 1}}))
    (tmp_path / "params" / "t.yaml").write_text(yaml.safe_dump({"97_p": {"x": 2}}))
    monkeypatch.setattr(reproduce, "NOTEBOOKS", tmp_path / "nb")
    monkeypatch.setattr(reproduce, "PARAMS", tmp_path / "params")
    for var in ("TDLIB_RESULTS", "TDLIB_FIGURES"):
        monkeypatch.delenv(var, raising=False)
    for var in ("GLUE_DIR", "TDLIB_CORPUS"):  # set here, so the run leaves them as they are
        monkeypatch.setenv(var, str(tmp_path))
    return reproduce


def test_a_run_with_parameters_of_its_own_writes_to_its_own_folders(profiles):
    import os

    ns = {"profile": "cpu", "x": 1}
    run = profiles.notebook_parameters("97_p", ns)
    assert run.profile == "cpu" and "TDLIB_RESULTS" not in os.environ  # the committed profile: results/, figures/
    ns = {"profile": "t", "x": 1}
    run = profiles.notebook_parameters("97_p", ns)
    assert ns["x"] == 2 and run.profile == "t"  # left at the default: the profile's value
    assert Path(os.environ["TDLIB_RESULTS"]) == ROOT / "results" / "t"
    ns = {"profile": "cpu", "x": 5}
    run = profiles.notebook_parameters("97_p", ns)
    assert run.profile == "custom" and run.overrides == ("x",)
    assert Path(os.environ["TDLIB_RESULTS"]) == ROOT / "results" / "custom" / run.custom_key()
    assert Path(os.environ["TDLIB_FIGURES"]) == ROOT / "figures" / "custom" / run.custom_key()
    profiles.notebook_parameters("97_p", {"profile": "cpu", "x": 1})  # the same kernel, the committed run again
    assert "TDLIB_RESULTS" not in os.environ and "TDLIB_FIGURES" not in os.environ


def test_a_caller_that_names_the_output_folders_keeps_them(profiles, monkeypatch, tmp_path):
    import os

    monkeypatch.setenv("TDLIB_RESULTS", str(tmp_path / "mine"))
    profiles.notebook_parameters("97_p", {"profile": "cpu", "x": 5})
    assert os.environ["TDLIB_RESULTS"] == str(tmp_path / "mine")
