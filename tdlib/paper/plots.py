"""Figures: one place that decides where figures go and in which formats (PNG for the README, PDF for papers)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from tdlib.studies.records import ROOT


def figures_root() -> Path:
    """Where figures go: ``$TDLIB_FIGURES``, else ``figures/`` (read at each call, as records' folder is)."""
    return Path(os.environ.get("TDLIB_FIGURES") or ROOT / "figures")


def savefig(fig: plt.Figure, name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Write ``<root>/<name>.png`` and ``.pdf`` (atomically enough: matplotlib writes whole files)."""
    root = Path(root or figures_root())
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = root / f"{name}.{ext}"
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight", metadata={"CreationDate": None} if ext == "pdf"
                    else None)
        os.replace(tmp, path)
        paths.append(path)
    return paths


PROXY_LABELS = (("cosine", "embedding cosine to the teacher (held-out)"),
                ("stsb", "zero-shot STS-B dev Spearman x 100"))


def recovery_figure(curves: dict[str, dict], teacher: dict[str, float], dashed=(), title: str = "") -> plt.Figure:
    """Recovery curves (notebooks 03 and 07): each proxy against tokens distilled (log), the teacher's level drawn.

    ``curves`` maps a run's name to its record entry (``curve``, ``tokens``, ``steps``); runs named in ``dashed``
    (controls, or another notebook's runs) are drawn dashed. Step 0 is drawn at half a step, on the log axis.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (proxy, label) in zip(axes, PROXY_LABELS, strict=True):
        for name, entry in curves.items():
            tokens_per_step = entry["tokens"] / entry["steps"]
            xs = [max(p["step"], 0.5) * tokens_per_step / 1e6 for p in entry["curve"]]
            ax.plot(xs, [p[proxy] for p in entry["curve"]], "--" if name in dashed else "-", marker="o", ms=3,
                    label=name)
        ax.axhline(teacher[proxy], color="k", lw=1, label="teacher")
        ax.set_xscale("log")
        ax.set_xlabel("tokens distilled (millions; log)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def scaling_figure(curves: dict[str, dict], trends: dict, floor: float, target: float, paper_tokens: float,
                   ylabel: str) -> plt.Figure:
    """Score against general-distillation tokens (log), one line per student (seed mean, seed range as bars), its
    fitted trend dashed out to the paper's budget; the teacher (100), the majority-class floor and ``target``. Where
    the points trained in more than one precision (hosts differ), those of the rarer one have open markers."""
    fig, ax = plt.subplots(figsize=(8, 4.6))
    precisions = Counter(p for entry in curves.values() for p in entry.get("trained_in", []))
    rare = min(sorted(precisions), key=precisions.get) if len(precisions) > 1 else None
    for name, entry in curves.items():
        xs = np.asarray(entry["tokens"], dtype=float)
        values = [np.array(list(s.values())) for s in entry["scores"]]
        mean = np.array([v.mean() for v in values])
        err = np.array([[m - v.min() for m, v in zip(mean, values, strict=True)],
                        [v.max() - m for m, v in zip(mean, values, strict=True)]])
        line = ax.errorbar(xs, mean, yerr=err, marker="o", ms=4, capsize=2, label=name)
        odd = np.array([p == rare for p in entry.get("trained_in", [])], dtype=bool)
        if odd.any():
            ax.plot(xs[odd], mean[odd], "o", ms=6, color=line[0].get_color(), mfc="white", zorder=3)
        trend = trends.get(name)
        if trend is not None:
            ends = np.array([xs[0], paper_tokens])
            ax.plot(ends, [_fitted(trend, e) for e in ends], "--", color=line[0].get_color(), lw=1)
    if rare is not None:
        ax.plot([], [], "o", ms=6, mfc="white", mec="grey", ls="none",
                label=f"open: trained in {rare} (the rest {'/'.join(sorted(set(precisions) - {rare}))})")
    ax.axhline(100, color="k", lw=1, label="teacher")
    ax.axhline(floor, color="grey", lw=1, ls=":", label="majority class")
    ax.axhline(target, color="tab:red", lw=1, ls="-.", label=f"paper's claim ({target:g}%)")
    ax.axvline(paper_tokens, color="k", lw=0.8, ls=":")
    ax.annotate("paper's budget", (paper_tokens, floor), rotation=90, fontsize=7, ha="right", va="bottom")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("general-distillation tokens (log2)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _fitted(trend, tokens: float) -> float:
    """The trend line's value at ``tokens`` (from its value at ``trend.at_tokens`` and its slope)."""
    return trend.value - trend.slope * np.log2(trend.at_tokens / tokens)
