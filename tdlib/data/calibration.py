"""Calibration text for the data-aware inits: packed held-out corpus sequences, and the teacher's activations on
them (:func:`tdlib.core.calibrate.calibrate`) cached on disk by the teacher's weights and the text's sha256."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from tdlib.core.calibrate import PROXY_SEQUENCES, Calibration, calibrate, weights_fingerprint
from tdlib.core.errors import DataError
from tdlib.core.io import key_of, sha256_file
from tdlib.data.corpus import heldout_path, load_corpus


def calibration_text(tokenizer, sequences: int = 128, max_length: int = 128, heldout: str | None = None,
                     skip: int = PROXY_SEQUENCES, progress: bool = False):
    """``sequences`` packed held-out sequences after the first ``skip`` (those the recovery proxies read).

    Returns (dataset with ``input_ids``/``attention_mask``, the files read).
    """

    data, files = load_corpus(tokenizer, heldout_path(heldout), max_length=max_length,
                              max_sequences=skip + sequences, progress=progress)
    if len(data) < skip + sequences:
        raise DataError(f"the held-out text yields {len(data)} sequences of {max_length} tokens; calibration needs "
                        f"{skip} (the proxies') + {sequences}: pass fewer sequences or a larger TDLIB_HELDOUT")
    return data.select(range(skip, skip + sequences)), files


def cached_calibration(teacher: nn.Module, tokenizer, root: str | os.PathLike, sequences: int = 128,
                       max_length: int = 128, ops: str = "san_ffn", heldout: str | None = None,
                       skip: int = PROXY_SEQUENCES, progress: bool = True) -> Calibration:
    """:func:`calibrate` on :func:`calibration_text`, cached under ``root/<key>`` (key: teacher weights, text
    files' sha256, skip, sequences, length, ops); a cache of another identity, or a corrupt one, is rebuilt.

    ``max_length`` is capped at the teacher's position embeddings. ``skip`` sequences of this length cover at
    least the text of the proxies' ``skip`` sequences whenever the proxies' length is not longer.
    """

    max_length = min(max_length, teacher.config.max_position_embeddings)
    data, files = calibration_text(tokenizer, sequences, max_length, heldout, skip, progress=progress)
    identity = {"teacher": weights_fingerprint(teacher), "text": [sha256_file(f)[:16] for f in files],
                "skip": skip, "sequences": sequences, "max_length": max_length, "ops": ops}
    key = key_of(identity)
    path = Path(root) / key
    found = Calibration.load(path, identity)
    if found is not None:
        return found
    cal = calibrate(teacher, data, ops, identity=identity, progress=progress)
    cal.save(path)
    return cal
