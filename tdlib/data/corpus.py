"""Unlabelled text for general distillation: read documents, pack them into 128-token sequences.

Sources, in order: an explicit path; the ``TDLIB_CORPUS`` environment variable (a text file or a
folder of them; ../shared/data/corpus/enwiki-2015-wikiextractor/train here); the hub's Wikipedia
(``datasets``, needs a network; the ``paper`` profile). Files may be plain text (a blank line ends
a document) or WikiExtractor's document format (``<doc ...>`` ... ``</doc>``, whose marker lines are
dropped and taken as document boundaries).

Packing follows BERT pre-training: sentences of one document fill a sequence up to
``max_length - 2`` tokens between [CLS] and [SEP]; a document never runs into the next, so no
sequence mixes two articles. Packing is deterministic given the files and ``max_sequences``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import datasets
from tqdm import tqdm

from tdlib.core.errors import DataError

HUB_CORPUS = ("wikimedia/wikipedia", "20231101.en")


def corpus_files(path: str | os.PathLike | None = None) -> list[Path]:
    """The corpus's text files, sorted (explicit path, then ``TDLIB_CORPUS``); [] means "use the hub"."""
    path = path or os.environ.get("TDLIB_CORPUS")
    if not path:
        return []
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"corpus {root} does not exist; set TDLIB_CORPUS (or pass corpus=) to a text file or folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise DataError(f"corpus folder {root} holds no files")
    return files


def heldout_path(path: str | os.PathLike | None = None) -> Path:
    """Text that general distillation never reads, for the recovery proxies (:mod:`tdlib.distill.proxies`).

    An explicit path, then ``TDLIB_HELDOUT``, then a ``heldout`` folder beside the corpus folder
    (../shared/data/corpus/enwiki-2015-wikiextractor/heldout: 122 articles not in ``train/``).
    """
    path = path or os.environ.get("TDLIB_HELDOUT")
    if not path:
        corpus = os.environ.get("TDLIB_CORPUS")
        sibling = Path(corpus).parent / "heldout" if corpus else None
        if sibling is None or not sibling.is_dir():
            raise DataError("no held-out text for the recovery proxies: set TDLIB_HELDOUT to a text file or folder "
                            "that the corpus does not contain (or put a 'heldout' folder beside TDLIB_CORPUS)")
        path = sibling
    corpus_files(path)  # exists and holds files, or one clear error
    return Path(path)


def _lines(path: Path) -> Iterator[str]:
    with path.open("rb") as fh:
        head = fh.read(4096)
    if b"\x00" in head:
        raise DataError(f"corpus file {path} is not text (it holds NUL bytes); point TDLIB_CORPUS at text files")
    try:
        with path.open(encoding="utf-8") as fh:
            yield from fh
    except UnicodeDecodeError as exc:
        raise DataError(f"corpus file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_documents(files: list[Path]) -> Iterator[str]:
    """Documents as strings (paragraphs joined by newlines), from plain or WikiExtractor files.

    A file whose first non-blank line is a ``<doc`` marker is read in WikiExtractor format (blank
    lines inside an article are paragraph breaks); otherwise a blank line ends a document.
    """
    for path in files:
        current: list[str] = []
        wiki: bool | None = None
        for raw in _lines(path):
            line = raw.strip()
            if wiki is None and line:
                wiki = line.startswith("<doc ")
            boundary = line.startswith("<doc ") or line == "</doc>" if wiki else not line
            if boundary:
                if current:
                    yield "\n".join(current)
                current = []
            elif line:
                current.append(line)
        if current:
            yield "\n".join(current)


def pack(documents, tokenizer, max_length: int = 128, max_sequences: int | None = None,
         min_tokens: int | None = None, progress: bool = True) -> dict[str, list[list[int]]]:
    """Token-pack documents into [CLS] ... [SEP] sequences of at most ``max_length`` tokens.

    A sequence collects whole lines (paragraphs) of one document while they fit; a longer line is
    cut. Sequences shorter than ``min_tokens`` (stubs; default: 16 or a quarter of the room) are
    dropped. Returns padded ``input_ids`` and ``attention_mask`` lists.
    """
    room = max_length - 2
    min_tokens = min(16, max(1, room // 4)) if min_tokens is None else min_tokens
    ids: list[list[int]] = []
    bar = tqdm(total=max_sequences, desc="pack corpus", unit="seq", disable=not progress)

    def emit(chunk: list[int]) -> bool:
        if len(chunk) >= min_tokens:
            ids.append(chunk)
            bar.update(1)
        return max_sequences is not None and len(ids) >= max_sequences

    done = False
    for doc in documents:
        chunk: list[int] = []
        for line in doc.split("\n"):
            toks = tokenizer(line, add_special_tokens=False, verbose=False)["input_ids"]
            while toks:
                space = room - len(chunk)
                if len(toks) <= space:
                    chunk += toks
                    toks = []
                else:
                    if chunk and len(toks) <= room:  # start the line in a new sequence
                        done = emit(chunk)
                        chunk = []
                        if done:
                            break
                        continue
                    chunk += toks[:space]
                    toks = toks[space:]
                    done = emit(chunk)
                    chunk = []
                    if done:
                        break
            if done:
                break
        if not done and chunk:
            done = emit(chunk)
        if done:
            break
    bar.close()
    if not ids:
        raise DataError("the corpus yielded no sequences (empty files, or only stubs shorter than "
                        f"{min_tokens} tokens); point TDLIB_CORPUS at real text")
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    input_ids, mask = [], []
    for chunk in ids:
        seq = [cls, *chunk, sep]
        input_ids.append(seq + [pad] * (max_length - len(seq)))
        mask.append([1] * len(seq) + [0] * (max_length - len(seq)))
    return {"input_ids": input_ids, "attention_mask": mask}


def load_corpus(tokenizer, path: str | os.PathLike | None = None, max_length: int = 128,
                max_sequences: int | None = None, progress: bool = True):
    """A packed ``datasets.Dataset`` (input_ids, attention_mask) and the files it came from."""

    files = corpus_files(path)
    if files:
        docs = read_documents(files)
    else:
        try:
            hub = datasets.load_dataset(*HUB_CORPUS, split="train", streaming=True)
        except Exception as exc:  # noqa: BLE001 (offline, missing cache, ...)
            raise DataError(f"no corpus given (TDLIB_CORPUS unset) and the hub failed ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200]}); set TDLIB_CORPUS to a text file or folder") from None
        docs = (row["text"] for row in hub)
    packed = pack(docs, tokenizer, max_length, max_sequences, progress=progress)
    return datasets.Dataset.from_dict(packed), files
