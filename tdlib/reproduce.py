"""``make reproduce``: run every notebook with papermill under one parameter profile.

``params/<profile>.yaml`` maps notebook names to their parameters (``cpu``: the default, offline;
``paper``: bert-base-uncased and all of GLUE from the hub, GPUs; ``smoke``: seconds-long runs that
``make test`` checks with nbval). Parameters are checked against each notebook's ``parameters``
cell before anything runs: an unknown name or a value of the wrong type stops the run with one
message. Executed copies go to ``notebooks/executed/<profile>/``; results and figures are written
by the notebooks themselves (``results/``, ``figures/``).
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path

import yaml

from .errors import ConfigError, TdlibError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PARAMS = ROOT / "params"
KERNEL = "tdlib"
_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "list": list, "dict": dict,
          "None": type(None)}


def load_profile(profile: str) -> dict[str, dict]:
    path = PARAMS / f"{profile}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in PARAMS.glob("*.yaml"))
        raise ConfigError(f"unknown profile {profile!r}: no {path}; choose one of {names}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict | None) for v in data.values()):
        raise ConfigError(f"{path} must map notebook names to parameter mappings")
    # top-level keys starting with "x-" hold YAML anchors shared by several notebooks (e.g. x-distill)
    return {name: dict(params or {}) for name, params in data.items() if not str(name).startswith("x-")}


def check_parameters(notebook: Path, params: dict) -> None:
    """Unknown names and ill-typed values fail here, naming the notebook's parameters."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ConfigError(f"{notebook.name}: unknown parameter(s) {unknown}; its parameters are {sorted(declared)}")
    for name, value in params.items():
        try:  # parameters cells hold literals: the default's type is the parameter's type
            kind = type(ast.literal_eval(declared[name]["default"])).__name__
        except (ValueError, SyntaxError):
            kind = declared[name]["inferred_type_name"]
        expected = _TYPES.get(kind)
        if expected is None or value is None or kind == "NoneType":
            continue
        if isinstance(value, bool) and kind in ("int", "float"):
            raise ConfigError(f"{notebook.name}: parameter {name} must be {kind}, got bool {value!r}")
        if not isinstance(value, expected):
            raise ConfigError(f"{notebook.name}: parameter {name} must be {kind}, got "
                              f"{type(value).__name__} {value!r}")


def notebook_path(name: str) -> Path:
    path = NOTEBOOKS / f"{name}.ipynb"
    if not path.is_file():
        raise ConfigError(f"profile names notebook {name!r}, but {path} does not exist")
    return path


def run(profile: str = "cpu", only: list[str] | None = None, out_dir: Path | None = None,
        force: bool = False) -> list[Path]:
    import papermill

    plan = load_profile(profile)
    if only:
        missing = sorted(set(only) - set(plan))
        if missing:
            raise ConfigError(f"--only {missing}: not in params/{profile}.yaml ({sorted(plan)})")
        plan = {k: v for k, v in plan.items() if k in only}
    for name, params in plan.items():  # validate everything before running anything
        check_parameters(notebook_path(name), params)
    out_dir = Path(out_dir or NOTEBOOKS / "executed" / profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    if force:
        os.environ["FORCE"] = "1"
    written = []
    for name, params in sorted(plan.items()):
        start = time.perf_counter()
        print(f"[reproduce:{profile}] {name} ...", flush=True)
        output = out_dir / f"{name}.ipynb"
        papermill.execute_notebook(str(notebook_path(name)), str(output), parameters=params, kernel_name=KERNEL,
                                   cwd=str(NOTEBOOKS), progress_bar=False)
        print(f"[reproduce:{profile}] {name} done in {time.perf_counter() - start:.0f} s -> {output}", flush=True)
        written.append(output)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tdlib.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--only", nargs="*", help="notebook names (e.g. 04_speed)")
    parser.add_argument("--out", type=Path, help="folder for the executed notebooks")
    parser.add_argument("--force", action="store_true", help="recompute cached results (FORCE=1)")
    args = parser.parse_args(argv)
    try:
        run(args.profile, args.only, args.out, args.force)
    except TdlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
