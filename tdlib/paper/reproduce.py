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
from dataclasses import dataclass
from pathlib import Path

import datasets
import nbformat
import papermill
import transformers
import yaml
from jupyter_client.manager import KernelManager
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

from tdlib.core.errors import ConfigError, DataError, TdlibError
from tdlib.core.io import key_of
from tdlib.data.corpus import corpus_files, heldout_path
from tdlib.data.glue import get_task, task_files
from tdlib.studies.provenance import code_changed_since
from tdlib.studies.records import ROOT, load_record, runs_dir, save_record, shown
from tdlib.studies.settings import GLUE_DEFAULTS, keyed

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


def declared_parameters(notebook: Path) -> dict[str, str]:
    """The notebook's parameters and their types (the type of each default literal in its parameters cell)."""

    out = {}
    for name, info in papermill.inspect_notebook(str(notebook)).items():
        try:  # parameters cells hold literals: the default's type is the parameter's type
            out[name] = type(ast.literal_eval(info["default"])).__name__
        except (ValueError, SyntaxError):
            out[name] = info["inferred_type_name"]
    return out


def coerce_parameter(notebook: str, name: str, kind: str, value):
    """``value`` as the parameter's type, or one ConfigError naming the parameter and the type it needs.

    ``papermill -p`` passes lists, booleans and some numbers as strings ("[[24, 96]]", "false", "1e-4");
    they are parsed here as Python or YAML literals. Everything else must already have the right type.
    """
    if isinstance(value, str) and kind != "str":
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            # a parameter whose default is None has no type to parse towards: a string that is no Python literal
            # stays a string there (YAML would turn "no" into False)
            if kind != "NoneType":
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError:
                    pass
    return check_value(notebook, name, kind, value)


def check_value(notebook: str, name: str, kind: str, value):
    """``value`` if it has the parameter's type (ints pass as floats, None always), else one ConfigError.

    A dict-typed parameter is a per-task setting ({task: value}), which also takes one number or string for
    every task.
    """
    expected = _TYPES.get(kind)
    if expected is None or value is None or kind == "NoneType":
        return value
    if kind == "dict" and isinstance(value, int | float | str) and not isinstance(value, bool):
        return value
    if (isinstance(value, bool) and kind in ("int", "float")) or not isinstance(value, expected):
        raise ConfigError(f"{notebook}: parameter {name} must be {kind}, got {type(value).__name__} {value!r}"
                          + (" (papermill: pass YAML values with -y, e.g. -y 'students: [[24, 96]]')"
                             if kind in ("list", "dict", "bool") else ""))
    return value


def check_parameters(notebook: Path, params: dict) -> None:
    """Unknown names and ill-typed values fail here, naming the notebook's parameters."""
    declared = declared_parameters(notebook)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ConfigError(f"{notebook.name}: unknown parameter(s) {unknown}; its parameters are {sorted(declared)}")
    for name, value in params.items():  # a profile's YAML is typed: no coercion here
        check_value(notebook.name, name, declared[name], value)


@dataclass(frozen=True)
class NotebookRun:
    """A notebook's parameters after validation, and what to call the run in its records.

    ``profile`` is the profile named by the ``profile`` parameter when every value equals
    ``params/<profile>.yaml``, else ``"custom"`` (with the base profile and the overridden names in
    :meth:`provenance`), so a record made with other ranks is never labelled as the profile's.
    """

    name: str
    params: dict
    profile: str
    base_profile: str
    overrides: tuple[str, ...] = ()

    def __str__(self) -> str:
        """The line a notebook prints under its parameters: the profile, and what a custom run overrides."""
        over = f" (from {self.base_profile}, overriding {', '.join(self.overrides)})" if self.overrides else ""
        return f"profile: {self.profile}{over}"

    def provenance(self) -> dict:
        return {"base_profile": self.base_profile, "overrides": list(self.overrides)} if self.overrides else {}

    def record_kwargs(self) -> dict:
        """What :func:`tdlib.studies.records.cached` needs to label a record of this run: ``profile`` and ``extra``."""
        return {"profile": self.profile, "extra": self.provenance()}

    def custom_key(self) -> str:
        """The folder name of a custom run's records and figures: its base profile and overridden values."""
        return key_of({"profile": self.base_profile, **{k: self.params[k] for k in self.overrides}})


# where ../shared keeps the data beside a checkout (the Makefile and .ci/run point the variables at the same places)
SHARED = ROOT.parent / "shared" / "data"
DATA_DEFAULTS = {"GLUE_DIR": SHARED / "glue", "TDLIB_CORPUS": SHARED / "corpus" / "enwiki-2015-wikiextractor" / "train"}


def use_shared_data() -> dict[str, str]:
    """Point ``GLUE_DIR`` and ``TDLIB_CORPUS`` at ``../shared/data`` when they are unset and it is there, so a notebook
    opened in JupyterLab with no environment variable finds the data the Makefile would give it. Returns what it
    set."""
    found = {var: str(path) for var, path in DATA_DEFAULTS.items() if not os.environ.get(var) and path.exists()}
    os.environ.update(found)
    return found


def notebook_parameters(name: str, namespace: dict) -> NotebookRun:
    """Validate and coerce a notebook's parameters in place (its globals); call right after the parameters cell.

    Under a ``profile`` other than the committed one, every parameter left at the notebook's default takes that
    profile's value (``-p profile smoke`` is the whole smoke profile). A run whose values differ from its profile's
    is ``custom``: its records and figures go to ``results/custom/<key>/`` and ``figures/custom/<key>/`` (another
    profile's to ``results/<profile>/``, ``figures/<profile>/``), never beside the committed ones, unless
    ``TDLIB_RESULTS`` / ``TDLIB_FIGURES`` say where. The data come from ``../shared/data`` when no variable names
    them (:func:`use_shared_data`); a notebook that cannot find its data stops with one error saying where to put it.
    """
    declared = declared_parameters(notebook_path(name))
    missing = sorted(set(declared) - set(namespace))
    if missing:
        raise ConfigError(f"{name}: parameters {missing} are not defined; run the parameters cell first")
    values = {k: coerce_parameter(f"{name}.ipynb", k, kind, namespace[k]) for k, kind in declared.items()}
    base = str(values.get("profile", COMMITTED))
    try:
        listed = load_profile(base).get(name)  # None: the profile does not run this notebook
    except ConfigError:
        listed = None
    defaults = notebook_defaults(name)
    if base != COMMITTED and listed:  # the profile's own values where the caller left the notebook's defaults
        values.update({k: v for k, v in listed.items() if k in values and values[k] == defaults.get(k)})
    namespace.update(values)
    expected = {**defaults, **(listed or {})}  # a parameter the profile does not list is at the notebook's default
    overrides = tuple(sorted(k for k, v in values.items() if k != "profile" and k in expected and v != expected[k]))
    run = NotebookRun(name, values, "custom" if overrides or listed is None else base, base, overrides)
    use_shared_data()
    # transformers' and datasets' own bars (loading weights, writing shards, map) would put their rates, which differ
    # from run to run, into the notebook's outputs; tdlib's training loops keep theirs
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    sub = None if run.profile == COMMITTED else f"custom/{run.custom_key()}" if run.profile == "custom" else run.profile
    for var, folder in (("TDLIB_RESULTS", "results"), ("TDLIB_FIGURES", "figures")):
        _route(var, None if sub is None else str(ROOT / folder / sub))
    return run


_ROUTED: dict[str, str] = {}  # the output folders notebook_parameters set in this process (a kernel runs many cells)


def _route(var: str, value: str | None) -> None:
    """Set (or, with None, unset) an output-folder variable, unless the caller set it: a kernel that ran a custom
    run and then the committed one writes the committed one's records where they belong."""
    if os.environ.get(var) and os.environ[var] != _ROUTED.get(var):
        return  # the caller's (make test, reproduce --profile): theirs to keep
    if value is None:
        if var in _ROUTED:
            os.environ.pop(var, None)
            del _ROUTED[var]
    else:
        os.environ[var] = _ROUTED[var] = value


def notebook_defaults(name: str) -> dict:
    """The values of a notebook's parameters cell."""

    out = {}
    for key, info in papermill.inspect_notebook(str(notebook_path(name))).items():
        try:
            out[key] = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            continue
    return out


def notebook_path(name: str) -> Path:
    path = NOTEBOOKS / f"{name}.ipynb"
    if not path.is_file():
        raise ConfigError(f"profile names notebook {name!r}, but {path} does not exist")
    return path


def check_data(name: str, params: dict) -> None:
    """Every data file a notebook will read exists, before anything runs (a missing file is one DataError).

    GLUE tasks (``tasks``, ``distill_task``) need GLUE_DIR's files, or the hub when online; notebooks that
    run general distillation (``general_steps``, ``curve_configs``) or read its students (``models``) need the
    corpus (TDLIB_CORPUS), or the hub when online; the recovery proxies and the calibration (``curve_points``,
    ``calibration_sequences``) held-out text.
    """

    offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
    tasks = list(params.get("tasks") or []) + ([params["distill_task"]] if params.get("distill_task") else [])
    for task in tasks:
        get_task(task)
        if not task_files(task) and offline:
            raise DataError(f"{name}: task {task!r} needs GLUE data: set GLUE_DIR to a glue_data folder "
                            "(../shared/data/glue here; the Makefile sets it when that folder exists), or go online")
    if (params.get("general_steps") or params.get("curve_configs") or params.get("models")) and not corpus_files() \
            and offline:
        raise DataError(f"{name}: general distillation needs a corpus: set TDLIB_CORPUS to a text file or folder "
                        "(../shared/data/corpus/enwiki-2015-wikiextractor/train here), or go online")
    if params.get("curve_points") or params.get("calibration_sequences"):  # proxies, calibration: held-out text

        heldout_path()  # the recovery proxies' held-out text, or one DataError naming TDLIB_HELDOUT
        if "stsb" not in tasks:
            get_task("stsb")
            if not task_files("stsb") and offline:
                raise DataError(f"{name}: the recovery proxies read STS-B dev: set GLUE_DIR, or go online")


COMMITTED = "cpu"  # the profile whose executed notebooks (with outputs) are committed in notebooks/


def check_committed_defaults(name: str, params: dict) -> None:
    """The committed profile's values must be the notebook's own defaults, so *Run All* hits its records."""
    defaults = notebook_defaults(name)
    differ = sorted(k for k, v in params.items() if defaults.get(k) != v)
    if differ:
        raise ConfigError(f"params/{COMMITTED}.yaml and {name}.py's parameters cell differ in {differ}; "
                          "make them equal (the notebook's defaults are the committed profile)")


def run_order(item: tuple[str, dict]) -> tuple[bool, str]:
    """Notebooks run by name, except the claims table (``*_claims``), which reads every other record: last."""
    return item[0].endswith("_claims"), item[0]


def output_roots(profile: str) -> dict[str, Path]:
    """Where a profile's records and figures go: ``results/``, ``figures/`` for the committed profile; for any
    other, ``results/<profile>/`` and ``figures/<profile>/``, unless ``TDLIB_RESULTS`` / ``TDLIB_FIGURES`` name
    a folder.

    Why: the claims table reads the newest record of each notebook under its results folder, so a quick or
    paper run that wrote into ``results/`` would silently replace the committed profile's evidence (and its
    figures would overwrite the committed ones).
    """
    own = profile != COMMITTED
    return {var: Path(os.environ[var]) if os.environ.get(var) else ROOT / sub / (profile if own else "")
            for var, sub in (("TDLIB_RESULTS", "results"), ("TDLIB_FIGURES", "figures"))}


def own_records(folder: Path) -> list[Path]:
    """The records of the notebooks under ``folder``: not another profile's (``results/quick/``), a custom run's
    (``results/custom/``) or a timing record (``reproduce/``), which the committed profile's folder also holds."""
    other = {"custom", "reproduce", *(p.stem for p in PARAMS.glob("*.yaml"))}
    return sorted(p for p in folder.rglob("*.json") if p.relative_to(folder).parts[0] not in other) \
        if folder.is_dir() else []


def _records_state(folder: Path) -> dict[Path, int]:
    """Every record under ``folder`` with its modification time: what a run computed is what this changed."""
    return {p: p.stat().st_mtime_ns for p in own_records(folder)}


def save_timing(path: Path, profile: str, force: bool, cold: bool, seconds: dict[str, float],
                complete: bool) -> None:
    """The wall time of a whole-profile run that computed something, per notebook, with provenance; rewritten
    after every notebook (atomically), so an interrupted run still says how far it got."""

    save_record(path, {"profile": profile, "force": force}, {
        "complete": complete, "cold": cold, "notebooks": {k: round(v, 1) for k, v in seconds.items()},
        "total_seconds": round(sum(seconds.values()), 1)}, profile=profile, seconds=sum(seconds.values()))


class IPCKernelManager(KernelManager):
    """The notebooks' kernels talk over local IPC sockets (beside the connection file), not TCP: nothing listens on
    a port, and the kernel has no 'running over TCP without encryption' warning to print."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("transport", "ipc")
        super().__init__(**kwargs)


def strip_volatile(path: Path) -> None:
    """Drop what differs between two executions of the same notebook from the same records: papermill's and the
    kernel's timestamps and durations, papermill's input and output paths. A re-run from the cache then writes the
    committed notebook byte for byte, and another profile's executed copy the same each time. Consecutive prints to
    one stream are merged (the kernel splits them where its buffer happened to flush)."""
    nb, _ = CoalesceStreamsPreprocessor().preprocess(nbformat.read(path, as_version=4), {})
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if "injected-parameters" in cell.metadata.get("tags", ()):  # papermill draws it a random id each run
            cell.id = "injected-parameters"
    nbformat.write(nb, path)


def older_records(folder: Path) -> list[Path]:
    """The records under ``folder`` that an earlier commit of ``tdlib/`` computed (whose code has changed since)."""
    recs = [(p, (load_record(p).get("provenance") or {}).get("git", {}).get("sha")) for p in own_records(folder)]
    changed = {sha: code_changed_since(sha) for sha in {s for _, s in recs}}
    return sorted(p for p, sha in recs if changed[sha])


def run(profile: str = "cpu", only: list[str] | None = None, out_dir: Path | None = None,
        force: bool = False) -> list[Path]:
    """Execute the profile's notebooks. The committed profile's land, executed, in ``notebooks/`` itself
    (via a scratch copy, so a failed run never leaves a half-executed notebook there); others in
    ``notebooks/executed/<profile>/`` or ``out_dir``. Volatile metadata is stripped (:func:`strip_volatile`), so a
    run from the committed records leaves ``git status`` clean.

    A run of the whole profile (no ``only``) that computes a record writes each notebook's wall time, and whether
    it started cold (no training runs to reuse), to ``<results>/reproduce/<profile>.json``; a run that only read
    records writes nothing.
    """

    plan = load_profile(profile)
    if only:
        missing = sorted(set(only) - set(plan))
        if missing:
            raise ConfigError(f"--only {missing}: not in params/{profile}.yaml ({sorted(plan)})")
        plan = {k: v for k, v in plan.items() if k in only}
    use_shared_data()  # the kernels inherit it
    for name, params in plan.items():  # validate everything before running anything
        check_parameters(notebook_path(name), params)
        check_data(name, {**notebook_defaults(name), **params})
        if profile == COMMITTED:
            check_committed_defaults(name, params)
    in_place = profile == COMMITTED and out_dir is None
    out_dir = Path(out_dir or NOTEBOOKS / "executed" / profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    if force:
        os.environ["FORCE"] = "1"
    roots = output_roots(profile)
    os.environ.update({var: str(path) for var, path in roots.items()})  # the notebooks' kernels inherit them
    timing = None if only else roots["TDLIB_RESULTS"] / "reproduce" / f"{profile}.json"
    runs = runs_dir(profile)
    no_runs = not runs.is_dir() or not any(runs.iterdir())
    before, seconds, computed = _records_state(roots["TDLIB_RESULTS"]), {}, set()
    print(f"[reproduce:{profile}] {len(plan)} notebooks; records -> {shown(roots['TDLIB_RESULTS'])}, figures -> "
          f"{shown(roots['TDLIB_FIGURES'])}", flush=True)
    written = []
    for name, params in sorted(plan.items(), key=run_order):
        start = time.perf_counter()
        print(f"[reproduce:{profile}] {name} ...", flush=True)
        output = out_dir / f"{name}.ipynb"
        try:
            # the committed profile runs on the notebook's own defaults: no injected-parameters cell
            papermill.execute_notebook(str(notebook_path(name)), str(output), parameters={} if in_place else params,
                                       kernel_name=KERNEL, cwd=str(NOTEBOOKS), progress_bar=False,
                                       kernel_manager_class=IPCKernelManager)
        except papermill.PapermillExecutionError as exc:
            raise TdlibError(f"notebook {name} failed: {exc.ename}: {exc.evalue} (executed notebook: "
                             f"{shown(output)})") from None
        strip_volatile(output)
        if in_place:
            os.replace(output, notebook_path(name))
            output = notebook_path(name)
        seconds[name] = time.perf_counter() - start
        print(f"[reproduce:{profile}] {name} done in {seconds[name]:.0f} s -> {shown(output)}", flush=True)
        written.append(output)
        computed = {p for p, m in _records_state(roots["TDLIB_RESULTS"]).items() if before.get(p) != m} - {timing}
        if timing is not None and computed:
            cold = no_runs and runs.is_dir() and any(runs.iterdir())  # it trained, from nothing to reuse
            save_timing(timing, profile, force, cold, seconds, complete=len(seconds) == len(plan))
    print(f"[reproduce:{profile}] all {len(plan)} notebooks in {sum(seconds.values()) / 60:.1f} min: "
          + (f"{len(computed)} records computed" + (f" (timing: {shown(timing)})" if timing else "")
             if computed else "every record read from the cache, nothing computed"), flush=True)
    older = older_records(roots["TDLIB_RESULTS"])
    if older:
        print(f"[reproduce:{profile}] {len(older)} records were computed by an earlier commit of tdlib/ (their "
              "provenance names it); FORCE=1 recomputes them with this code", flush=True)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tdlib.paper.reproduce", description=__doc__.splitlines()[0])
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
    except KeyboardInterrupt:  # one line: what is kept, and how to go on
        print(f"\ninterrupted: finished records stay in {shown(output_roots(args.profile)['TDLIB_RESULTS'])}, "
              f"training runs in {shown(runs_dir(args.profile))} (they resume); run the same command to go on",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def glue_params(profile: str) -> dict:
    """Notebook 03's GLUE settings under ``profile``, as 03 itself forms them (its parameters cell, overridden by
    ``params/<profile>.yaml``): the general distillation the curves share, and the key of 03's record."""

    values = {**notebook_defaults("03_glue"), **load_profile(profile).get("03_glue", {})}
    return keyed({k: v for k, v in values.items() if k in GLUE_DEFAULTS})


def scaling_params(profile: str, section: dict | None = None) -> dict:
    """The scaling study's parameters under ``profile``: notebook 03's GLUE settings (:func:`glue_params`) with the
    study's section of ``params/<profile>.yaml`` (or ``section``, a notebook's own values) over them."""

    section = load_profile(profile).get("10_scaling", {}) if section is None else section
    return {**glue_params(profile), **{k: v for k, v in section.items() if k not in ("profile", "compute")}}
