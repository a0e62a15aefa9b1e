"""Deployment format: a compressed (or dense) student as a sentence-transformers model.

The default teacher, all-MiniLM-L6-v2, is a sentence-transformers model (mean pooling, then L2 normalisation); its
users call ``SentenceTransformer(...).encode(...)``. :func:`export_sentence_transformers` saves a student the same
way: the encoder (with ``modeling_tdlib.py`` beside it, so its ``tdlib_bert`` classes load through ``AutoModel``),
the tokenizer, and the teacher's own pooling and normalisation modules, re-sized to the student's width, plus the
model card. ``SentenceTransformer(out)`` then loads it where ``tdlib`` is imported (which registers ``tdlib_bert``)
and, without tdlib, with ``trust_remote_code=True``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sentence_transformers import SentenceTransformer, models
from torch import nn

from tdlib.core.errors import ConfigError
from tdlib.core.modeling_tdlib import write_model_card
from tdlib.core.pretrained import load_model, load_tokenizer, resolve

FORMATS = ("sentence-transformers", "onnx", "openvino")  # tdlib.core.deploy.export_onnx, export_openvino


def teacher_modules(teacher: str | Path) -> tuple[dict, bool, int | None]:
    """The teacher's sentence-transformers pooling config, whether it normalises, and its max_seq_length.

    A teacher that is not a sentence-transformers directory (no ``modules.json``, e.g. bert-base-uncased) gives mean
    pooling without normalisation: the pooling tdlib's zero-shot proxy reads."""
    path = Path(resolve(teacher))
    mean = {"pooling_mode": "mean"}
    if not (path / "modules.json").is_file():
        return mean, False, None
    modules = json.loads((path / "modules.json").read_text())
    pooling, normalize = mean, False
    for module in modules:
        if module["type"].endswith("Pooling"):
            pooling = json.loads((path / module["path"] / "config.json").read_text())
        normalize |= module["type"].endswith("Normalize")
    bert_config = path / "sentence_bert_config.json"
    max_len = json.loads(bert_config.read_text()).get("max_seq_length") if bert_config.is_file() else None
    return pooling, normalize, max_len


def pooling_mode(config: dict) -> str:
    """sentence-transformers' ``pooling_mode`` of a Pooling config (its current key, or the older boolean flags)."""
    if config.get("pooling_mode"):
        return config["pooling_mode"]
    flags = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens",
             "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens"}
    chosen = [mode for mode, key in flags.items() if config.get(key)]
    if len(chosen) != 1:
        raise ConfigError(f"the teacher's pooling config sets {chosen or 'no'} pooling modes; tdlib exports one")
    return chosen[0]


def export_sentence_transformers(model: nn.Module | str | Path, out: str | Path, teacher: str | Path = "minilm",
                                 scores: dict | None = None, overwrite: bool = False) -> Path:
    """Save ``model`` as a directory ``SentenceTransformer(out)`` loads, with the teacher's pooling and normalisation.

    Parameters
    ----------
    model : transformers model, str or Path
        A student encoder (compressed by tdlib, or a dense baseline), or the directory it was saved in.
    out : str or Path
        The directory to write (refused when it exists and is not empty, unless ``overwrite``).
    teacher : str or Path
        The sentence-transformers teacher whose pooling, normalisation and ``max_seq_length`` the student keeps.
    scores : dict, optional
        Scores to state in the model card (name -> value), e.g. zero-shot STS-B.
    overwrite : bool
        Replace a non-empty ``out``.

    Returns
    -------
    Path
        ``out``.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} exists and is not empty; pass overwrite=True (CLI: --overwrite) or another folder")
    source = Path(model) if isinstance(model, str | Path) else None
    encoder = load_model(source) if source is not None else model
    encoder = getattr(encoder, "base_model", encoder)  # a task model's encoder: sentence embeddings read the encoder
    tokenizer = load_tokenizer(source if source is not None and (source / "tokenizer_config.json").is_file()
                               else teacher)
    pooling, normalize, max_len = teacher_modules(teacher)
    shutil.rmtree(out, ignore_errors=True)
    staged = out.with_name(f".{out.name}.encoder")
    shutil.rmtree(staged, ignore_errors=True)
    encoder.save_pretrained(str(staged))
    tokenizer.save_pretrained(str(staged))
    transformer = models.Transformer(str(staged), max_seq_length=max_len)
    chain = [transformer, models.Pooling(encoder.config.hidden_size, pooling_mode=pooling_mode(pooling))]
    if normalize:
        chain.append(models.Normalize())
    SentenceTransformer(modules=chain, device="cpu").save(str(out))
    shutil.rmtree(staged, ignore_errors=True)
    write_model_card(encoder, out, "sentence-transformers", scores)
    return out
