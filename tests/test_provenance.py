"""git_state: a record is 'dirty' when code differs from its commit, not when reproduce's own outputs do."""

import subprocess

from tdlib.provenance import git_state


def _git(root, *args):
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_dirty_ignores_reproduce_outputs_but_not_code(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "r.json").write_text("{}\n")
    (tmp_path / "README.md").write_text("table\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "results" / "r.json").write_text('{"a": 1}\n')
    (tmp_path / "README.md").write_text("new table\n")
    state = git_state(tmp_path)
    assert state["dirty"] is False and len(state["sha"]) == 40
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True
