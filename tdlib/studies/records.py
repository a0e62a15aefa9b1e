"""Results records: ``results/<name>/<parameter-hash>.json`` with provenance, computed once, reused.

Expensive work (distillation, benchmarks, decomposition sweeps) is wrapped in :func:`cached`: the
parameters are hashed, and a record with the same hash is loaded instead of recomputed unless
``force`` (or ``FORCE=1`` in the environment) is set. Every record holds the parameters, the
result and a :func:`tdlib.studies.provenance.provenance` block; it is written atomically.
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
from tdlib.studies.provenance import code_changed_since, data_checksums, project_root, provenance

ROOT = project_root()
RESULTS = Path(os.environ.get("TDLIB_RESULTS", ROOT / "results"))


def runs_dir(profile: str) -> Path:
    """Where training runs (checkpoints, models) of a profile live: ``runs/<profile>`` or ``$TDLIB_RUNS/<profile>``.

    Outside git: the results JSONs are the record, the runs are what they were computed from.
    """
    return Path(os.environ.get("TDLIB_RUNS", ROOT / "runs")) / profile


def param_hash(params: dict) -> str:
    return key_of(params)


def record_path(name: str, params: dict, root: str | os.PathLike | None = None) -> Path:
    return Path(root or RESULTS) / name / f"{param_hash(params)}.json"


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


def cached(name: str, params: dict, compute: Callable[[], object], *, force: bool | None = None,
           seed: int | None = None, profile: str | None = None, data_files=(), root=None,
           extra: dict | None = None) -> dict:
    """Load ``results/<name>/<hash(params)>.json`` or run ``compute()`` and save it with provenance.

    A cached record is reused only if it was computed from the same data files (sha256); otherwise it is
    recomputed and replaced, with a warning. A record computed by other library code (``tdlib/`` changed
    since its commit) is reused with a warning that names the fix (FORCE=1).
    """
    path = record_path(name, params, root)
    force = os.environ.get("FORCE", "0") == "1" if force is None else force
    if path.exists() and not force:
        record = load_record(path)
        stale = stale_reason(record, data_files)
        if stale is None:
            sha = record.get("provenance", {}).get("git", {}).get("sha")
            if code_changed_since(sha):
                warn(f"{path} was computed by tdlib at {sha[:10]}, and tdlib/ has changed since; "
                     "FORCE=1 recomputes it with this code")
            record["cached"] = True
            record["path"] = str(path)
            return record
        warn(f"not reusing {path}: {stale}; recomputing")
    if os.environ.get("TDLIB_CACHE_ONLY") == "1":
        raise ConfigError(f"no usable record {path} for these parameters, and TDLIB_CACHE_ONLY=1 forbids computing "
                          "it (make test re-runs notebooks from committed results only); make reproduce computes it")
    start = time.perf_counter()
    result = compute()
    record = save_record(path, params, result, seed=seed, profile=profile, data_files=data_files,
                         seconds=time.perf_counter() - start, extra=extra)
    record["cached"] = False
    record["path"] = str(path)
    return record


def records(name: str, root: str | os.PathLike | None = None) -> list[dict]:
    """Every record of one notebook, newest first, each with its ``path``."""
    folder = Path(root or RESULTS) / name
    out = []
    for path in folder.glob("*.json"):
        rec = json.loads(path.read_text())
        rec["path"] = str(path)
        out.append(rec)
    return sorted(out, key=lambda r: r["provenance"].get("created", ""), reverse=True)
