import json

import pytest

from tdlib.core.errors import ConfigError
from tdlib.paper.reproduce import check_parameters, load_profile, notebook_path


def test_profiles_name_existing_notebooks_with_valid_parameters():
    for profile in ("cpu", "smoke", "paper", "quick"):
        for name, params in load_profile(profile).items():
            check_parameters(notebook_path(name), params)


def test_the_committed_profile_is_every_notebooks_own_defaults():
    """Run All on a committed notebook must hit the record `make reproduce` wrote: no drift between the two."""
    from tdlib.paper.reproduce import COMMITTED, check_committed_defaults

    for name, params in load_profile(COMMITTED).items():
        check_committed_defaults(name, params)


def test_unknown_parameter_fails_with_the_list_of_known_ones():
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) \['rank'\]; its parameters are \["):
        check_parameters(notebook_path("04_speed"), {"rank": 3})


def test_ill_typed_parameter_fails():
    with pytest.raises(ConfigError, match="parameter threads must be int, got str '2'"):
        check_parameters(notebook_path("04_speed"), {"threads": "2"})
    with pytest.raises(ConfigError, match="parameter peers must be bool"):
        check_parameters(notebook_path("04_speed"), {"peers": 1})


def test_unknown_profile():
    with pytest.raises(ConfigError, match="unknown profile 'gpu'"):
        load_profile("gpu")


def test_claims_table_reads_records_and_reports_losses(tmp_path):
    from tdlib.paper.report import claims
    from tdlib.studies.records import save_record

    rows = [{"method": m, "budget_ratio": 48.0, "rel_error": e} for m, e in (("IV", 0.93), ("cp", 0.92), ("II", 0.96))]
    save_record(tmp_path / "02_methods" / "a.json", {"tensor": "minilm"}, rows, seed=0, profile="cpu")
    row = {"kind": "tucker-factorized", "batch": 8, "seq_len": 128, "fraction_of_mac_limit": 0.8, "mac_ratio": 3.9}
    speed = {"threads": 2, "rows": [
        {**row, "rank_layer": 72, "rank_dim": 384, "decomposed_params": 11_217_024, "speedup": 1.3},
        {**row, "rank_layer": 96, "rank_dim": 128, "decomposed_params": 1_783_296, "speedup": 3.1},
        {**row, "rank_layer": 36, "rank_dim": 64, "decomposed_params": 300_000, "speedup": 5.0}]}
    save_record(tmp_path / "04_speed" / "b.json", {"geometry": "bert-base"}, speed, seed=0, profile="cpu")
    sweep = {"threads": 2, "rows": [{**row, "rank_layer": 72, "rank_dim": 64, "decomposed_params": 400_000,
                                     "speedup": 4.9}]}
    save_record(tmp_path / "04_speed" / "c.json", {"geometry": "bert-base", "sweep": [[72, 64]]}, sweep)
    table = {r["claim"]: r for r in claims(tmp_path)}
    assert table["C1"]["status"] == "not supported (weights)" and "best cp, Tucker #2" in table["C1"]["ours"]
    assert table["C4"]["status"] == "reproduced" and table["C4"]["ours"].startswith("3.10x for IV-96-128")
    assert table["C2"]["status"] == "pending"


def test_a_readme_block_is_rewritten_whole_literally_and_idempotently(tmp_path):
    from tdlib.paper.readme import block_name, read_block, write_block

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- claims:start -->\ncpu\n<!-- claims:end -->\n"
                      "<!-- claims:quick:start -->\nold\n<!-- claims:quick:end -->\nend\n")
    assert block_name("claims", "quick") == "claims:quick" and block_name("claims", "cpu") == "claims"
    assert write_block("claims:quick", "a \\1 b", readme)
    assert read_block("claims:quick", readme) == "a \\1 b" and read_block("claims", readme) == "cpu"  # taken literally
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("end\n")
    assert not write_block("claims:quick", "a \\1 b", readme)  # idempotent
    with pytest.raises(ConfigError, match=r"lacks the <!-- claims:paper:start --> / <!-- claims:paper:end -->"):
        write_block("claims:paper", "x", readme)


def test_a_profile_other_than_the_committed_one_writes_its_own_results_and_figures(monkeypatch, tmp_path):
    from tdlib.paper.reproduce import COMMITTED, output_roots
    from tdlib.studies.records import ROOT

    monkeypatch.delenv("TDLIB_RESULTS", raising=False)
    monkeypatch.delenv("TDLIB_FIGURES", raising=False)
    assert output_roots(COMMITTED) == {"TDLIB_RESULTS": ROOT / "results", "TDLIB_FIGURES": ROOT / "figures"}
    assert output_roots("quick") == {"TDLIB_RESULTS": ROOT / "results" / "quick",
                                     "TDLIB_FIGURES": ROOT / "figures" / "quick"}
    monkeypatch.setenv("TDLIB_RESULTS", str(tmp_path))  # an explicit folder wins (make test's smoke run)
    assert output_roots("quick")["TDLIB_RESULTS"] == tmp_path


def test_a_whole_profile_run_that_computes_records_its_wall_time_and_whether_it_trained_from_nothing(
        monkeypatch, tmp_path, tiny_profile):
    """The timing record says what a run cost: written when a notebook computed a record, 'cold' when the run
    trained with no training runs to reuse. A run that only read records writes nothing (git status stays clean)."""
    import nbformat

    from tdlib.paper import reproduce
    from tdlib.studies.records import load_record

    code = ("import os, pathlib\nfrom tdlib.studies.records import cached\ncached('tiny', {'x': x}, lambda: x)\n"
            "if x == 3:  # a notebook that trains\n"
            "    pathlib.Path(os.environ['TDLIB_RUNS'], 't', 'finetune').mkdir(parents=True, exist_ok=True)\n"
            "print(os.environ['TDLIB_FIGURES'])")
    tiny_profile(code, {"98_a": {"x": 2}, "99_b": {"x": 3}})
    monkeypatch.delenv("FORCE", raising=False)  # a forced run earlier in this process sets it
    for var, sub in (("TDLIB_RESULTS", "res"), ("TDLIB_FIGURES", "fig"), ("TDLIB_RUNS", "runs")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    timing = tmp_path / "res" / "reproduce" / "t.json"
    reproduce.run("t", out_dir=tmp_path / "out")
    rec = load_record(timing)
    assert rec["result"]["complete"] and rec["result"]["cold"] and rec["provenance"]["profile"] == "t"
    assert sorted(rec["result"]["notebooks"]) == ["98_a", "99_b"]
    assert rec["result"]["total_seconds"] == pytest.approx(sum(rec["result"]["notebooks"].values()), abs=0.2)
    executed = nbformat.read(tmp_path / "out" / "99_b.ipynb", 4)
    assert str(tmp_path / "fig") in json.dumps(executed.cells[-1].outputs)
    assert "papermill" not in executed.metadata and "execution" not in executed.cells[-1].metadata  # not volatile
    assert "computing it now" in json.dumps(executed.cells[-1].outputs)  # said before it computed
    timing.unlink()
    reproduce.run("t", out_dir=tmp_path / "out")  # every record cached: nothing computed, nothing written
    assert not timing.exists()
    again = (tmp_path / "out" / "99_b.ipynb").read_bytes()
    reproduce.run("t", out_dir=tmp_path / "out")  # and the same notebook, byte for byte
    assert (tmp_path / "out" / "99_b.ipynb").read_bytes() == again and b"computing it now" not in again
    reproduce.run("t", out_dir=tmp_path / "out", force=True)  # recomputed, with training runs to reuse: not cold
    monkeypatch.delenv("FORCE")
    assert not load_record(timing)["result"]["cold"]
    reproduce.run("t", only=["98_a"], out_dir=tmp_path / "out", force=True)  # a partial run leaves it alone
    monkeypatch.delenv("FORCE")
    assert sorted(load_record(timing)["result"]["notebooks"]) == ["98_a", "99_b"]


def _glue_record(root, pct, teacher_glue=None):
    from tdlib.studies.records import save_record

    students = {"IV-36-192": {"kind": "tucker", "ratio": 7.19},
                "dense-1L-384-1155": {"kind": "baseline", "ratio": 7.19, "budget_of": "IV-36-192"},
                "IV-16-96": {"kind": "tucker", "ratio": 47.75}}
    teacher = {"percent_of_teacher": 100.0, **({"glue": teacher_glue} if teacher_glue is not None else {})}
    summary = {"teacher": teacher, **{n: {"percent_of_teacher": p} for n, p in zip(students, pct, strict=True)}}
    save_record(root / "03_glue" / "g.json", {"teacher": "minilm"},
                {"tasks": {"rte": {}, "mrpc": {}}, "students": students, "summary": summary}, profile="cpu")


def test_method_ranking_keeps_ties_and_ranks_fidelity_lowest_first():
    from tdlib.paper.report import method_ranking

    res = {"methods": {
        "IV": {"metrics": {"score": 0.8}, "fidelity": {"soft_ce": 0.40},
               "general": {"curve": [{"stsb": 60.0}, {"stsb": 75.0}]}},
        "cp": {"metrics": {"score": 0.8}, "fidelity": {"soft_ce": 0.45},
               "general": {"curve": [{"stsb": 60.0}, {"stsb": 77.0}]}},
        "II": {"metrics": {"score": 0.7}, "fidelity": {"soft_ce": 0.30}},
        "tt-first": {"skipped": "over budget"}}}
    ranks = method_ranking(res)
    assert ranks["score"]["best"] == ["IV", "cp"] and ranks["score"]["tucker_place"] == 1  # a tie is kept
    assert ranks["soft_ce"]["order"] == ["II", "IV", "cp"] and ranks["soft_ce"]["tucker_place"] == 2
    assert ranks["zero_shot"]["best"] == ["cp"] and ranks["zero_shot"]["tucker_place"] == 2
    assert "tt-first" not in ranks["score"]["values"]
    from tdlib.paper.report import _c1_distilled

    for m, lo, hi in (("IV", 0.78, 0.82), ("cp", 0.79, 0.81), ("II", 0.69, 0.71)):
        res["methods"][m].update(seeds={"0": {}, "1": {}}, range={"score": [lo, hi]})
    text, verdict = _c1_distilled({**res, "task": "sst2", "ratio": 48.0}, "after")
    assert "best IV/cp (0.800), Tucker #1 (0.800) (means of 2 seeds; ranges IV 0.780-0.820)" in text
    assert verdict == "not supported by fidelity" and "closest to the teacher (dev soft CE) II (0.3000)" in text
    del res["methods"]["IV"]
    assert method_ranking(res)["score"]["tucker"] is None and method_ranking(res)["score"]["tucker_place"] is None


def test_c1_row_reads_the_task_only_and_the_general_distillation_records(tmp_path):
    from tdlib.paper.report import claim_c1
    from tdlib.studies.records import save_record

    save_record(tmp_path / "02_methods" / "a.json", {"tensor": "minilm"},
                [{"method": "IV", "budget_ratio": 48.0, "rel_error": 0.9},
                 {"method": "cp", "budget_ratio": 48.0, "rel_error": 0.8}], profile="cpu")

    def row(score, ce, stsb=None):
        out = {"metrics": {"score": score}, "fidelity": {"agreement": score, "soft_ce": ce}}
        return {**out, "general": {"curve": [{"step": 0, "stsb": 60.0}, {"step": 256, "stsb": stsb}]}} if stsb else out

    save_record(tmp_path / "02_methods_distilled" / "t.json", {"task": "sst2", "ratio": 48.0},
                {"task": "sst2", "ratio": 48.0, "methods": {"IV": row(0.51, 0.69), "cp": row(0.51, 0.60)}})
    c1 = claim_c1(tmp_path)
    assert c1["status"] == "not supported (weights), not supported by fidelity (distilled)"
    assert "all 2 methods tie on the dev score (0.510); closest to the teacher (dev soft CE) cp" in c1["ours"]
    save_record(tmp_path / "02_methods_distilled" / "g.json", {"task": "sst2", "ratio": 48.0, "general": True},
                {"task": "sst2", "ratio": 48.0,
                 "methods": {"IV": row(0.80, 0.40, stsb=75.0), "cp": row(0.78, 0.45, stsb=76.5)}})
    c1 = claim_c1(tmp_path)
    assert c1["status"] == ("not supported (weights), not supported by fidelity (distilled), "
                            "supported (general + task distilled)")
    assert ("after the same general distillation (decomposed from the pre-trained teacher) and task distillation "
            "on sst2 at 1/48: best IV (0.800), Tucker #1 (0.800)") in c1["ours"]
    assert c1["ours"].endswith("zero-shot STS-B after general distillation: best cp (76.5), Tucker #2 (75.0)")
    assert c1["source"].split(", ")[1:] == [str(tmp_path / "02_methods_distilled" / n) for n in ("t.json", "g.json")]


def test_glue_claims_pick_students_by_compression(tmp_path):
    from tdlib.paper.report import claims
    from tdlib.studies.records import save_record

    _glue_record(tmp_path, [99.5, 90.0, 97.0])
    save_record(tmp_path / "02_methods" / "a.json", {"tensor": "minilm"},
                [{"method": "IV", "budget_ratio": 48.0, "rel_error": 0.9}], profile="cpu")
    methods = {"IV": {"metrics": {"score": 0.7}}, "cp": {"metrics": {"score": 0.7}}, "II": {"metrics": {"score": 0.6}}}
    save_record(tmp_path / "02_methods_distilled" / "d.json", {}, {"task": "mrpc", "ratio": 48.0, "methods": methods})
    table = {r["claim"]: r for r in claims(tmp_path)}
    assert table["C2"]["status"] == "on par (within 1 point)" and table["C2"]["ours"].startswith("IV-36-192 (7.2x)")
    assert "equal-budget dense dense-1L-384-1155: 90.0%" in table["C2"]["ours"]
    assert table["C3"]["status"] == "reproduced" and table["C3"]["ours"].startswith("IV-16-96 (47.8x) keeps 97.0%")
    assert table["C5"]["status"] == "supported" and "rte, mrpc" in table["C5"]["ours"]
    assert "best IV/cp (0.700), Tucker #1" in table["C1"]["ours"] and "tied (distilled)" in table["C1"]["status"]
    assert "teacher's GLUE average:" not in table["C2"]["ours"]  # the record does not give it
    _glue_record(tmp_path, [95.0, 90.0, 80.0], teacher_glue=0.6)
    table = {r["claim"]: r for r in claims(tmp_path)}
    assert table["C2"]["ours"].endswith("the teacher's GLUE average: 60.0")
    save_record(tmp_path / "08_teacher" / "t.json", {"teacher": "minilm"},
                {"tasks": {"rte": {}, "mrpc": {}}, "glue": 0.7}, profile="cpu")
    save_record(tmp_path / "08_teacher" / "u.json", {"teacher": "minilm"}, {"tasks": {"rte": {}}, "glue": 0.9})
    table = {r["claim"]: r for r in claims(tmp_path)}  # 08's record of other tasks is not this teacher's level
    assert table["C3"]["ours"].endswith("the teacher's GLUE average: 60.0 (notebook 08's fine-tuning recipe: 70.0)")
    save_record(tmp_path / "08_teacher" / "t.json", {"teacher": "minilm", "pooling": "mean"},
                {"tasks": {"rte": {}, "mrpc": {}}, "glue": 0.7}, profile="cpu")
    table = {r["claim"]: r for r in claims(tmp_path)}  # a teacher read by other heads says so
    assert table["C3"]["ours"].endswith("(notebook 08's fine-tuning recipe, its task heads pooling mean: 70.0)")
    save_record(tmp_path / "08_teacher" / "v.json", {"teacher": "minilm", "pooling": "mean"},
                {"tasks": {"rte": {}, "mrpc": {}}, "glue": 0.65}, profile="cpu")
    table = {r["claim"]: r for r in claims(tmp_path)}  # a later, weaker recipe does not hide the best one
    assert table["C3"]["ours"].endswith("(notebook 08's best fine-tuning recipe of 2 recorded, its task heads "
                                        "pooling mean: 70.0)")
    assert [table[c]["status"] for c in ("C2", "C3", "C5")] == ["falls short at this budget"] * 3
    save_record(tmp_path / "08_teacher" / "w.json", {"teacher": "minilm"},
                {"tasks": {"rte": {}, "mrpc": {}}, "glue": 0.6}, profile="cpu")
    for name in ("t", "v"):  # the earlier ones, weaker now
        save_record(tmp_path / "08_teacher" / f"{name}.json", {"teacher": "minilm", "pooling": "mean"},
                    {"tasks": {"rte": {}, "mrpc": {}}, "glue": 0.55}, profile="cpu")
    table = {r["claim"]: r for r in claims(tmp_path)}  # 03's teacher is 08's best recipe: its level, said once
    assert table["C3"]["ours"].endswith("the teacher's GLUE average: 60.0 (notebook 08's best fine-tuning recipe of 3 "
                                        "recorded)")
    # with task seeds, each model's % comes with the range of its seeds' own averages
    record = tmp_path / "03_glue" / "g.json"
    data = json.loads(record.read_text())
    data["result"]["summary"]["IV-36-192"]["seeds"] = {"0": 93.0, "1": 95.5, "2": 96.5}
    record.write_text(json.dumps(data))
    table = {r["claim"]: r for r in claims(tmp_path)}
    assert table["C2"]["ours"].startswith("IV-36-192 (7.2x) keeps 95.0% (mean of 3 seeds, 93.0-96.5) (equal-budget")
    assert table["C6"]["status"] == "pending"


def _teacher_rec(seed: int, scores: dict[str, float]) -> dict:
    """A notebook-08 record as the seed helpers read it: params' seed, each task's dev score."""
    return {"params": {"seed": seed}, "result": {"tasks": {t: {"metrics": {"score": v}} for t, v in scores.items()}}}


def test_seed_spread_and_glue_at_the_seed_mean():
    from tdlib.paper.report import seed_mean_glue, seed_spread

    record = _teacher_rec(0, {"cola": 0.30, "sst2": 0.90, "rte": 0.60})
    seeds = {1: _teacher_rec(1, {"cola": 0.36, "rte": 0.56}), 2: _teacher_rec(2, {"rte": 0.55})}
    rows = {r["task"]: r for r in seed_spread(record, seeds)}
    assert set(rows) == {"cola", "rte"}  # SST-2 ran at one seed: no spread to give
    assert rows["rte"]["seeds"] == [0, 1, 2] and rows["rte"]["scores"] == pytest.approx([60, 56, 55])
    assert [rows["rte"][k] for k in ("mean", "min", "max")] == pytest.approx([57, 55, 60])
    assert rows["cola"]["std"] == pytest.approx(4.2426, abs=1e-3)  # sample std of 30 and 36
    assert seed_mean_glue(record, list(rows.values())) == pytest.approx((0.33 + 0.90 + 0.57) / 3)


def test_teacher_level_gives_notebook_08s_seed_mean(tmp_path):
    from tdlib.paper.report import claims, seed_records_of
    from tdlib.studies.records import load_record, save_record

    _glue_record(tmp_path, [95.0, 90.0, 80.0], teacher_glue=0.6)
    recipe = {"teacher": "minilm", "tasks": ["rte", "mrpc"], "finetune_lr": 3e-5, "seed": 0}
    tasks = {"rte": {"metrics": {"score": 0.60}}, "mrpc": {"metrics": {"score": 0.80}}}
    save_record(tmp_path / "08_teacher" / "t.json", recipe, {"tasks": tasks, "glue": 0.7}, profile="cpu")
    for seed, score in ((1, 0.50), (2, 0.55)):  # RTE re-run at two more seeds
        save_record(tmp_path / "08_teacher" / f"s{seed}.json", {**recipe, "seed": seed, "tasks": ["rte"]},
                    {"tasks": {"rte": {"metrics": {"score": score}}}, "glue": score}, profile="cpu")
    save_record(tmp_path / "08_teacher" / "o.json", {**recipe, "seed": 3, "finetune_lr": 1e-4, "tasks": ["rte"]},
                {"tasks": {"rte": {"metrics": {"score": 0.9}}}, "glue": 0.9}, profile="cpu")  # another recipe
    # a seed re-run is not a recipe of its own, even with all of the recipe's tasks
    save_record(tmp_path / "08_teacher" / "s4.json", {**recipe, "seed": 4},
                {"tasks": {"rte": {"metrics": {"score": 0.65}}, "mrpc": {"metrics": {"score": 0.95}}}, "glue": 0.8},
                profile="cpu")
    best = load_record(tmp_path / "08_teacher" / "t.json")
    others = [load_record(p) for p in sorted((tmp_path / "08_teacher").glob("*.json"))]
    assert list(seed_records_of(best, others)) == [1, 2, 4]
    c3 = {r["claim"]: r for r in claims(tmp_path)}["C3"]["ours"]
    # RTE at (60 + 50 + 55 + 65) / 4 = 57.5, MRPC at (80 + 95) / 2 = 87.5: GLUE (57.5 + 87.5) / 2 = 72.5
    assert c3.endswith("the teacher's GLUE average: 60.0 (notebook 08's fine-tuning recipe: 70.0; 72.5 at the seed "
                       "mean of every task over 2-4 seeds (rte 50.0-65.0, mrpc 80.0-95.0))")
    (tmp_path / "08_teacher" / "s4.json").unlink()  # RTE alone re-run: named; (60 + 50 + 55) / 3 = 55
    c3 = {r["claim"]: r for r in claims(tmp_path)}["C3"]["ours"]
    assert c3.endswith("(notebook 08's fine-tuning recipe: 70.0; 67.5 at the seed mean of rte over 3 seeds "
                       "(rte 50.0-60.0))")


def test_curves_give_trends_zero_shot_and_the_protocol_1_verdict(tmp_path):
    from tdlib.paper.report import claims, trend
    from tdlib.studies.records import save_record

    assert trend([{"step": 0, "stsb": 50}, {"step": 40, "stsb": 60}, {"step": 80, "stsb": 63}]) == "closing"
    assert trend([{"step": 0, "stsb": 50}, {"step": 40, "stsb": 60}, {"step": 80, "stsb": 60.5}]) == "flat"
    assert trend([{"step": 0, "stsb": 50}]) is None

    def curve(*v):
        return [{"step": s, "stsb": x, "cosine": x / 100} for s, x in zip((0, 40, 80), v, strict=True)]

    tasks = {"rte": {"students": {n: {"steps": [20, 40]} for n in ("IV-36-192", "IV-16-96")}}}
    students = {"IV-36-192": {"kind": "tucker", "ratio": 7.19, "init": "pretrained", "objective": "all_layers_cos",
                              "curve": curve(60, 70, 75), "tokens": 327_680, "steps": 160},
                "IV-16-96": {"kind": "tucker", "ratio": 47.75, "curve": curve(58, 60, 60.2), "tokens": 327_680,
                             "steps": 160}}
    controls = {"IV-36-192 init=zero": {"init": "zero", "objective": "all_layers_cos", "curve": curve(55, 68, 74.5)}}
    summary = {"teacher": {"percent_of_teacher": 100.0}, "IV-36-192": {"percent_of_teacher": 80.0},
               "IV-16-96": {"percent_of_teacher": 70.0}}
    save_record(tmp_path / "03_glue" / "g.json", {"teacher": "minilm"},
                {"tasks": tasks, "students": students, "controls": controls, "summary": summary,
                 "proxies": {"teacher": {"stsb": 80.0, "cosine": 1.0}}}, profile="cpu")
    table = {r["claim"]: r for r in claims(tmp_path)}
    assert table["C2"]["status"] == "falls short at this budget (trend of its zero-shot STS-B curve: closing)"
    assert table["C3"]["status"].endswith("(trend of its zero-shot STS-B curve: flat)")
    assert "0.33M tokens of general distillation (160 steps), task stages 20+40 steps" in table["C2"]["ours"]
    assert "zero-shot STS-B dev Spearman: teacher 80.0, IV-36-192 75.0 (94% of it)" in table["C5"]["ours"]
    assert table["C6"]["status"] == "decomposition init: no gain over the controls"  # 75.0 vs 74.5
    assert "pretrained 75.0 / 0.750, zero 74.5 / 0.745" in table["C6"]["ours"]
    # notebook 07: the data-aware init before distillation, and its curve against 03's plain student (found by
    # the hash of 03's parameters, as 07 records them)
    from tdlib.studies.records import record_path

    glue_params = {"teacher": "minilm"}
    record_path("03_glue", glue_params, tmp_path).write_text((tmp_path / "03_glue" / "g.json").read_text())
    rows = [{"config": "IV-36-192", "init": i, "stsb": v, "cosine": v / 100}
            for i, v in (("zero", 60.0), ("pretrained", 60.5), ("local", 70.0))]
    local = {"name": "IV-36-192 init=local", "init": "local", "steps": 160, "rank_layer": 36, "rank_dim": 192,
             "curve": curve(70, 74, 77)}
    control = {**local, "name": "IV-36-192 init=random", "init": "random", "curve": curve(60, 70, 80)}
    save_record(tmp_path / "07_init" / "i.json", {"glue": glue_params},
                {"rows": rows, "curves": {"IV-36-192 init=local": local, "IV-36-192 init=random": control}},
                profile="cpu")
    table = {r["claim"]: r for r in claims(tmp_path)}
    assert "zero 60.0 / 0.600, pretrained 60.5 / 0.605, local 70.0 / 0.700" in table["C6"]["ours"]
    assert "160 general-distillation steps: IV-36-192 local 77.0 / 0.770 vs pretrained 75.0 / 0.750" in table["C6"][
        "ours"]
    assert "IV-36-192 random 80.0 / 0.800 vs pretrained 75.0 / 0.750" in table["C6"]["ours"]
    assert table["C6"]["status"].endswith("data-aware init starts closer; after distillation: ahead at IV-36-192")
    assert "07_init" in table["C6"]["source"]


def test_c2_and_c3_cite_the_longer_task_distillation_of_notebook_09(tmp_path):
    from tdlib.paper.report import claims
    from tdlib.studies.records import save_record

    glue_params = {"teacher": "minilm", "stage2_steps": 30, "task_lr": 2e-3}
    tasks = {"rte": {"students": {n: {"steps": [10, 30]} for n in ("IV-36-192", "IV-16-96")}}}
    students = {"IV-36-192": {"kind": "tucker", "ratio": 7.19}, "IV-16-96": {"kind": "tucker", "ratio": 47.75}}
    summary = {"teacher": {"percent_of_teacher": 100.0}, "IV-36-192": {"percent_of_teacher": 60.0},
               "IV-16-96": {"percent_of_teacher": 58.0}}
    save_record(tmp_path / "03_glue" / "g.json", glue_params, {"tasks": tasks, "students": students,
                                                               "summary": summary}, profile="cpu")

    def run(student, lr, *pcts):
        return {"student": student, "task_lr": lr, "stage2_steps": 160,
                "glue": [{"step": s, "percent_of_teacher": p} for s, p in zip((0, 80, 160), pcts, strict=True)]}

    save_record(tmp_path / "09_task_budget" / "b.json", {"glue": glue_params, "stage2_steps": 160},
                {"students": {"a": run("IV-36-192", 2e-3, 55.0, 60.0, 64.0), "b": run("IV-16-96", 2e-3, 55, 58, 58.5)}},
                profile="cpu")
    save_record(tmp_path / "09_task_budget" / "other.json", {"glue": {"teacher": "bert"}, "stage2_steps": 160},
                {"students": {"a": run("IV-36-192", 2e-3, 10.0, 20.0, 90.0)}}, profile="cpu")
    table = {r["claim"]: r for r in claims(tmp_path)}
    assert table["C2"]["status"] == ("falls short at this budget (trend of its task distillation's stage 2: closing "
                                     "slowly: ~9 more doublings to 100% of the teacher at that rate)")  # (100-64)/4
    assert table["C2"]["ours"].endswith("along a longer stage 2 (notebook 09; seed 0), task lr 0.002: 55.0% at step 0, "
                                        "64.0% at step 160 (+4.0 points over the last doubling)")
    assert table["C3"]["status"].endswith("(trend of its task distillation's stage 2: flat)")  # 58 -> 58.5
    assert "09_task_budget/b.json" in table["C2"]["source"] and "other" not in table["C2"]["source"]


def test_c2_and_c3_read_03s_own_stage_2_curve_and_cite_09_only_when_it_goes_further(tmp_path):
    from tdlib.paper.report import claims
    from tdlib.studies.records import save_record

    glue_params = {"teacher": "minilm", "stage2_steps": 160, "task_lr": 2e-3}
    tasks = {"rte": {"students": {n: {"steps": [10, 160]} for n in ("IV-36-192", "IV-16-96")}}}
    students = {"IV-36-192": {"kind": "tucker", "ratio": 7.19}, "IV-16-96": {"kind": "tucker", "ratio": 47.75}}

    def curve(*pcts):
        return [{"step": s, "percent_of_teacher": p} for s, p in zip((0, 80, 160), pcts, strict=True)]

    summary = {"teacher": {"percent_of_teacher": 100.0},
               "IV-36-192": {"percent_of_teacher": 70.0, "task_curve": curve(50.0, 60.0, 70.0)},
               "IV-16-96": {"percent_of_teacher": 86.0, "task_curve": curve(80.0, 85.0, 86.0)}}
    save_record(tmp_path / "03_glue" / "g.json", glue_params, {"tasks": tasks, "students": students,
                                                               "summary": summary}, profile="cpu")
    same = {"student": "IV-36-192", "task_lr": 2e-3, "stage2_steps": 160, "glue": curve(1.0, 2.0, 3.0)}
    save_record(tmp_path / "09_task_budget" / "same.json", {"glue": glue_params, "stage2_steps": 160},
                {"students": {"a": same}}, profile="cpu")  # 03's own runs read again: nothing new to cite
    table = {r["claim"]: r for r in claims(tmp_path)}
    assert table["C2"]["ours"].endswith("along notebook 03's stage 2, task lr 0.002: 50.0% at step 0, 70.0% at "
                                        "step 160 (+10.0 points over the last doubling)")
    assert table["C2"]["status"] == ("falls short at this budget (trend of its task distillation's stage 2: "
                                     "closing)")  # (90 - 70) / 10: 2 more doublings
    assert "09_task_budget" not in table["C2"]["source"]
    assert table["C3"]["status"].endswith("(trend of its task distillation's stage 2: flat)")  # 85 -> 86


def test_c2_and_c3_cite_a_longer_general_distillation_of_notebook_09(tmp_path):
    from tdlib.paper.report import claims
    from tdlib.studies.records import save_record

    glue_params = {"teacher": "minilm", "stage2_steps": 160, "task_lr": 1e-3, "general_steps": 256}
    tasks = {"rte": {"students": {n: {"steps": [10, 160]} for n in ("IV-36-192", "IV-16-96")}}}
    students = {"IV-36-192": {"kind": "tucker", "ratio": 7.19}, "IV-16-96": {"kind": "tucker", "ratio": 47.75}}
    summary = {"teacher": {"percent_of_teacher": 100.0}, "IV-36-192": {"percent_of_teacher": 84.0},
               "IV-16-96": {"percent_of_teacher": 82.0}}
    save_record(tmp_path / "03_glue" / "g.json", glue_params, {"tasks": tasks, "students": students,
                                                               "summary": summary}, profile="cpu")

    def entry(student, general, pct):
        return {"student": student, "task_lr": 1e-3, "general_steps": general,
                "glue": [{"step": 0, "percent_of_teacher": 50.0}, {"step": 160, "percent_of_teacher": pct}]}

    study = {"a": entry("IV-36-192", 256, 84.0), "b": entry("IV-36-192", 1024, 85.0),
             "c": entry("IV-16-96", 256, 82.0), "d": entry("IV-16-96", 1024, 86.0)}
    params = {"glue": glue_params, "stage2_steps": 160, "general_budgets": [1024]}
    save_record(tmp_path / "09_task_budget" / "gb.json", params, {"students": study}, profile="cpu")
    table = {r["claim"]: r for r in claims(tmp_path)}
    assert table["C2"]["ours"].endswith("with more general distillation (notebook 09, seed 0, task lr 0.001): 84.0% "
                                        "after 256, 85.0% after 1,024 general steps (+0.5 points per doubling)")
    assert "GLUE score over general-distillation budgets: flat" in table["C2"]["status"]
    # +2 points a doubling from 86: the paper's 96.7% is ~5 doublings away
    assert ("GLUE score over general-distillation budgets: closing slowly: ~5 more doublings to 96.7% of the teacher"
            in table["C3"]["status"])
    assert "09_task_budget/gb.json" in table["C2"]["source"]
    save_record(tmp_path / "09_task_budget" / "gb.json", {"glue": glue_params, "stage2_steps": 160},
                {"students": {"a": study["a"]}}, profile="cpu")  # 03's budget alone: nothing to cite
    assert "general" not in {r["claim"]: r for r in claims(tmp_path)}["C2"]["ours"]


def save_03_record(root, student: str, ratio: float, percent: float) -> dict:
    """A minimal notebook-03 record of one Tucker student under 03's cpu settings; returns those settings."""
    from tdlib.studies.records import save_record

    glue_params = {"teacher": "minilm", "stage2_steps": 160, "task_lr": 1e-3, "general_steps": 256}
    tasks = {"rte": {"students": {student: {"steps": [10, 160]}}}}
    save_record(root / "03_glue" / "g.json", glue_params,
                {"tasks": tasks, "students": {student: {"kind": "tucker", "ratio": ratio}},
                 "summary": {"teacher": {"percent_of_teacher": 100.0}, student: {"percent_of_teacher": percent}}},
                profile="cpu")
    return glue_params


def test_the_stage_2_citation_gives_the_tucker_student_against_its_dense_baseline_on_shared_seeds(tmp_path):
    from tdlib.paper.report import claims
    from tdlib.studies.records import save_record

    glue_params = save_03_record(tmp_path, "IV-36-192", 7.19, 84.0)

    def run(student, steps, seeds, **extra):
        end = sum(seeds.values()) / len(seeds)
        return {"student": student, "task_lr": 1e-3, "stage2_steps": steps, "general_steps": 256, **extra,
                "task_seeds": [int(k) for k in seeds], **({"seeds": seeds} if len(seeds) > 1 else {}),
                "glue": [{"step": 0, "percent_of_teacher": 70.0}, {"step": steps, "percent_of_teacher": end}]}

    study = {"t": run("IV-36-192", 640, {"0": 88.0, "1": 86.0, "2": 87.0}),
             "d": run("dense-1L-384-1155", 640, {"0": 86.0, "1": 87.0, "2": 85.0}),
             "t2": run("IV-36-192", 1280, {"0": 87.0}, arm={"stage2_steps": 1280}),
             "d2": run("dense-1L-384-1155", 1280, {"0": 88.5}, arm={"stage2_steps": 1280})}
    save_record(tmp_path / "09_task_budget" / "s.json",
                {"glue": glue_params, "stage2_steps": 640, "models": ["IV-36-192", "dense-1L-384-1155"]},
                {"students": study}, profile="cpu")
    ours = {r["claim"]: r for r in claims(tmp_path)}["C2"]["ours"]
    assert ("minus dense-1L-384-1155 at the end of notebook 09's stage 2 (points of the teacher's average): +1.0 "
            "after 640 steps (mean of 3 seeds), -1.5 after 1,280 steps (seed 0)") in ours
    # the trend across lengths sets seed 0 against seed 0 (88.0 -> 87.0), not the mean of three (87.0)
    assert "the end of stage 2 by its length (notebook 09, seed 0): 88.0% after 640, 87.0% after 1,280" in ours


def test_the_stage_2_citation_names_a_task_arm_and_leaves_out_longer_general_budgets(tmp_path):
    from tdlib.paper.report import claims
    from tdlib.studies.records import save_record

    glue_params = save_03_record(tmp_path, "IV-16-96", 47.75, 80.0)

    def run(pcts, **extra):
        return {"student": "IV-16-96", "task_lr": 1e-3, "stage2_steps": 640, "general_steps": 256, **extra,
                "glue": [{"step": s, "percent_of_teacher": p} for s, p in zip((0, 320, 640), pcts, strict=True)]}

    study = {"plain": run((70.0, 82.0, 84.0), task_seeds=[0, 1, 2], seeds={"0": 84.0, "1": 83.5, "2": 84.5}),
             "arm": run((78.0, 84.0, 86.5), arm={"stage1_steps": 80, "task_objective": "all_layers_cos"},
                        stage1_steps=80, task_objective="all_layers_cos"),
             "longer general": run((75.0, 90.0, 99.0), general_steps=1024),
             "stage2=1280": {**run((70.0, 82.0, 84.0), arm={"stage2_steps": 1280}, stage2_steps=1280),
                             "glue": [{"step": s, "percent_of_teacher": p}
                                      for s, p in ((0, 70.0), (640, 80.0), (1280, 84.5))]}}
    save_record(tmp_path / "09_task_budget" / "s.json", {"glue": glue_params, "stage2_steps": 640},
                {"students": study}, profile="cpu")
    c3 = {r["claim"]: r for r in claims(tmp_path)}["C3"]
    ours = c3["ours"]
    # a stage-2 arm is named by its length alone; its own curve still gains (+4.5 over its last doubling), but the
    # trend cited is measured across the runs' lengths, on the seed both ran: 84.0% at the end of 640 steps (seed 0
    # of three), 84.5% at the end of 1,280
    assert ("a stage 2 of 1,280 steps (notebook 09; seed 0), task lr 0.001: 70.0% at step 0, 84.5% at step 1280 "
            "(+4.5 points over the last doubling)") in ours
    assert ("the end of stage 2 by its length (notebook 09, seed 0): 84.0% after 640, 84.5% after 1,280 steps "
            "(+0.5 points per doubling)") in ours
    assert "of its task distillation's stage 2: flat" in c3["status"]
    assert ("a longer stage 2 (notebook 09; mean of 3 seeds, 83.5-84.5 at the end), task lr 0.001: 70.0% at step 0, "
            "84.0% at step 640 (+2.0 points over the last doubling)") in ours
    assert ("a longer stage 2 (notebook 09; stage 1: 80 steps of all_layers_cos; seed 0), task lr 0.001: 78.0% at "
            "step 0, "
            "86.5% at step 640 (+2.5 points over the last doubling)") in ours
    assert "99.0%" not in ours, "a longer general budget is not a longer stage 2 of 03's student"


def test_c2_and_c3_cite_09_under_03s_earlier_teacher_named_as_such_until_09_runs_under_the_current_one(tmp_path):
    """A new teacher in 03 reaches notebook 09 a run later: meanwhile the claims table cites 09's study of the
    earlier teacher, with that teacher's average, and never a study of other students or general settings."""
    from tdlib.paper.report import claims
    from tdlib.studies.budget import studies_for
    from tdlib.studies.records import save_record

    old = {"teacher": "minilm", "stage2_steps": 30, "finetune_lr": 1e-4, "max_train_examples": {"sst2": 8000}}
    new = {**old, "finetune_lr": 3e-5, "max_train_examples": None, "finetune_head_lr": {"mrpc": 1e-3}}
    tasks = {"rte": {"students": {n: {"steps": [10, 30]} for n in ("IV-36-192", "IV-16-96")}}}
    students = {"IV-36-192": {"kind": "tucker", "ratio": 7.19}, "IV-16-96": {"kind": "tucker", "ratio": 47.75}}
    summary = {"teacher": {"percent_of_teacher": 100.0}, "IV-36-192": {"percent_of_teacher": 60.0},
               "IV-16-96": {"percent_of_teacher": 58.0}}
    save_record(tmp_path / "03_glue" / "g.json", new, {"tasks": tasks, "students": students, "summary": summary},
                profile="cpu")

    def study(glue, pct):
        entry = {"student": "IV-36-192", "task_lr": 1e-3, "stage2_steps": 160,
                 "glue": [{"step": s, "percent_of_teacher": p} for s, p in ((0, 50.0), (80, pct - 1), (160, pct))]}
        return {"students": {"a": entry}, "teacher_glue": 0.688}

    save_record(tmp_path / "09_task_budget" / "old.json", {"glue": old, "stage2_steps": 160}, study(old, 64.0),
                profile="cpu")
    other = {**old, "general_steps": 1024}  # other general settings: another study, never cited for these
    save_record(tmp_path / "09_task_budget" / "other.json", {"glue": other, "stage2_steps": 160}, study(other, 99.0),
                profile="cpu")
    assert [r["path"].endswith("old.json") for r in studies_for(new, tmp_path)[0]] == [True]
    assert studies_for(new, tmp_path)[1] is True
    row = {r["claim"]: r for r in claims(tmp_path)}["C2"]
    assert "a longer stage 2 (notebook 09, from 03's earlier teacher, GLUE average 68.8; seed 0)" in row["ours"]
    assert "99.0%" not in row["ours"] and "old.json" in row["source"]
    # once 09 has run under 03's current settings, its study is cited, unlabelled
    save_record(tmp_path / "09_task_budget" / "new.json", {"glue": new, "stage2_steps": 160}, study(new, 70.0),
                profile="cpu")
    assert studies_for(new, tmp_path)[1] is False
    row = {r["claim"]: r for r in claims(tmp_path)}["C2"]
    assert "70.0% at step 160" in row["ours"] and "earlier teacher" not in row["ours"]
