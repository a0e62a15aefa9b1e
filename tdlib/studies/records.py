"""Results records: ``results/<name>/<parameter-hash>.json`` with provenance, computed once, reused.

Expensive work (distillation, benchmarks, decomposition sweeps) is wrapped in :func:`cached`: the
parameters are hashed, and a record with the same hash is loaded instead of recomputed unless
``force`` (or ``FORCE=1`` in the environment; ``FORCE=04_train,04_runtimes``: those record names only) is set.
Every record holds the parameters, the result and a :func:`tdlib.studies.provenance.provenance` block; it is
written atomically.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tdlib.core.errors import ConfigError
from tdlib.core.io import key_of, write_json_atomic
from tdlib.studies.provenance import data_checksums, project_root, provenance

ROOT = project_root()


def results_root() -> Path:
    """Where records go: ``$TDLIB_RESULTS``, else ``results/`` (read at each call: a notebook run with parameters of
    its own points it at a folder of its own, see :func:`tdlib.paper.reproduce.notebook_parameters`)."""
    return Path(os.environ.get("TDLIB_RESULTS") or ROOT / "results")


def shown(path: str | os.PathLike) -> str:
    """A path as a reader should see it: relative to the checkout when it lies inside it (outputs that name no
    machine's folders), else as it is."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def describe(record: dict) -> str:
    """``results/<name>/<key>.json (cached)`` or ``(computed)``: the line a notebook prints for a record it read."""
    return f"{shown(record['path'])} ({'cached' if record.get('cached') else 'computed'})"


def runs_dir(profile: str) -> Path:
    """Where training runs (checkpoints, models) of a profile live: ``runs/<profile>`` or ``$TDLIB_RUNS/<profile>``.

    Outside git: the results JSONs are the record, the runs are what they were computed from.
    """
    return Path(os.environ.get("TDLIB_RUNS", ROOT / "runs")) / profile


def param_hash(params: dict) -> str:
    return key_of(params)


def record_path(name: str, params: dict, root: str | os.PathLike | None = None) -> Path:
    return Path(root or results_root()) / name / f"{param_hash(params)}.json"


def locate(name: str, params: dict, root: str | os.PathLike | None = None) -> Path:
    """Where the record of ``params`` is read from: under ``root`` (default :func:`results_root`), or, when a run
    writes to a folder of its own and has none there, the committed ``results/`` record of the same key (the key
    covers every parameter, so it is the same computation). A missing record's path is the one it would be written
    to."""
    path = record_path(name, params, root)
    committed = record_path(name, params, ROOT / "results")
    return committed if root is None and not path.exists() and committed.exists() else path


def save_record(path: str | os.PathLike, params: dict, result, *, seed: int | None = None,
                profile: str | None = None, data_files=(), seconds: float | None = None,
                extra: dict | None = None) -> dict:
    record = {"params": params, "result": result,
              "provenance": provenance(seed=seed, profile=profile, data_files=data_files, wall_seconds=seconds,
                                       **(extra or {}))}
    write_json_atomic(path, record)
    return record


def load_record(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())


def stale_reason(record: dict, data_files=()) -> str | None:
    """Why a cached record must not be reused: it was computed from other data files (by sha256)."""
    recorded = sorted((record.get("provenance") or {}).get("data", {}).values())
    current = sorted(data_checksums(data_files).values())
    if recorded != current:
        return (f"its data differ from the files read now ({len(recorded)} recorded, {len(current)} now, "
                "sha256 compared)")
    return None


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _estimate(name: str, root=None) -> str:
    """What the newest record of ``name`` (any parameters) took, and on which CPU: the measured time a reader can
    plan with before a computation starts."""
    done = [r for r in records(name, root) if (r.get("provenance") or {}).get("wall_seconds")]
    if not done:
        return ""
    prov = done[0]["provenance"]
    hours = prov["wall_seconds"] / 3600
    took = f"{hours:.1f} h" if hours >= 1 else f"{prov['wall_seconds'] / 60:.0f} min"
    return (f" (its newest record took {took} on {prov.get('cpu_model') or prov.get('cpu') or 'a CPU'} with "
            f"{prov.get('threads')} threads; finished training runs are reused, Ctrl-C keeps what is done)")


def forced(name: str) -> bool:
    """Whether ``FORCE`` asks to recompute record ``name``: ``1`` (every record) or a comma-separated list of
    names (``FORCE=04_train``: the train benchmark only, every other record read back)."""
    value = os.environ.get("FORCE", "0").strip()
    return value == "1" or name in {v.strip() for v in value.split(",")}


def cached(name: str, params: dict, compute: Callable[[], object], *, force: bool | None = None,
           seed: int | None = None, profile: str | None = None, data_files=(), root=None,
           extra: dict | None = None) -> dict:
    """Load ``results/<name>/<hash(params)>.json`` or run ``compute()`` and save it with provenance.

    A cached record is reused only if it was computed from the same data files (sha256); otherwise it is
    recomputed and replaced, with a warning. A record computed by an earlier commit of tdlib is reused as it is:
    its provenance names that commit, and ``make reproduce`` lists such records once, at its end
    (:func:`tdlib.paper.reproduce.older_records`).
    """
    path = record_path(name, params, root)
    force = forced(name) if force is None else force
    found = locate(name, params, root)
    if found.exists() and not force:
        record = load_record(found)
        stale = stale_reason(record, data_files)
        if stale is None:
            record["cached"] = True
            record["path"] = str(found)
            return record
        warn(f"not reusing {path}: {stale}; recomputing")
    if os.environ.get("TDLIB_CACHE_ONLY") == "1":
        raise ConfigError(f"no usable record {path} for these parameters, and TDLIB_CACHE_ONLY=1 forbids computing "
                          "it (make test re-runs notebooks from committed results only); make reproduce computes it")
    print(f"[tdlib] {name}: no record for these parameters in {shown(path.parent)}; computing it now"
          f"{_estimate(name, root)}", file=sys.stderr, flush=True)
    start = time.perf_counter()
    result = compute()
    record = save_record(path, params, result, seed=seed, profile=profile, data_files=data_files,
                         seconds=time.perf_counter() - start, extra=extra)
    record["cached"] = False
    record["path"] = str(path)
    return record


def records(name: str, root: str | os.PathLike | None = None) -> list[dict]:
    """Every record of one notebook, newest first, each with its ``path``."""
    folder = Path(root or results_root()) / name
    out = []
    for path in folder.glob("*.json"):
        rec = json.loads(path.read_text())
        rec["path"] = str(path)
        out.append(rec)
    return sorted(out, key=lambda r: r["provenance"].get("created", ""), reverse=True)
