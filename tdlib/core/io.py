"""File I/O the core and every layer above it share: atomic writes, checksums, the one key helper, checkpoints.

Writes go to a temporary name in the same folder and are renamed, so a crash never leaves half a file behind.
:func:`key_of` is the one way a configuration becomes a short, stable name (run folders, records, caches).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tdlib.core.errors import CheckpointError, ConfigError
from tdlib.core.modeling_tdlib import write_model_card


def key_of(obj, length: int = 12) -> str:
    """The short, stable name of a configuration: sha256 of its JSON (keys sorted, anything else by ``str``), cut to
    ``length`` hex digits. Run folders, records, calibration and teacher caches are all named by it, so equal
    settings always find the same file."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


_SHA_CACHE: dict[tuple[str, float, int], str] = {}


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


# -- loading -----------------------------------------------------------------------------------------
def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    index = path / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else [
        "model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        file = path / name
        if not file.exists():
            raise CheckpointError(f"{path} lacks {name}; save the model with save_pretrained (safetensors)")
        try:
            state.update(load_file(str(file)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{file} is corrupt or truncated ({exc}); re-save or re-download it") from None
    return state


def save_model_atomic(model: nn.Module, path: str | Path) -> Path:
    """``save_pretrained`` into a temporary sibling, then rename: a model directory is whole or absent.

    Tensors in ``model.tdlib_extra`` (e.g. a narrow student's hidden-state projection) are saved
    beside the weights in ``tdlib_extra.safetensors``; :func:`load_extra` reads them back. The directory gets its
    model card (``README.md``, :func:`tdlib.core.modeling_tdlib.model_card`), dense or compressed.
    """
    path = Path(path)
    extra = getattr(model, "tdlib_extra", None)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    if extra:
        save_file({k: v.contiguous() for k, v in extra.items()}, str(tmp / EXTRA_FILE))
    write_model_card(model, tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


EXTRA_FILE = "tdlib_extra.safetensors"


def load_extra(path: str | Path) -> dict[str, torch.Tensor]:
    """The extra tensors saved with a model directory ({} when there are none)."""

    file = Path(path) / EXTRA_FILE
    return load_file(str(file)) if file.exists() else {}


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``save_pretrained`` directory's weights into an existing model of the same structure."""

    result = model.load_state_dict(_read_state_dict(Path(path)), strict=False)
    if result.unexpected_keys or result.missing_keys:
        raise ConfigError(f"{path} does not fit this model: missing {result.missing_keys[:3]}, unexpected "
                          f"{result.unexpected_keys[:3]}; it was trained with another model configuration")
    return model
