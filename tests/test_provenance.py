"""git_state: a record is 'dirty' when code differs from its commit, not when reproduce's own outputs do."""

import subprocess

from tdlib.studies.provenance import git_state


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_dirty_ignores_reproduce_outputs_but_not_code(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "r.json").write_text("{}\n")
    (tmp_path / "README.md").write_text("table\n")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "n.ipynb").write_text("{}\n")
    (tmp_path / "notebooks" / "n.py").write_text("x = 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "results" / "r.json").write_text('{"a": 1}\n')
    (tmp_path / "README.md").write_text("new table\n")
    (tmp_path / "notebooks" / "n.ipynb").write_text('{"outputs": 1}\n')  # an executed notebook: an output too
    state = git_state(tmp_path)
    assert state["dirty"] is False and len(state["sha"]) == 40
    (tmp_path / "notebooks" / "n.py").write_text("x = 2\n")  # a notebook's source is code
    assert git_state(tmp_path)["dirty"] is True
    (tmp_path / "notebooks" / "n.py").write_text("x = 1\n")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True


def test_code_changed_since_a_commit(tmp_path):
    from tdlib.studies.provenance import code_changed_since

    (tmp_path / "tdlib").mkdir()
    (tmp_path / "tdlib" / "m.py").write_text("x = 1\n")
    (tmp_path / "notes.md").write_text("a\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "notes.md").write_text("b\n")
    assert code_changed_since(sha, root=tmp_path) is False  # only library code counts
    (tmp_path / "tdlib" / "m.py").write_text("x = 2\n")
    assert code_changed_since(sha, root=tmp_path) is True
    assert code_changed_since(None, root=tmp_path) is None
    assert code_changed_since("0" * 40, root=tmp_path) is None  # unknown commit: cannot tell


def test_records_name_data_relative_to_their_root(tmp_path, monkeypatch):
    from tdlib.studies.provenance import data_label, provenance

    root = tmp_path / "somewhere" / "glue"
    (root / "CoLA").mkdir(parents=True)
    f = root / "CoLA" / "train.tsv"
    f.write_text("a\t1\n")
    monkeypatch.setenv("GLUE_DIR", str(root))
    assert data_label(f) == "glue/CoLA/train.tsv"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("text\n")
    monkeypatch.setenv("TDLIB_CORPUS", str(corpus))
    assert data_label(corpus) == f"{tmp_path.name}/corpus.txt"
    data = provenance(data_files=[f])["data"]
    assert list(data) == ["glue/CoLA/train.tsv"] and str(tmp_path) not in str(data)


def test_cached_records_are_checked_against_their_data_and_older_code_is_named_once(tmp_path, monkeypatch, capsys):
    from tdlib.studies import records as results

    data = tmp_path / "d.tsv"
    data.write_text("one\n")
    calls = []

    def compute():
        calls.append(1)
        return {"n": len(calls)}

    kw = dict(root=tmp_path / "results", data_files=[data], force=False)
    assert results.cached("x", {"a": 1}, compute, **kw)["result"] == {"n": 1}
    assert results.cached("x", {"a": 1}, compute, **kw)["cached"] is True and len(calls) == 1
    data.write_text("two\n")  # same parameters, other data: never the old record
    record = results.cached("x", {"a": 1}, compute, **kw)
    assert record["cached"] is False and record["result"] == {"n": 2}
    assert "not reusing" in capsys.readouterr().err
    kw.pop("force")  # FORCE names what to recompute: all, or some records by name
    for value, recomputed in (("0", False), ("y,z", False), ("x", True), ("y, x", True), ("1", True)):
        monkeypatch.setenv("FORCE", value)
        assert results.cached("x", {"a": 1}, compute, **kw)["cached"] is not recomputed, value
    monkeypatch.delenv("FORCE")
    kw["force"] = False

    # a record an earlier commit computed is reused as it is, with no warning in the notebook's output: make
    # reproduce names such records once, at its end
    from tdlib.paper import reproduce

    monkeypatch.setattr(reproduce, "code_changed_since", lambda sha: sha != results.load_record(
        tmp_path / "results" / "x" / f"{results.param_hash({'a': 1})}.json")["provenance"]["git"]["sha"] or None)
    assert results.cached("x", {"a": 1}, compute, **kw)["cached"] is True
    assert "changed" not in capsys.readouterr().err
    results.save_record(tmp_path / "results" / "y" / "old.json", {}, {}, extra={"git": {"sha": "0" * 40}})
    assert reproduce.older_records(tmp_path / "results") == [tmp_path / "results" / "y" / "old.json"]


def test_device_info_names_the_cpu_and_its_bf16_instructions(tmp_path):
    from tdlib.studies.provenance import cpu_model, device_info

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Example CPU @ 2.0GHz\nflags\t\t: fpu sse2 amx_bf16\n")
    assert cpu_model(str(info)) == "Example CPU @ 2.0GHz"
    assert cpu_model(str(tmp_path / "absent")) is None
    got = device_info("cpu")
    assert {"cpu_model", "cpu_bf16"} <= set(got) and isinstance(got["cpu_bf16"], list)
