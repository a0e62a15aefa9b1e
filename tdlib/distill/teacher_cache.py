"""The teacher's distillation targets, computed once and shared by every student: general distillation's
(:class:`TeacherCache`) and a fine-tuned teacher's logits for task distillation (:func:`cached_teacher_logits`).

Why: every student of a profile distils from the same pre-trained teacher on the same corpus sequences,
and the teacher's forward is a quarter of a distillation step. The targets of the paper's loss are the
last layer's query and key outputs (the attention scores are Q K^T, recomputed from them: 4x smaller than
storing the scores) and its hidden states. They are stored per sequence, in the dataset's order, as
memory-mapped float16 ``.npy`` files (dataset rows are looked up by their ``idx`` column, so any shuffled
order reads the right rows), with a sha256 of each file in ``meta.json``.

A cache is keyed by (teacher, corpus identity, sequence length, precision); a cache whose files fail
their checksum, or whose ``meta.json`` describes another teacher or corpus, is rebuilt, never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tdlib.core.io import key_of, sha256_file, write_json_atomic
from tdlib.core.precision import autocast
from tdlib.distill.forward import MODEL_INPUTS, LastLayerTaps, inputs, predict

FIELDS = ("q", "k", "h")  # last-layer query output, key output, hidden state: (n, seq_len, D) each
ALL_LAYERS = "hs"  # with all_layers=True: the hidden states of layers 1..L-1 too, (n, L-1, seq_len, D)



class TeacherCache:
    """Memory-mapped teacher targets of one dataset; :meth:`build_or_open` is the way in."""

    def __init__(self, path: Path, meta: dict) -> None:
        self.path, self.meta = Path(path), meta
        self.arrays = {f: np.load(self.path / f"{f}.npy", mmap_mode="r") for f in meta.get("fields", FIELDS)}

    @staticmethod
    def key(identity: dict) -> str:
        return key_of(identity)

    @classmethod
    def build_or_open(cls, root: str | Path, identity: dict, teacher: nn.Module, dataset, precision: str = "fp32",
                      batch_size: int = 32, progress: bool = True, all_layers: bool = False) -> TeacherCache:
        """Open ``root/<key(identity)>`` if it is whole and of this identity, else (re)build it there.

        ``all_layers`` also stores every intermediate layer's hidden states (objectives that match all layers).
        """
        identity = {**identity, "precision": precision, "rows": len(dataset)}
        if all_layers:
            identity["fields"] = [*FIELDS, ALL_LAYERS]
        path = Path(root) / cls.key(identity)
        meta = cls.check(path, identity)
        if meta is None:
            meta = cls._build(path, identity, teacher, dataset, precision, batch_size, progress)
        return cls(path, meta)

    @staticmethod
    def check(path: Path, identity: dict) -> dict | None:
        """The cache's meta if its identity matches and every file passes its checksum; None means rebuild."""
        meta_file = path / "meta.json"
        if not meta_file.is_file():
            return None
        try:
            meta = json.loads(meta_file.read_text())
        except json.JSONDecodeError:
            return None
        if meta.get("identity") != json.loads(json.dumps(identity, default=str)):
            return None  # a foreign cache (copied, or written by other code): never read it
        for field in identity.get("fields", FIELDS):
            file = path / f"{field}.npy"
            if not file.is_file() or sha256_file(file, memo=False) != meta.get("sha256", {}).get(field):
                return None
        return meta

    @staticmethod
    def _build(path: Path, identity: dict, teacher: nn.Module, dataset, precision: str, batch_size: int,
               progress: bool) -> dict:

        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(path, ignore_errors=True)
        tmp.mkdir(parents=True)
        n, seq_len, d = len(dataset), len(dataset[0]["input_ids"]), teacher.config.hidden_size
        fields = identity.get("fields", FIELDS)
        arrays = {f: np.lib.format.open_memmap(tmp / f"{f}.npy", mode="w+", dtype=np.float16, shape=(n, seq_len, d))
                  for f in FIELDS}
        if ALL_LAYERS in fields:
            inner = teacher.config.num_hidden_layers - 1
            arrays[ALL_LAYERS] = np.lib.format.open_memmap(tmp / f"{ALL_LAYERS}.npy", mode="w+", dtype=np.float16,
                                                           shape=(n, inner, seq_len, d))
        teacher.eval()
        loader = torch.utils.data.DataLoader(dataset.with_format("torch"), batch_size=batch_size, shuffle=False)
        start = 0
        with torch.no_grad():
            for batch in tqdm(loader, desc="teacher cache", disable=not progress, leave=False):
                with LastLayerTaps(teacher) as taps, autocast(precision):
                    out = teacher(**inputs(batch), output_hidden_states=True)
                stop = start + batch["input_ids"].shape[0]
                for field, value in (("q", taps.q), ("k", taps.k), ("h", out.hidden_states[-1])):
                    arrays[field][start:stop] = value.float().numpy().astype(np.float16)
                if ALL_LAYERS in arrays:
                    inner = torch.stack(out.hidden_states[1:-1], dim=1)
                    arrays[ALL_LAYERS][start:stop] = inner.float().numpy().astype(np.float16)
                start = stop
        for array in arrays.values():
            array.flush()
        del arrays
        meta = {"identity": identity, "shape": [n, seq_len, d], "dtype": "float16", "fields": list(fields),
                "sha256": {f: sha256_file(tmp / f"{f}.npy") for f in fields}}
        write_json_atomic(tmp / "meta.json", meta)
        tmp.rename(path)
        return meta

    def targets(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """fp32 tensors q, k, h (and hs) for dataset rows ``idx``."""
        rows = np.sort(idx.cpu().numpy())
        order = np.argsort(np.argsort(idx.cpu().numpy()))  # back to the batch's order
        return {f: torch.from_numpy(np.asarray(a[rows], dtype=np.float32)[order]) for f, a in self.arrays.items()}


def cached_teacher_logits(teacher: nn.Module, teacher_dir: str | Path, dataset, precision: str = "fp32",
                   progress: bool = True) -> np.ndarray:
    """The fine-tuned ``teacher``'s logits (fp32, in row order) on every row of ``dataset``, computed once and
    kept beside the teacher (``<teacher_dir>/../logits/<key>.npy``).

    Why: every student and seed of a profile distils a task from the same frozen teacher on the same training
    set, and in stage 2 the teacher's forward was a large part of a step: reading the file made notebook 03's
    RTE runs 1.5x faster for IV-36-192 and 3.8x for dense-1L-144 (README). The teacher runs in eval mode, so a row's
    logits do not depend on the step or the batch that reads them (but for rounding: a cached row was padded
    with other neighbours). The key is the teacher's weights, the rows' model inputs and the precision, so a
    retrained teacher or another training set never reads another's logits; a file that does not load as
    ``(rows, labels)`` finite floats is recomputed.
    """

    teacher_dir = Path(teacher_dir)
    weights = teacher_dir / "model.safetensors"
    digest = hashlib.sha256(json.dumps({"weights": sha256_file(weights) if weights.is_file() else str(teacher_dir),
                                        "precision": precision}).encode())
    columns = [c for c in MODEL_INPUTS if c in dataset.column_names]
    rows = dataset.with_format(None).select_columns(columns)[:]  # every row's model inputs, as lists
    for column in columns:
        digest.update(json.dumps(rows[column]).encode())
    file = teacher_dir.parent / "logits" / f"{digest.hexdigest()[:16]}.npy"
    shape = (len(dataset), teacher.config.num_labels)
    try:
        cached = np.load(file)
        if cached.shape == shape and cached.dtype == np.float32 and np.isfinite(cached).all():
            return cached
    except (OSError, ValueError):
        pass  # absent or unreadable: compute it
    logits = predict(teacher, dataset, progress=progress, precision=precision)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f"{file.stem}.{os.getpid()}.partial.npy")
    np.save(tmp, logits.astype(np.float32))
    os.replace(tmp, file)  # atomic: a reader sees the whole file or none
    return logits.astype(np.float32)
