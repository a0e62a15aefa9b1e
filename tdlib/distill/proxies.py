"""Cheap proxies of how much of the teacher's function a student keeps, read during general distillation.

Why: GLUE needs a fine-tuned teacher and two task-distillation stages per task, so it can be measured only
at the end of a run. These two need one forward over a few hundred sequences, so they can be taken at every
checkpoint of a recovery curve (:func:`tdlib.distill.loop.train`'s ``evaluate``):

- ``cosine``: the mean cosine between the student's and the teacher's sentence embeddings (mean-pooled last
  hidden states) on held-out text (:func:`tdlib.data.corpus.heldout_path`). Raw hidden-state MSE is dominated
  by a few outlier dimensions; the cosine of the pooled vectors is what an embedding user sees. A narrower
  student is compared with the teacher's embedding projected onto its basis (``hidden_projection``).
- ``stsb``: zero-shot STS-B dev Spearman x 100 of the cosine of the two sentences' embeddings, with no task
  training (all-MiniLM-L6-v2 is a sentence-embedding model: this is its native use, and claim C5's).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import torch
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer
from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator, SimilarityFunction
from torch import nn
from tqdm import tqdm

from tdlib.core.heads import mean_pool
from tdlib.core.precision import autocast
from tdlib.data.collate import pad_collate, pad_token_id
from tdlib.data.corpus import corpus_files, heldout_path, load_corpus
from tdlib.data.glue import correlation, load_task, task_file
from tdlib.distill.forward import hidden_projection

PROXIES = ("cosine", "stsb")



def encoder_of(model: nn.Module) -> nn.Module:
    """The bare encoder of a model with or without a task head (or a DDP wrapper)."""
    model = getattr(model, "module", model)
    return getattr(model, "base_model", model)


@torch.no_grad()
def embed(model: nn.Module, dataset, batch_size: int = 64, precision: str = "fp32",
          progress: bool = False) -> torch.Tensor:
    """Mean-pooled last hidden states (fp32, N x D) of a tokenised dataset with ``input_ids``/``attention_mask``."""
    encoder = encoder_of(model)
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         collate_fn=pad_collate(pad_token_id(encoder)))
    out = []
    for batch in tqdm(loader, desc="embed", disable=not progress, leave=False):
        batch = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with autocast(precision, device):
            hidden = encoder(**batch).last_hidden_state
        out.append(mean_pool(hidden.float(), batch["attention_mask"]).cpu())
    encoder.train(was_training)
    return torch.cat(out)


def _tokenised(tokenizer, texts: list[str], max_length: int):
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
                                      ).with_format("torch")


def stsb_spearman(a: torch.Tensor, b: torch.Tensor, gold) -> float:
    """Spearman x 100 of the pairwise cosine of two embedding sets against gold similarity scores."""

    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).numpy()
    return float(100.0 * correlation(spearmanr, cos, np.asarray(gold, dtype=float)))


class Proxies:
    """The two proxies against one teacher, on fixed data; ``proxies(student)`` -> ``{"cosine", "stsb"}``.

    Built once per teacher: its held-out embeddings are computed here and reused at every checkpoint.
    ``heldout`` is a tokenised dataset (``input_ids``, ``attention_mask``: e.g. packed held-out sequences);
    ``stsb`` is ``(sentences1, sentences2, gold)``, tokenised here one sentence at a time.
    """

    def __init__(self, teacher: nn.Module, tokenizer, heldout, stsb: tuple[list[str], list[str], list[float]],
                 batch_size: int = 64, precision: str = "fp32", max_length: int = 128) -> None:
        self.heldout = heldout.with_format("torch", columns=["input_ids", "attention_mask"])
        self.pairs = tuple(_tokenised(tokenizer, list(texts), max_length) for texts in stsb[:2])
        self.gold = np.asarray(stsb[2], dtype=float)
        self.batch_size, self.precision = batch_size, precision
        self.teacher_embeddings = embed(teacher, self.heldout, batch_size, precision)
        self.teacher = self(teacher, reference=True)

    def __call__(self, model: nn.Module, reference: bool = False) -> dict[str, float]:
        a, b = (embed(model, p, self.batch_size, self.precision) for p in self.pairs)
        out = {"stsb": stsb_spearman(a, b, self.gold)}
        if reference:
            out["cosine"] = 1.0
            return out
        target = self.teacher_embeddings
        proj = hidden_projection(getattr(model, "module", model))
        if proj is not None:
            target = target @ proj.float()
        student = embed(model, self.heldout, self.batch_size, self.precision)
        out["cosine"] = float(torch.nn.functional.cosine_similarity(student, target, dim=-1).mean())
        return out

    @classmethod
    def from_data(cls, teacher: nn.Module, tokenizer, sequences: int = 256, max_length: int = 128,
                  heldout: str | None = None, glue_dir: str | None = None, precision: str = "fp32",
                  progress: bool = True, pairs: int | None = None) -> Proxies:
        """The profile's proxies: ``sequences`` packed held-out sequences and the STS-B dev set (``pairs``: its first
        pairs only; None: all)."""

        max_length = min(max_length, teacher.config.max_position_embeddings)
        corpus, _ = load_corpus(tokenizer, heldout_path(heldout), max_length=max_length, max_sequences=sequences,
                                progress=progress)
        dev = stsb_dev(glue_dir, pairs)
        return cls(teacher, tokenizer, corpus, (dev["text_a"], dev["text_b"], dev["label"]), precision=precision,
                   max_length=max_length)

    @classmethod
    def for_settings(cls, s, teacher: nn.Module, tokenizer, progress: bool = True) -> Proxies:
        """The proxies of a GLUE experiment's settings ``s`` (:class:`tdlib.studies.settings.Settings`): notebooks
        03, 07 and 09 build the same ones, so their general-distillation runs (whose identity holds the curve) match."""
        return cls.from_data(teacher, tokenizer, sequences=s.proxy_sequences, max_length=s.general_max_length,
                             precision=s.precision, progress=progress, pairs=s.proxy_pairs)


def stsb_dev(glue_dir: str | None = None, pairs: int | None = None):
    """The STS-B dev set the proxies score: its first ``pairs`` pairs, or all of them (None)."""
    dev = load_task("stsb", "dev", glue_dir)
    return dev if pairs is None else dev.select(range(min(pairs, len(dev))))


def st_stsb(model: SentenceTransformer | str | Path, glue_dir: str | None = None, batch_size: int = 64,
            max_pairs: int | None = None) -> float:
    """Zero-shot STS-B dev Spearman x 100 of a sentence-transformers model, by sentence-transformers' own
    ``EmbeddingSimilarityEvaluator`` (cosine): the measure the teacher's users read, beside :class:`Proxies`'
    ``stsb`` (tdlib's own pooling code). ``max_pairs``: the first pairs only (tests)."""
    st = model if isinstance(model, SentenceTransformer) else SentenceTransformer(str(model), device="cpu")
    dev = stsb_dev(glue_dir, max_pairs)
    evaluator = EmbeddingSimilarityEvaluator(list(dev["text_a"]), list(dev["text_b"]), [g / 5 for g in dev["label"]],
                                             main_similarity=SimilarityFunction.COSINE, batch_size=batch_size,
                                             show_progress_bar=False)
    return 100 * float(evaluator(st)[evaluator.primary_metric])


def proxy_files(heldout: str | None = None, glue_dir: str | None = None) -> list:
    """The files the proxies read (for a record's data checksums)."""

    stsb = task_file("stsb", "dev", glue_dir)
    return [*corpus_files(heldout_path(heldout)), *([stsb] if stsb is not None else [])]


EXTRAPOLATION_HORIZON = 100  # x the last measured step: a log-linear trend says nothing credible further out


def milestones(curve: list[dict], teacher: dict[str, float], fractions=(0.9, 0.95),
               horizon: float = EXTRAPOLATION_HORIZON) -> dict:
    """For each proxy and fraction f: the first step whose value reaches f x the teacher's, else a labelled
    log-linear extrapolation from the curve's last two points (None when the trend is flat or falling).

    An extrapolation past ``horizon`` x the last measured step is not given as a step (a nearly flat curve
    otherwise "reaches" its target at 1e27 steps): its step is None and ``extrapolated_step`` keeps the figure.
    """
    out: dict = {}
    for proxy in PROXIES:
        points = [(c["step"], c[proxy]) for c in curve if proxy in c]
        for f in fractions:
            target = f * teacher[proxy]
            hit = next((s for s, v in points if v >= target), None)
            key = f"{proxy}@{round(100 * f)}%"
            if hit is not None:
                out[key] = {"step": hit, "kind": "measured"}
                continue
            steps = [(s, v) for s, v in points if s > 0]
            if len(steps) >= 2 and steps[-1][1] > steps[-2][1]:
                (s0, v0), (s1, v1) = steps[-2], steps[-1]
                slope = (v1 - v0) / (np.log(s1) - np.log(s0))  # gain per e-fold of steps
                est = float(np.exp(min(np.log(s1) + (target - v1) / slope, 700.0)))  # 700: exp stays finite
                if est <= horizon * s1:
                    out[key] = {"step": est, "kind": "extrapolated (log-linear in steps, last two points)"}
                else:
                    out[key] = {"step": None, "extrapolated_step": est,
                                "kind": f"beyond {horizon:g}x the steps measured (log-linear extrapolation)"}
            else:
                out[key] = {"step": None, "kind": "not reached; the curve is flat or falling"}
    return out


def milestone_label(m: dict) -> str:
    """One table cell for a milestone: the step, marked when extrapolated; otherwise why there is none."""
    if m["kind"] == "measured":
        return f"{m['step']:.0f}"
    if m["step"] is not None:
        return f"~{m['step']:.0f} (extrapolated)"
    return m["kind"].split(";")[0].split(" (")[0]  # "not reached", "beyond 100x the steps measured"
