"""GLUE data and metrics, as the paper reports them.

``load_task(task, split)`` returns a ``datasets.Dataset`` with the same columns whatever the
source: ``text_a``, ``text_b`` (empty for single-sentence tasks) and ``label`` (int class id, or
float score for STS-B), with class ids in the hub's ``glue`` order. Sources, in order: an explicit
``glue_dir``; the ``GLUE_DIR`` environment variable (the classic ``glue_data/<TASK>/{train,dev}.tsv``
layout; ../shared/data/glue here); the Hugging Face hub (``datasets.load_dataset("glue", ...)``),
which needs a network. A directory that is given but lacks the task's files is an error, never a
silent fall-back to the hub.

Metrics (scikit-learn / scipy): CoLA Matthews correlation; SST-2, MNLI-m/mm, QNLI, RTE accuracy;
MRPC and QQP F1 and accuracy; STS-B Pearson and Spearman. A task's score is the mean of its
reported metrics, and the GLUE average is the mean of task scores (MNLI-m and -mm count as two),
which is how "x% of BERT-base" is computed.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from tdlib.core.errors import ConfigError, DataError, check_choice


@dataclass(frozen=True)
class Task:
    name: str  # folder name in glue_data
    hub: str  # datasets "glue" config
    text_a: str | int  # TSV column (name, or index for header-less files)
    text_b: str | int | None
    label: str | int
    labels: tuple[str, ...]  # TSV label strings in hub class order; () = regression
    metrics: tuple[str, ...]
    max_length: int = 128
    header: bool = True
    hub_columns: tuple[str, str | None] = ("sentence", None)
    splits: tuple[str, ...] = ("train", "dev")

    @property
    def num_labels(self) -> int:
        return len(self.labels) or 1

    @property
    def is_regression(self) -> bool:
        return not self.labels


TASKS: dict[str, Task] = {
    "cola": Task("CoLA", "cola", 3, None, 1, ("0", "1"), ("mcc",), 64, header=False),
    "sst2": Task("SST-2", "sst2", "sentence", None, "label", ("0", "1"), ("acc",), 64),
    "mrpc": Task("MRPC", "mrpc", "#1 String", "#2 String", "Quality", ("0", "1"), ("f1", "acc"),
                 hub_columns=("sentence1", "sentence2")),
    "stsb": Task("STS-B", "stsb", "sentence1", "sentence2", "score", (), ("pearson", "spearman"),
                 hub_columns=("sentence1", "sentence2")),
    "rte": Task("RTE", "rte", "sentence1", "sentence2", "label", ("entailment", "not_entailment"), ("acc",),
                hub_columns=("sentence1", "sentence2")),
    "qnli": Task("QNLI", "qnli", "question", "sentence", "label", ("entailment", "not_entailment"), ("acc",),
                 hub_columns=("question", "sentence")),
    "qqp": Task("QQP", "qqp", "question1", "question2", "is_duplicate", ("0", "1"), ("f1", "acc"),
                hub_columns=("question1", "question2")),
    "mnli": Task("MNLI", "mnli", "sentence1", "sentence2", "gold_label", ("entailment", "neutral", "contradiction"),
                 ("acc",), hub_columns=("premise", "hypothesis"), splits=("train", "dev_matched", "dev_mismatched")),
}
PAPER_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
# Why WNLI is refused rather than supported: the paper, like BERT and TinyBERT, leaves it out of the GLUE
# average; its train and dev sets share sentences with flipped labels, so models score at or below the
# majority class (56%) and the number says nothing about compression.
REFUSED = {"wnli": "WNLI is left out, as in the paper (and BERT/TinyBERT): its dev set is adversarial to its "
                   "train set and models score at or below the 56% majority class, so it is not in the GLUE average; "
                   "choose one of the other tasks"}
DEV_SUFFIX = {"dev": "", "dev_matched": "m", "dev_mismatched": "mm"}
HUB_SPLITS = {"train": "train", "dev": "validation", "dev_matched": "validation_matched",
              "dev_mismatched": "validation_mismatched"}


def get_task(task: str) -> Task:
    key = task.lower().replace("-", "")
    if key in REFUSED:
        raise DataError(REFUSED[key])
    if key not in TASKS:
        raise DataError(f"unknown GLUE task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[key]


def dev_splits(task: str) -> tuple[str, ...]:
    """The dev splits a task reports: ``("dev",)``, or MNLI's matched and mismatched sets."""
    return get_task(task).splits[1:]


def task_files(task: str, glue_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every local file a task reads (train and each dev split); [] when the data comes from the hub."""
    spec = get_task(task)
    return [p for split in spec.splits if (p := task_file(task, split, glue_dir)) is not None]


def combine_dev_metrics(task: str, per_split: dict[str, dict[str, float]]) -> dict[str, float]:
    """One metrics dict over a task's dev splits: MNLI's become ``acc_m``, ``acc_mm``, ``score_m``, ...

    ``score`` stays the mean over splits; :func:`task_scores` gives each split its own GLUE column.
    """
    if len(per_split) == 1:
        return dict(next(iter(per_split.values())))
    out: dict[str, float] = {}
    for split, metrics in per_split.items():
        out.update({f"{k}_{DEV_SUFFIX[split]}": v for k, v in metrics.items()})
    out["score"] = float(np.mean([m["score"] for m in per_split.values()]))
    return out


def task_scores(task: str, metrics: dict[str, float]) -> dict[str, float]:
    """A task's columns of the GLUE average: ``{task: score}``, or ``mnli-m`` and ``mnli-mm`` (two columns)."""
    splits = dev_splits(task)
    if len(splits) == 1:
        return {task: metrics["score"]}
    return {f"{task}-{DEV_SUFFIX[s]}": metrics[f"score_{DEV_SUFFIX[s]}"] for s in splits}


def task_file(task: str, split: str, glue_dir: str | os.PathLike | None = None) -> Path | None:
    """The TSV for (task, split) from ``glue_dir`` or GLUE_DIR; None when neither is set (hub)."""
    spec = get_task(task)
    check_choice("split", split, spec.splits)
    root = glue_dir or os.environ.get("GLUE_DIR")
    if not root:
        return None
    path = Path(root) / spec.name / f"{split}.tsv"
    if not path.is_file():
        raise DataError(f"{path} not found: GLUE_DIR/glue_dir must hold {spec.name}/{split}.tsv in the classic "
                        f"glue_data layout (unset GLUE_DIR to use the hub, which needs a network)")
    return path


def read_tsv(path: Path, spec: Task) -> dict[str, list]:
    """Parse one GLUE TSV into text_a/text_b/label lists; one clear error per malformed row."""
    with path.open(encoding="utf-8-sig", newline="") as fh:  # utf-8-sig: MRPC starts with a BOM
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise DataError(f"{path} is empty")
    header = rows[0] if spec.header else None
    body = rows[1:] if spec.header else rows

    def col(key):
        if isinstance(key, int):
            return key
        if key not in header:
            raise DataError(f"{path}: header lacks column {key!r} (has {header}); is this {spec.name}'s file?")
        return header.index(key)

    ia, ib, il = col(spec.text_a), (col(spec.text_b) if spec.text_b is not None else None), col(spec.label)
    width = len(header) if header else max(ia, il) + 1
    out: dict[str, list] = {"text_a": [], "text_b": [], "label": []}
    for lineno, row in enumerate(body, start=2 if header else 1):
        if len(row) < width:
            raise DataError(f"{path}:{lineno}: {len(row)} tab-separated fields, expected {width}")
        raw = row[il].strip()
        if spec.is_regression:
            try:
                label = float(raw)
            except ValueError:
                raise DataError(f"{path}:{lineno}: score {raw!r} is not a number") from None
        else:
            if raw not in spec.labels:
                raise DataError(f"{path}:{lineno}: label {raw!r} is not one of {spec.labels}")
            label = spec.labels.index(raw)
        out["text_a"].append(row[ia])
        out["text_b"].append(row[ib] if ib is not None else "")
        out["label"].append(label)
    return out


def load_task(task: str, split: str = "train", glue_dir: str | os.PathLike | None = None,
              max_examples: int | None = None, seed: int = 0):
    """A GLUE split as a datasets.Dataset (text_a, text_b, label); ``max_examples`` subsamples (seeded)."""

    spec = get_task(task)
    path = task_file(task, split, glue_dir)
    if path is not None:
        data = datasets.Dataset.from_dict(read_tsv(path, spec))
    else:
        try:
            hub = datasets.load_dataset("glue", spec.hub, split=HUB_SPLITS[split])
        except Exception as exc:  # noqa: BLE001 (offline, missing cache, ...)
            raise DataError(f"GLUE {spec.name} {split}: no GLUE_DIR set and the hub failed "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); set GLUE_DIR to a "
                            "glue_data folder") from None
        a, b = spec.hub_columns
        data = datasets.Dataset.from_dict({"text_a": hub[a], "text_b": hub[b] if b else [""] * len(hub),
                                           "label": hub["label"]})
    if max_examples is not None and max_examples < len(data):
        data = data.shuffle(seed=seed).select(range(max_examples))
    return data


def compute_metrics(task: str, predictions, labels) -> dict[str, float]:
    """The task's reported metrics (as fractions), plus ``score``: their mean."""
    spec = get_task(task)
    preds, gold = np.asarray(predictions), np.asarray(labels)
    if preds.shape[0] != gold.shape[0]:
        raise DataError(f"{spec.name}: {preds.shape[0]} predictions for {gold.shape[0]} labels")
    if spec.is_regression:
        preds = preds.reshape(-1).astype(float)
    elif preds.ndim == 2:
        preds = preds.argmax(-1)
    fns = {"mcc": lambda: matthews_corrcoef(gold, preds), "acc": lambda: accuracy_score(gold, preds),
           "f1": lambda: f1_score(gold, preds), "pearson": lambda: correlation(pearsonr, preds, gold),
           "spearman": lambda: correlation(spearmanr, preds, gold)}
    out = {m: float(fns[m]()) for m in spec.metrics}
    out["score"] = float(np.mean([out[m] for m in spec.metrics]))
    return out


def correlation(fn, preds, gold) -> float:
    """A correlation; 0 for constant predictions (undefined, and no better than chance), not NaN."""
    if np.ptp(preds) == 0 or np.ptp(gold) == 0:
        return 0.0
    return fn(preds, gold)[0]


def glue_average(scores: dict[str, float]) -> float:
    """Mean of per-task scores (keys like 'cola', 'mnli-m', 'mnli-mm')."""
    if not scores:
        raise DataError("no task scores to average")
    return float(np.mean(list(scores.values())))


def encode(data, tokenizer, task: str, max_length: int | None = None, padding: bool = False,
           separate: bool = False):
    """Tokenise a split, truncated to the task's 64 or 128 tokens unless ``max_length`` is given.

    Unpadded by default: batches are padded to their longest example by :func:`tdlib.data.collate.pad_collate`.
    Why: CoLA and SST-2 sentences average 11-13 tokens, so padding every example to 64 would spend
    80% of each step's matmuls on padding. ``padding=True`` pads every example to ``max_length``.

    ``separate=True`` (the cosine pair head, :mod:`tdlib.core.heads`) tokenises each sentence of a pair on its own
    and joins them, ``[CLS] a [SEP] [CLS] b [SEP]`` with token types 0 and 1, each cut to half the length:
    each sentence keeps the [CLS] its single-sentence embedding is computed with.
    """
    spec = get_task(task)
    length = max_length or spec.max_length
    pair = spec.text_b is not None
    if separate and not pair:
        raise ConfigError(f"{spec.name} has one sentence per example; separate encoding (pooling 'cosine') "
                          "needs sentence pairs")

    def tok(batch):
        if not separate:
            return tokenizer(batch["text_a"], batch["text_b"] if pair else None, truncation=True,
                             max_length=length, padding="max_length" if padding else False)
        halves = [tokenizer(batch[col], truncation=True, max_length=length // 2)["input_ids"]
                  for col in ("text_a", "text_b")]
        out = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
        for a, b in zip(*halves, strict=True):
            pad = (length - len(a) - len(b)) if padding else 0
            out["input_ids"].append(a + b + [tokenizer.pad_token_id] * pad)
            out["token_type_ids"].append([0] * len(a) + [1] * len(b) + [0] * pad)
            out["attention_mask"].append([1] * (len(a) + len(b)) + [0] * pad)
        return out

    return data.map(tok, batched=True, desc=f"tokenise {spec.name}")
