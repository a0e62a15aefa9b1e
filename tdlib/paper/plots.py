"""Figures: one place that decides where figures go and in which formats (PNG for the README, PDF for papers)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt

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
