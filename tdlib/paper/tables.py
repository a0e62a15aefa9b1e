"""Records as tidy tables: one row per observation, so a notebook's code is about its figure and its verdict.

A GLUE record (notebooks 03 and 05: ``results/03_glue/<key>.json``) nests its numbers by task, then by model, then
by metric; :func:`glue_scores` lays them out as one row per (task, model): the teacher, every student and the
majority-class floor, each with its dev metrics, its fidelity to the teacher, the spread of its logits and, for a
student run with several task seeds, each metric's range over them.
"""

from __future__ import annotations

import pandas as pd

TEACHER, MAJORITY = "teacher", "majority class"
FIDELITY = ("agreement", "soft_ce", "mse_to_teacher")  # tdlib.distill.stages.fidelity: classification, regression


def glue_scores(result: dict) -> pd.DataFrame:
    """One row per (task, model) of a GLUE record's ``result``, in the record's order (teacher, its students in
    order, the majority class).

    Columns: ``task``, ``model``, ``kind`` (``teacher``, ``tucker``, ``baseline`` or ``majority``), every dev metric
    of the task (``score`` is the task's GLUE number), the fidelity measures and ``logit std`` (students), ``<metric>
    lo``/``<metric> hi`` (students run with several task seeds), ``n_train`` and ``n_dev`` (the teacher's rows).
    """
    kinds = {name: s.get("kind", "tucker") for name, s in result["students"].items()}
    rows = []
    for task, entry in result["tasks"].items():
        rows.append({"task": task, "model": TEACHER, "kind": "teacher", **entry["metrics"],
                     "n_train": entry.get("n_train"), "n_dev": entry.get("n_dev")})
        for name, st in entry["students"].items():
            row = {"task": task, "model": name, "kind": kinds.get(name, "tucker"), **st["metrics"],
                   **st.get("fidelity", {}), "logit std": st.get("logit_std")}
            for metric, (lo, hi) in st.get("range", {}).items():
                row.update({f"{metric} lo": lo, f"{metric} hi": hi})
            rows.append(row)
        if "majority" in entry:
            rows.append({"task": task, "model": MAJORITY, "kind": "majority", **entry["majority"]})
    return pd.DataFrame(rows)


def fidelity_columns(scores: pd.DataFrame) -> list[str]:
    """The fidelity measures and the logit spread that :func:`glue_scores` found, in the order the record has them."""
    return [c for c in scores.columns if c in (*FIDELITY, "logit std")]


def by_task(scores: pd.DataFrame, value: str = "score") -> pd.DataFrame:
    """``scores`` (:func:`glue_scores`) as a task x model table of one column, rows and columns in the record's
    order."""
    wide = scores.pivot(index="task", columns="model", values=value)
    return wide.loc[list(dict.fromkeys(scores["task"])), list(dict.fromkeys(scores["model"]))].rename_axis(
        index=None, columns=None)
