"""From runs to a record's summary: the mean over task seeds (with each metric's range), GLUE averages, a
student's % of the teacher's, and the GLUE average along stage 2 of task distillation."""

from __future__ import annotations

import numpy as np

from tdlib.data.glue import glue_average, task_scores


def _mean_dict(dicts: list[dict]) -> dict:
    return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]}


def over_seeds(runs: dict[int, dict]) -> dict:
    """One model's task entry from its runs with each seed: the mean of the metrics, the fidelity, the logit
    spread and (point by point) the stage-2 curve, each metric's [min, max] over the seeds (``range``), and
    every run as it was (``seeds``). A single run is returned as it is.

    Why the mean: at a few hundred steps one run's dev score moves by several points with the data order
    alone (the seeds' range shows by how much), more than some of the differences the claims compare.
    """
    if len(runs) == 1:
        return next(iter(runs.values()))
    entries = list(runs.values())
    out = {"metrics": _mean_dict([e["metrics"] for e in entries]),
           "fidelity": _mean_dict([e["fidelity"] for e in entries]),
           "logit_std": float(np.mean([e["logit_std"] for e in entries])),
           "range": {k: [min(e["metrics"][k] for e in entries), max(e["metrics"][k] for e in entries)]
                     for k in entries[0]["metrics"]},
           "seconds": sum(e["seconds"] for e in entries), "steps": entries[0]["steps"],
           "seeds": {str(seed): entry for seed, entry in runs.items()}}
    if all(e.get("curve") for e in entries):
        out["curve"] = [{"step": group[0]["step"], "metrics": _mean_dict([p["metrics"] for p in group]),
                         "fidelity": _mean_dict([p["fidelity"] for p in group]),
                         "logit_std": float(np.mean([p["logit_std"] for p in group]))}
                        for group in zip(*(e["curve"] for e in entries), strict=True)]
        out["eval_seconds"] = sum(e.get("eval_seconds", 0.0) for e in entries)
    return out


def average_over(tasks: dict[str, dict], metrics_of) -> float:
    """The GLUE average of one model over a record's tasks, ``metrics_of(task entry)`` giving its metrics
    (MNLI-m and -mm are two columns of the average)."""
    return glue_average({k: v for t, entry in tasks.items() for k, v in task_scores(t, metrics_of(entry)).items()})


def seed_percents(runs: dict[str, dict], teacher: float) -> dict[str, float]:
    """Each seed's own GLUE average as a % of the teacher's ``teacher``, from one model's task entries
    (:func:`over_seeds`, by task); {} unless every task ran the same several seeds."""
    seeds = [set(run.get("seeds", ())) for run in runs.values()]
    if not (seeds and seeds[0] and all(s == seeds[0] for s in seeds)):
        return {}
    return {k: 100.0 * average_over(runs, lambda e, k=k: e["seeds"][k]["metrics"]) / teacher
            for k in sorted(seeds[0], key=int)}


def summarise(result: dict) -> dict:
    """GLUE averages (mean of task scores), each student's % of the teacher's, and the majority-class floor.

    With ``task_seeds`` a student's scores are its means over the seeds, and ``seeds`` gives the % of the teacher
    of each seed's own runs (their spread is the noise the comparison of two students sits in)."""
    tasks = result["tasks"]
    teacher = average_over(tasks, lambda v: v["metrics"])
    rows = {"teacher": {"glue": teacher, "percent_of_teacher": 100.0}}
    if all("majority" in v for v in tasks.values()):
        floor = average_over(tasks, lambda v: v["majority"])
        rows["majority class"] = {"glue": floor, "percent_of_teacher": 100.0 * floor / teacher}
    for name in result["students"]:
        avg = average_over(tasks, lambda v, name=name: v["students"][name]["metrics"])
        rows[name] = {"glue": avg, "percent_of_teacher": 100.0 * avg / teacher}
        runs = {t: v["students"][name] for t, v in tasks.items()}
        per_seed = seed_percents(runs, teacher)  # task_seeds: each seed's own GLUE average
        if per_seed:
            rows[name]["seeds"] = per_seed
        if all(run.get("curve") for run in runs.values()):  # task_curve: the average at each stage-2 point

            rows[name]["task_curve"] = curve_glue(runs, list(tasks), teacher)
    return rows


def curve_glue(runs: dict, tasks: list[str], teacher_glue: float) -> list[dict]:
    """GLUE average (and % of the teacher's) at each curve step common to every task's run of a student."""

    steps = sorted(set.intersection(*[{p["step"] for p in runs[t]["curve"]} for t in tasks]))
    out = []
    for step in steps:
        points = {t: next(p for p in runs[t]["curve"] if p["step"] == step) for t in tasks}
        glue = average_over(points, lambda p: p["metrics"])
        out.append({"step": step, "glue": glue, "percent_of_teacher": 100.0 * glue / teacher_glue})
    return out
