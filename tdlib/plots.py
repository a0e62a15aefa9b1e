"""Figures: one place that decides where figures go and in which formats (PNG for the README, PDF for papers)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402

from .results import ROOT  # noqa: E402

FIGURES = Path(os.environ.get("TDLIB_FIGURES", ROOT / "figures"))


def savefig(fig: plt.Figure, name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """Write ``<root>/<name>.png`` and ``.pdf`` (atomically enough: matplotlib writes whole files)."""
    root = Path(root or FIGURES)
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
