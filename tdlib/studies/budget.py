"""Does more task (or general) distillation close the GLUE gap? (notebook 09, issue #15)

Notebook 03 gives every student the paper's two task-distillation stages at a CPU budget (a few hundred steps
per task) and reads its dev score. A student that stays at the majority class there may lack the teacher's function,
or may not have been given the steps to express it through a task head: the zero-shot STS-B proxy of the same
encoders says they rank sentence pairs far above the floor. This study tells the two apart. It takes 03's
general-distilled students and fine-tuned teachers (the same hashed runs, reused), and runs stage 2 for
``stage2_steps`` with the dev score, the fidelity to the teacher and the spread of the student's outputs taken
at the ``curve`` steps, at every task learning rate of ``task_lrs``. Where those equal 03's ``stage2_steps``,
``task_curve`` and ``task_lr``, 03's own task runs are read, not trained again: the cpu profile's case, where
this study costs nothing after 03. The record gives the GLUE average of each
student at each point as a % of the teacher's, so the claims table can say whether the budget was the limit.

A curve point at step s of this stage-2 run is not 03's run of s steps: the learning rate decays over the
longer run. Step 0 is the student that stage 1 left, with the teacher's head copied onto it.

``general_budgets`` asks the same of the stage before: each student is general-distilled again for each of those
step counts (03's objective, data, learning rate and schedule, stretched over the longer run) and task-distilled
from there as above. The budget that equals 03's ``general_steps`` is 03's own run, read back. Each longer
budget is one new general run per student plus its task runs, so it answers "would a longer general
distillation close the gap?" with a measurement at one more point, not an extrapolation.

``task_seeds`` ({model: [seeds]}) runs a model's stage 2 with several seeds (its runs with 03's seed are the
ones above, read back): the entry's scores and curve are the means over them, with each seed's final % of the
teacher in ``seeds``, because one seed's GLUE average moves by a point or more with the data order alone, as much
as the gap between a Tucker student and its dense baseline. Models it does not name run 03's seed alone.

``task_arms`` asks it of stage 1: each arm (:func:`task_arms`) changes stage 1's steps and loss
(``stage1_steps``, ``task_objective``) and keeps everything else, from 03's general-distilled student at the first
task lr, for every model of the study or the ones its ``models`` names (an arm costs a full set of task runs per
student, so a profile can ask it of one pair). Why: 03's stage 1 is 10 steps of the paper's last-layer loss, so
stage 2's soft cross-entropy on two logits is nearly all that adapts the student to the fine-tuned teacher; an
all-layer stage 1 gives every layer a target on the task's own data. An arm may instead change how long stage 2
runs (``stage2_steps``; its curve is the study's points before its end, then its end): a longer run is its own
run, because the learning rate decays over the whole of it, so "would twice the steps close the gap?" is measured,
not read off the shorter run's trend. Arm entries carry ``arm`` and stay out of :func:`general_trend`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from tdlib.core.errors import ConfigError
from tdlib.core.pretrained import load_model, load_tokenizer
from tdlib.data.glue import task_files
from tdlib.distill.losses import OBJECTIVES
from tdlib.distill.proxies import Proxies, proxy_files
from tdlib.studies.aggregate import average_over, curve_glue, over_seeds, seed_percents
from tdlib.studies.records import cached, records
from tdlib.studies.runs import Data, run_general, run_task_student, student_specs, teacher_entry
from tdlib.studies.settings import GLUE_DEFAULTS, check_curve, keyed, settings
from tdlib.studies.specs import StudentSpec


def _student_specs(glue, names: list[str], teacher_model) -> list[StudentSpec]:
    specs = {spec.name: spec for spec in student_specs(glue, teacher_model)}
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise ConfigError(f"models {unknown} are not notebook 03's students under these settings; choose from "
                          f"{sorted(specs)}")
    return [specs[n] for n in names]



CLOSING = 1.0  # points of the teacher's average over the last doubling of stage 2: less is "flat"


def doubling_trend(points: list[dict], target: float) -> dict:
    """The trend of a student's GLUE curve (:func:`curve_glue`) over its last two points: ``gain`` per doubling of
    steps (points of the teacher's average; the last two points may be more than one doubling apart, as 256 and
    1,024 general steps are: the gain is divided by log2 of their ratio, and a step 0 counts as one doubling
    before the next point), ``trend`` ("closing" above :data:`CLOSING`, else "flat") and ``doublings``: how many
    more doublings, at that gain each, would reach ``target`` % of the teacher (None when flat); an
    extrapolation, which the notebook and the claims table name as one."""
    if len(points) < 2:
        return {"gain": None, "trend": None, "doublings": None}
    before, last = points[-2]["step"], points[-1]["step"]
    span = math.log2(last / before) if before > 0 and last > before else 1.0
    gain = (points[-1]["percent_of_teacher"] - points[-2]["percent_of_teacher"]) / span
    closing = gain > CLOSING
    return {"gain": gain, "trend": "closing" if closing else "flat",
            "doublings": max(0.0, (target - points[-1]["percent_of_teacher"]) / gain) if closing else None}


def general_budgets(params: dict, glue) -> list[int]:
    """The general-distillation step counts of the study: ``general_budgets``, else 03's ``general_steps`` alone;
    03's comes first, so the first entry of each student is the one 03's runs give."""
    raw = params.get("general_budgets") or []
    if not isinstance(raw, (list, tuple)) or not all(isinstance(g, int) and not isinstance(g, bool) and g > 0
                                                     for g in raw):
        raise ConfigError(f"general_budgets must be a list of positive step counts (e.g. [256, 1024]), got {raw!r}")
    return sorted({int(glue.general_steps), *raw}, key=lambda g: (g != glue.general_steps, g))


def entry_name(student: str, lr: float, general_steps: int, glue_steps: int, arm: dict | None = None) -> str:
    """A study entry's name: the student and task lr, its general budget where it is not 03's, and its task arm."""
    return (f"{student} lr={lr:g}" + ("" if general_steps == glue_steps else f" general={general_steps}")
            + (f" {arm_label(arm)}" if arm else ""))


STAGE1_KEYS = ("stage1_steps", "task_objective")  # what a stage-1 task arm changes
ARM_KEYS = (*STAGE1_KEYS, "stage2_steps")  # what a task arm may change (a stage-2 arm: the length of stage 2)
ARM_MODELS = "models"  # and which of the study's models it runs for (all when absent)


def task_arms(params: dict) -> list[dict]:
    """The study's ``task_arms``: each a dict that changes task distillation's stage 1 (``stage1_steps``,
    ``task_objective``) or the length of stage 2 (``stage2_steps``), run from 03's general-distilled students at the
    first task lr, for the study's ``models`` or the subset its own ``models`` lists; [] when none."""

    raw = params.get("task_arms") or []
    example = "e.g. [{stage1_steps: 80, task_objective: all_layers_cos, models: [IV-16-96]}]"
    if not isinstance(raw, (list, tuple)) or not all(isinstance(a, dict) and a for a in raw):
        raise ConfigError(f"task_arms must be a list of non-empty dicts, {example}; got {raw!r}")
    study = list(params.get("models") or [])
    for arm in raw:
        unknown = sorted(set(arm) - {*ARM_KEYS, ARM_MODELS})
        if unknown:
            raise ConfigError(f"a task arm sets {list(ARM_KEYS)} (and {ARM_MODELS!r}: which models it runs for), "
                              f"not {unknown}: {example}")
        if not set(arm) & set(ARM_KEYS):
            raise ConfigError(f"a task arm must change {' or '.join(ARM_KEYS)}: {example}; got {arm!r}")
        names = arm.get(ARM_MODELS, study)
        if (not isinstance(names, (list, tuple)) or not names
                or any(not isinstance(n, str) or n not in study for n in names)):
            raise ConfigError(f"a task arm's {ARM_MODELS} must be a non-empty list of the study's models {study}, "
                              f"got {names!r}")
        for key in ("stage1_steps", "stage2_steps"):
            steps = arm.get(key, 1)
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ConfigError(f"a task arm's {key} must be a positive integer, got {steps!r}")
        if arm.get("task_objective", OBJECTIVES[0]) not in OBJECTIVES:
            raise ConfigError(f"a task arm's task_objective must be one of {list(OBJECTIVES)}, "
                              f"got {arm['task_objective']!r}")
    return [dict(a) for a in raw]


def study_seeds(params: dict, seed: int) -> dict[str, list[int]]:
    """The seeds of each model's stage-2 runs: ``task_seeds`` ({model: [seeds]}), else ``[seed]`` (03's)."""
    raw = params.get("task_seeds") or {}
    models = list(params["models"])
    example = "e.g. {IV-16-96: [0, 1, 2]}"
    if not isinstance(raw, dict):
        raise ConfigError(f"task_seeds must map a model to its seeds, {example}; got {raw!r}")
    for name, seeds in raw.items():
        if name not in models:
            raise ConfigError(f"task_seeds names {name!r}, which is not one of the study's models {models}")
        if (not isinstance(seeds, (list, tuple)) or not seeds or len(set(seeds)) != len(seeds)
                or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in seeds)):
            raise ConfigError(f"task_seeds[{name!r}] must be a non-empty list of distinct seeds (integers >= 0), "
                              f"{example}; got {seeds!r}")
    return {m: [int(x) for x in raw.get(m, [seed])] for m in models}


def arm_changes(arm: dict | None) -> dict:
    """What a task arm changes in task distillation (its :data:`ARM_KEYS`), not which models it runs for; {} for
    none."""
    return {k: v for k, v in (arm or {}).items() if k in ARM_KEYS}


def arm_label(arm: dict) -> str:
    """How an entry names its arm: ``stage1=80 all_layers_cos``, ``stage2=1280`` (what it changes; not which
    models it runs for)."""
    names = {"stage1_steps": "stage1=", "stage2_steps": "stage2="}
    return " ".join(f"{names.get(k, '')}{v}" for k, v in arm_changes(arm).items())


def arm_curve(curve: list[int], stage2_steps: int) -> list[int]:
    """The curve of a run whose stage 2 lasts ``stage2_steps``: the study's points before that step, then its
    end (an arm with a longer stage 2 adds its end to the study's points; a shorter one cuts them)."""
    return [c for c in curve if c < stage2_steps] + [stage2_steps]


def arm_runs_for(arm: dict, student: str) -> bool:
    """Whether ``arm`` runs for ``student``: every model of the study unless the arm lists its ``models``."""
    return ARM_MODELS not in arm or student in arm[ARM_MODELS]


def task_budget_experiment(params: dict, workdir: str | os.PathLike, progress: bool = True) -> dict:
    """Stage-2 curves of 03's students on 03's tasks, at each learning rate of ``task_lrs`` and each general
    budget of ``general_budgets`` (module docstring)."""

    glue = settings(params["glue"])
    steps = int(params["stage2_steps"])
    curve = check_curve(params["curve"], steps)
    budgets = general_budgets(params, glue)
    arms = task_arms(params)
    seeds = study_seeds(params, glue.seed)
    tasks = list(params.get("tasks") or glue.tasks)
    workdir = Path(workdir)
    tokenizer = load_tokenizer(glue.teacher)
    data = Data(glue, tokenizer)
    teacher_model = load_model(glue.teacher).eval()
    specs = _student_specs(glue, list(params["models"]), teacher_model)
    proxies = None
    if glue.curve_points:  # 03's general runs carry a recovery curve in their identity: build it to reuse them
        proxies = Proxies.for_settings(glue, teacher_model, tokenizer, progress)
    del teacher_model

    teachers, out = {}, {"tasks": {}, "students": {}}
    for task in tasks:
        teachers[task], entry = teacher_entry(glue, data, task, workdir, progress)
        out["tasks"][task] = {k: entry[k] for k in ("metrics", "majority", "n_train", "n_dev", "data")}
    out["teacher_glue"] = average_over(out["tasks"], lambda e: e["metrics"])
    out["majority_glue"] = average_over(out["tasks"], lambda e: e["majority"])
    if proxies is not None:
        out["proxies_teacher"] = proxies.teacher
    corpus_cache: dict = {}

    def study_entry(s, spec: StudentSpec, encoder_dir, general: dict, arm: dict | None = None,
                    run_seeds: list[int] | None = None) -> None:
        run_seeds = run_seeds or [s.seed]
        runs = {task: over_seeds({seed: run_task_student(s, spec, data, task, encoder_dir, teachers[task], workdir,
                                                         progress, curve=s.task_curve, seed=seed)
                                  for seed in run_seeds})
                for task in tasks}
        for entry in runs.values():
            for run in (entry, *entry.get("seeds", {}).values()):
                run.pop("model", None)
        per_seed = seed_percents(runs, out["teacher_glue"])
        out["students"][entry_name(spec.name, s.task_lr, s.general_steps, glue.general_steps, arm)] = {
            "student": spec.name, "kind": spec.kind, "task_lr": s.task_lr, "general_steps": s.general_steps,
            "general": general, "stage1_steps": s.stage1_steps, "task_objective": s.task_objective,
            "stage2_steps": s.stage2_steps, "task_seeds": run_seeds, "tasks": runs,
            "glue": curve_glue(runs, tasks, out["teacher_glue"]),
            **({"seeds": per_seed} if per_seed else {}), **({"arm": arm} if arm else {})}

    for spec in specs:
        for budget in budgets:
            g = glue.replace(general_steps=budget)
            encoder_dir, info = run_general(g, spec, tokenizer, workdir, corpus_cache, progress, proxies=proxies)
            general = {"steps": info["steps"], "tokens": info["tokens"], "seconds": info["seconds"],
                       "final_loss": info["final_loss"], **({"proxies": info["curve"][-1]} if "curve" in info else {})}
            for lr in params["task_lrs"]:
                study_entry(g.replace(task_lr=float(lr), stage2_steps=steps, task_curve=curve), spec, encoder_dir,
                            general, run_seeds=seeds[spec.name])
            if budget == glue.general_steps:  # the arms start from 03's student, at the first task lr
                for arm in (a for a in arms if arm_runs_for(a, spec.name)):
                    changes = {"stage2_steps": steps, **arm_changes(arm)}
                    study_entry(g.replace(task_lr=float(params["task_lrs"][0]), **changes,
                                          task_curve=arm_curve(curve, changes["stage2_steps"])),
                                spec, encoder_dir, general, arm)
    return out


def general_trend(result: dict, student: str, lr: float, target: float) -> dict | None:
    """Student ``student``'s final % of the teacher (end of stage 2, task lr ``lr``) at each general budget of a
    study result, and :func:`doubling_trend` over its last two budgets; None with fewer than two budgets."""
    entries = sorted((e for e in result["students"].values() if e["student"] == student and e["task_lr"] == lr
                      and "general_steps" in e and not e.get("arm")), key=lambda e: e["general_steps"])
    if len(entries) < 2:
        return None
    points = [{"step": e["general_steps"], "percent_of_teacher": e["glue"][-1]["percent_of_teacher"]}
              for e in entries]
    return {"points": points, **doubling_trend(points, target)}


def stage2_trend(result: dict, student: str, lr: float, general_steps: int, target: float) -> dict | None:
    """Student ``student``'s % of the teacher at the end of stage 2 for each stage-2 length the study ran (its
    entry and its stage-2 arms; general budget ``general_steps``, 03's stage 1, task lr ``lr``), and
    :func:`doubling_trend` over the last two lengths: the measured answer to "would a longer stage 2 close the
    gap?", which a run's own curve only suggests (its learning rate decays over the whole run). None with fewer
    than two lengths.

    Where the lengths ran different seeds (the study's with ``task_seeds``, an arm with 03's seed alone), each end
    is the mean over the seeds every length ran (``seeds``), so a mean over three seeds is never set against one
    seed's run: the seeds' spread is as large as the gain asked about."""
    ends = {}
    for e in result["students"].values():
        arm = arm_changes(e.get("arm"))
        if (e["student"] == student and e["task_lr"] == lr and not set(arm) & set(STAGE1_KEYS)
                and e.get("general_steps", general_steps) == general_steps):
            ends[e["stage2_steps"]] = end_by_seed(e)
    if len(ends) < 2:
        return None
    shared = sorted(set.intersection(*(set(v) for v in ends.values())), key=int)
    if not shared:
        return None
    points = [{"step": k, "percent_of_teacher": sum(ends[k][x] for x in shared) / len(shared)} for k in sorted(ends)]
    return {"points": points, "seeds": [int(x) for x in shared], **doubling_trend(points, target)}


def run_seed(entry: dict) -> str:
    """The seed of a study entry that ran one (``task_seeds``; 0 in records made before that was stored)."""
    return str((entry.get("task_seeds") or [0])[0])


def task_end_by_seed(entry: dict, task: str) -> dict[str, float]:
    """A study entry's dev score on ``task`` at the end of stage 2, by seed (str), as :func:`end_by_seed` reads
    its GLUE average."""
    run = entry["tasks"][task]
    if run.get("seeds"):
        return {k: v["metrics"]["score"] for k, v in run["seeds"].items()}
    return {run_seed(entry): run["metrics"]["score"]}


def end_by_seed(entry: dict) -> dict[str, float]:
    """A study entry's % of the teacher at the end of stage 2, by seed (str): its ``seeds`` where it ran several,
    else its one run under :func:`run_seed`."""
    if entry.get("seeds"):
        return dict(entry["seeds"])
    return {run_seed(entry): entry["glue"][-1]["percent_of_teacher"]}


def dense_baseline(models: list[str], student: str) -> str | None:
    """A Tucker student's equal-budget dense baseline in a study's ``models``: the first dense model listed after
    it (profiles list each pair Tucker first); None for a dense model or a Tucker one without a baseline."""
    if not student.startswith("IV"):
        return None
    return next((m for m in models[models.index(student) + 1:] if m.startswith("dense")), None)


def dense_entry(result: dict, models: list[str], entry: dict) -> dict | None:
    """A Tucker entry's equal-budget dense baseline entry in a study result (same task lr, general budget and arm
    change), or None."""
    dense = dense_baseline(models, entry["student"])
    return next((e for e in result["students"].values() if e["student"] == dense and e["task_lr"] == entry["task_lr"]
                 and e.get("general_steps") == entry.get("general_steps")
                 and arm_changes(e.get("arm")) == arm_changes(entry.get("arm"))), None)


def shared_seeds(entry: dict, base: dict) -> list[str]:
    """The seeds two study entries both ran (:func:`end_by_seed`), in order."""
    return sorted(set(end_by_seed(entry)) & set(end_by_seed(base)), key=int)


def vs_dense(result: dict, models: list[str], entry: dict) -> float | None:
    """A Tucker entry's % of the teacher at the end of stage 2 minus its dense baseline's entry (:func:`dense_entry`):
    over the seeds both ran, the mean of each seed's own difference (their two ends when they share none). None
    when the study has no such baseline entry."""
    base = dense_entry(result, models, entry)
    if base is None:
        return None
    shared = shared_seeds(entry, base)
    if shared:
        ours, theirs = end_by_seed(entry), end_by_seed(base)
        return sum(ours[k] - theirs[k] for k in shared) / len(shared)
    return entry["glue"][-1]["percent_of_teacher"] - base["glue"][-1]["percent_of_teacher"]


# notebook 03's settings that its teachers' fine-tuning and its training sets alone read: a notebook-09 record under
# 03 settings that differ from the current ones in these alone is the same study, of an earlier teacher
TEACHER_FIELDS = ("max_train_examples", "finetune_epochs", "finetune_steps", "finetune_lr", "finetune_head_lr")


def studies_for(glue: dict, root=None) -> tuple[list[dict], bool]:
    """Notebook 09's records under 03's settings ``glue``, newest first, and False. Where there are none, those
    under the newest earlier 03 settings that differ from ``glue`` in :data:`TEACHER_FIELDS` alone, and True: their
    % of the teacher are of that earlier teacher, and the claims table says so. Why fall back: 09 runs for hours
    on 2 cores, so a new teacher in 03 reaches 09's studies a session later than 03's table."""

    recs = records("09_task_budget", root)
    same = [r for r in recs if r["params"].get("glue") == glue]
    if same:
        return same, False

    def study_part(settings: dict) -> dict:
        return {k: v for k, v in settings.items() if k not in TEACHER_FIELDS}

    earlier = [r for r in recs if study_part(r["params"].get("glue") or {}) == study_part(glue)]
    if not earlier:
        return [], False
    newest = earlier[0]["params"]["glue"]
    return [r for r in earlier if r["params"]["glue"] == newest], True


def longer_general_records(glue: dict, root=None) -> list[dict]:
    """Notebook 09's records made under 03's settings ``glue`` (or, without any, the earlier teacher's of
    :func:`studies_for`) that ran a general budget beyond 03's, newest first: where the notebook's longer-general
    section and the claims table read that question's answer."""
    ours = glue.get("general_steps") or 0
    return [r for r in studies_for(glue, root)[0] if max(r["params"].get("general_budgets") or [0]) > ours]


def task_budget_record(params: dict, glue: dict, workdir: str | os.PathLike, profile: str,
                       force: bool | None = None, extra: dict | None = None) -> dict:
    """The cached record of notebook 09: ``results/09_task_budget/<hash>.json``, run with notebook 03's settings of
    ``glue`` (stored in the parameters) and in its runs folder ``workdir``, so 03's teachers and
    general-distilled students are reused.

    ``params["glue_overrides"]`` (a dict, or None) replaces some of those settings: the study then runs from the
    teachers and students of another 03 record, e.g. an earlier teacher's while 09 has not been rerun for 03's
    current one. It is stored in ``glue`` itself, not as a parameter of its own, so a record is keyed by the 03
    settings it ran under, whichever way they were named.
    """

    params = dict(params)
    overrides = params.pop("glue_overrides", None) or {}
    if not isinstance(overrides, dict) or set(overrides) - set(GLUE_DEFAULTS):
        raise ConfigError(f"glue_overrides must be a dict of notebook 03's settings ({sorted(GLUE_DEFAULTS)}), got "
                          f"{overrides!r}")
    params["glue"] = keyed({**glue, **overrides})
    tasks = params.get("tasks") or params["glue"]["tasks"]
    files = [*[f for t in tasks for f in task_files(t)], *proxy_files()]
    return cached("09_task_budget", params, lambda: task_budget_experiment(params, workdir),
                  seed=params["glue"]["seed"], profile=profile, data_files=files, force=force, extra=extra)
