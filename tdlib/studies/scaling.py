"""The distillation scaling study (notebook 10): what each doubling of general-distillation tokens buys a student.

Why: at the profile's budget (0.5M tokens, some 10^4 times fewer than the paper's) the C2/C3 verdicts cannot tell
a failing method from a starved one, nor Tucker from dropping layers. This study measures *rates*: each student of
the ~1/48 pair (the paper's Tucker init, protocol 1's zero maps, and dense students at equal parameters, one and two
layers deep) is general-distilled **once**, to the largest budget, at a constant learning rate after warm-up, and
its model is kept at every doubling of tokens (:func:`tdlib.distill.loop.train`'s ``keep_at``). Why one run and a
constant rate: a checkpoint of a constant-rate run is what a run of that length computes, up to the decay it never
had; the study measures that gap once (``decay_check``: one student trained to one budget alone, with the linear
decay of notebook 03's runs).

At every (student, budget) point, one record (``results/10_scaling/<key>.json``): the zero-shot proxies (STS-B
Spearman and held-out embedding cosine, :class:`tdlib.distill.proxies.Proxies`) and the task protocol of notebook 03
(two-stage task distillation against the fine-tuned teacher, ``task_seeds``) on ``plan.tasks``, on every GLUE task
at the first and the last budget. A point is computed by :func:`point_record` or read back; the study fills in
over sessions, and :func:`missing_points` names what is left. ``python -m tdlib scaling`` runs it (budgets in the
outer loop, so every student reaches a budget before any goes further); ``make reproduce`` only reads it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats
from tqdm import tqdm

from tdlib.core.baseline import ffn_for_budget
from tdlib.core.errors import ConfigError
from tdlib.core.io import sha256_file
from tdlib.core.pretrained import load_model, load_tokenizer
from tdlib.data.corpus import corpus_files, load_corpus
from tdlib.data.glue import task_files
from tdlib.distill.loop import TrainConfig, check_run, is_main_process, run_seconds
from tdlib.distill.proxies import Proxies, proxy_files
from tdlib.distill.stages import general_distill
from tdlib.studies.aggregate import over_seeds
from tdlib.studies.provenance import seed_everything
from tdlib.studies.records import cached, load_record, locate, runs_dir
from tdlib.studies.runs import (
    Data,
    _config,
    _hash,
    build_student,
    run_task_student,
    student_params,
    teacher_entry,
    tucker_budget,
)
from tdlib.studies.settings import Settings, keyed, settings
from tdlib.studies.specs import BaselineSpec, StudentSpec, TuckerSpec

NAME = "10_scaling"
NOTEBOOK_ONLY = ("profile", "compute")  # how the notebook runs, not what a point computes
PLAN_FIELDS = ("first_steps", "doublings", "warmup_steps", "tucker", "inits", "scaling_baselines", "scaling_tasks",
               "decay_check")


@dataclass(frozen=True)
class ScalingPlan:
    """What the study trains: budgets ``first_steps * 2**k`` general-distillation steps (k = 0..``doublings``) of
    the settings' batch (``batch_size`` x ``general_max_length`` tokens a step), the Tucker student ``tucker`` from
    each of ``inits``, and a dense student per ``scaling_baselines`` entry (layers, hidden) at its parameter count;
    ``scaling_tasks`` at every budget (every GLUE task of the settings at the first and last); ``decay_check``: the
    budget index at which the first student is also trained alone with a linear decay (None: no check)."""

    first_steps: int = 256
    doublings: int = 6
    warmup_steps: int = 26
    tucker: list = field(default_factory=lambda: [16, 96])
    inits: list = field(default_factory=lambda: ["pretrained", "zero"])
    scaling_baselines: list = field(default_factory=lambda: [[1, 144], [2, 96]])
    scaling_tasks: list = field(default_factory=lambda: ["sst2", "stsb"])
    decay_check: int | None = 2

    def __post_init__(self) -> None:
        for name in ("first_steps", "warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.warmup_steps > self.first_steps:
            raise ConfigError(f"warmup_steps ({self.warmup_steps}) must not pass the first budget "
                              f"({self.first_steps} steps): every kept model must be past warm-up")
        if isinstance(self.doublings, bool) or not isinstance(self.doublings, int) or self.doublings < 1:
            raise ConfigError(f"doublings must be an integer >= 1 (a trend needs two budgets), got {self.doublings!r}")
        if self.decay_check is not None and not 0 <= self.decay_check <= self.doublings:
            raise ConfigError(f"decay_check is a budget index in 0..{self.doublings} (or null), got "
                              f"{self.decay_check!r}")

    @property
    def budgets(self) -> list[int]:
        """The budgets in general-distillation steps."""
        return [self.first_steps * 2**k for k in range(self.doublings + 1)]


def split_params(params: dict) -> tuple[Settings, ScalingPlan]:
    """A notebook's or the CLI's parameters -> (the GLUE settings, the plan); one error for an unknown name."""
    plan = {k: params[k] for k in PLAN_FIELDS if k in params}
    rest = {k: v for k, v in params.items() if k not in (*PLAN_FIELDS, *NOTEBOOK_ONLY)}
    return settings(keyed(rest)), ScalingPlan(**plan)


def tokens_per_step(s: Settings) -> int:
    return s.batch_size * s.general_max_length


def scaling_specs(s: Settings, plan: ScalingPlan, teacher) -> list[StudentSpec]:
    """The students, in training order: the Tucker student from each init, then the dense students at its size."""
    rl, rd = plan.tucker
    specs: list[StudentSpec] = []
    for init in plan.inits:
        spec = TuckerSpec(rl, rd, s.ops, init, s.general_objective)
        specs.append(spec if init == "pretrained" else spec.renamed(f"{spec.name} init={init}"))
    budget = tucker_budget(teacher, rl, rd, s.ops)
    for layers, hidden in plan.scaling_baselines:
        ffn = ffn_for_budget(budget, layers, hidden)
        specs.append(BaselineSpec(layers, hidden, ffn, specs[0].name, s.general_objective))
    return specs


class Study:
    """What every point of one study shares in a process: tokenizer, task data, corpus, proxies, the teachers."""

    def __init__(self, s: Settings, plan: ScalingPlan, workdir: Path, progress: bool = True) -> None:
        self.s, self.plan, self.workdir, self.progress = s, plan, Path(workdir), progress
        self.tokenizer = load_tokenizer(s.teacher)
        self.data = Data(s, self.tokenizer)
        self.pretrained = load_model(s.teacher).eval()
        self.specs = {spec.name: spec for spec in scaling_specs(s, plan, self.pretrained)}
        self._corpus = None
        self._proxies: Proxies | None = None
        self._teachers: dict[str, tuple[Path, dict]] = {}

    # -- shared pieces, built on first use ---------------------------------------------------------
    def corpus(self):
        if self._corpus is None:
            corpus, files = load_corpus(self.tokenizer, max_length=self.s.general_max_length,
                                        max_sequences=self.s.general_sequences, progress=self.progress)
            corpus.set_format("torch")
            self._corpus = (corpus, files, _hash([sha256_file(f) for f in files]) if files else "hub")
        return self._corpus

    def proxies(self) -> Proxies:
        if self._proxies is None:
            self._proxies = Proxies.for_settings(self.s, self.pretrained, self.tokenizer, self.progress)
        return self._proxies

    def teacher(self, task: str) -> tuple[Path, dict]:
        if task not in self._teachers:
            self._teachers[task] = teacher_entry(self.s, self.data, task, self.workdir, self.progress)
        return self._teachers[task]

    # -- one student's general-distillation run ----------------------------------------------------
    def general_config(self, decay_to: int | None = None) -> TrainConfig:
        """The study's run: constant lr after ``warmup_steps`` to the last budget; ``decay_to``: the check's run,
        ``decay_to`` steps with notebook 03's linear schedule (10% warm-up)."""
        s, plan = self.s, self.plan
        if decay_to is not None:
            return _config(s, decay_to, s.general_lr, "linear", 0.1, general=True)
        last = plan.budgets[-1]
        return _config(s, last, s.general_lr, "constant_with_warmup", plan.warmup_steps / last, general=True)

    def run_dir(self, spec: StudentSpec, decay_to: int | None = None) -> tuple[Path, dict, TrainConfig]:
        corpus, files, sha = self.corpus()
        cfg = self.general_config(decay_to)
        identity = {"teacher": str(self.s.teacher), "student": spec.as_dict(), "corpus_files": len(files),
                    "corpus_sha": sha, "sequences": len(corpus), "max_length": self.s.general_max_length,
                    "kept": self.plan.budgets if decay_to is None else [decay_to]}
        name = spec.name.replace(" ", "_").replace("=", "-")
        out = self.workdir / "scaling" / f"{name}-{_hash([identity, cfg])}"
        return out, identity, cfg

    def advance(self, spec: StudentSpec, steps: int, decay: bool = False) -> Path:
        """Train ``spec``'s run up to ``steps`` (resuming it) and return the model kept there."""
        out, identity, cfg = self.run_dir(spec, steps if decay else None)
        kept = out / "at" / str(steps)
        if (kept / "config.json").is_file():
            return kept
        check_run(out, cfg, identity)
        seed_everything(self.s.seed)
        # every parameter trainable, as run_general's students from a freshly loaded teacher are (a Tucker student
        # copies the flags of the teacher it is built from, and this one is frozen once a run has started)
        student = build_student(spec, self.pretrained, self.s.seed).requires_grad_(True)
        general_distill(student, self.pretrained, self.corpus()[0], out, cfg, identity=identity,
                        progress=self.progress, objective=spec.objective, keep_at=[steps], stop_at=steps)
        if is_main_process():
            self.tokenizer.save_pretrained(str(kept))
        return kept

    # -- one point ---------------------------------------------------------------------------------
    def tasks_at(self, steps: int) -> list[str]:
        ends = (self.plan.budgets[0], self.plan.budgets[-1])
        return list(self.s.tasks) if steps in ends else list(self.plan.scaling_tasks)

    def measure(self, spec: StudentSpec, steps: int, decay: bool = False) -> dict:
        """A point's result: the kept model's proxies, and its task protocol per task and seed.

        Times: ``general_seconds`` and ``seconds``, this call's (reaching the budget, and in all); ``run_seconds``, the
        general run's own training seconds up to the budget over every session it resumed in (None for a model kept
        before runs recorded it); per task the students' ``seconds`` and the teacher's ``teacher_seconds``."""
        start = time.perf_counter()
        encoder_dir = self.advance(spec, steps, decay)
        general_seconds = time.perf_counter() - start
        encoder = load_model(encoder_dir).eval()
        out = {"student": spec.name, "spec": spec.as_dict(), "steps": steps, "tokens": steps * tokens_per_step(self.s),
               "params": student_params(encoder, spec), "schedule": "linear" if decay else "constant_with_warmup",
               "proxies": self.proxies()(encoder), "teacher_proxies": self.proxies().teacher, "tasks": {},
               "general_seconds": general_seconds, "run_seconds": run_seconds(encoder_dir)}
        for task in self.tasks_at(steps):
            teacher_dir, info = self.teacher(task)
            runs = {seed: run_task_student(self.s, spec, self.data, task, encoder_dir, teacher_dir, self.workdir,
                                           self.progress, seed=seed) for seed in self.s.seeds_for_tasks()}
            for run in runs.values():
                run.pop("loss", None)  # the per-step losses stay in the run folder
            out["tasks"][task] = {"teacher": info["metrics"], "teacher_seconds": info["seconds"],
                                  "majority": info["majority"], **over_seeds(runs)}
        out["seconds"] = time.perf_counter() - start
        return out

    def data_files(self) -> list:
        files = [f for t in self.s.tasks for f in task_files(t)]
        return files + [f for f in [*proxy_files(), *corpus_files()] if f not in files]


def point_params(s: Settings, plan: ScalingPlan, spec: StudentSpec, steps: int, decay: bool = False) -> dict:
    """A point record's key: the GLUE settings, the plan, the student and its budget (and the schedule)."""
    return {"settings": keyed(s.as_dict()), "plan": dataclasses.asdict(plan), "student": spec.as_dict(),
            "steps": steps, **({"schedule": "linear"} if decay else {})}


def point_record(study: Study, spec: StudentSpec, steps: int, profile: str, decay: bool = False,
                 compute: bool = True, extra: dict | None = None) -> dict | None:
    """The record of one (student, budget) point: read back, or (``compute``) trained and measured now."""
    params = point_params(study.s, study.plan, spec, steps, decay)
    if not compute and not locate(NAME, params).exists():
        return None
    return cached(NAME, params, lambda: study.measure(spec, steps, decay), seed=study.s.seed, profile=profile,
                  data_files=study.data_files(), extra=extra)


def trained_in(record: dict) -> str:
    """The matmul precision a point's student trained in: the study's ``precision`` as the recording host resolved it
    (``auto``: bf16 where the host has native bf16, per its provenance). A run's identity holds the resolved
    precision, so a point is never trained partly in one and partly in the other."""
    precision = record["params"]["settings"].get("precision", "auto")
    if precision != "auto":
        return precision
    return "bf16" if record["provenance"].get("cpu_bf16") else "fp32"


@dataclass(frozen=True)
class Hours:
    """What the recorded points of one precision cost, in hours on the hosts that recorded them."""

    precision: str
    points: int
    general: float  # general distillation, once per run (a student, its schedule)
    runs: int
    runs_clocked: int  # runs whose hours are their own clock across sessions; the others', a lower bound
    tasks: float  # the students' task runs, every point's
    teachers: float  # each task's teacher fine-tuning, once
    teachers_timed: int
    task_count: int

    def __str__(self) -> str:
        lower = self.runs - self.runs_clocked
        bound = f" ({lower} a lower bound: timed by the calls that wrote their records)" if lower else ""
        return (f"{self.precision}, {self.points} points: {self.general + self.tasks + self.teachers:.1f} h = general "
                f"distillation {self.general:.1f} h over {self.runs} runs{bound} + task runs {self.tasks:.1f} h + "
                f"teachers {self.teachers:.1f} h (timed for {self.teachers_timed} of {self.task_count} tasks)")


def hours_spent(found: list[dict]) -> list[Hours]:
    """The hours the points in ``found`` (records) took, per precision they trained in.

    A run's general distillation counts once: its own clock at its last recorded budget (``run_seconds``: its
    training seconds summed over every session it resumed in), plus the ``general_seconds`` of any later point that
    lacks it; a run no record clocks counts the sum of its points' ``general_seconds``, the time of the calls that
    wrote them. Each task's teacher counts once per precision, where a record gives its time.
    """
    out = []
    for precision in sorted({trained_in(r) for r in found}):
        mine = sorted((r["result"] for r in found if trained_in(r) == precision), key=lambda p: p["steps"])
        runs: dict[tuple, list[dict]] = {}
        for p in mine:
            runs.setdefault((p["student"], p["schedule"]), []).append(p)
        general, clocked = 0.0, 0
        for entries in runs.values():
            last = max((i for i, p in enumerate(entries) if p.get("run_seconds") is not None), default=None)
            clocked += last is not None
            clock = 0.0 if last is None else entries[last]["run_seconds"]
            general += clock + sum(p["general_seconds"] for p in entries[0 if last is None else last + 1:])
        teachers = {t: e["teacher_seconds"] for p in mine for t, e in p["tasks"].items() if "teacher_seconds" in e}
        tasks = sum(e["seconds"] for p in mine for e in p["tasks"].values())
        out.append(Hours(precision, len(mine), general / 3600, len(runs), clocked, tasks / 3600,
                         sum(teachers.values()) / 3600, len(teachers), len({t for p in mine for t in p["tasks"]})))
    return out


def points(params: dict, profile: str) -> tuple[list[dict], list[str]]:
    """The study's records that exist (without computing any) and the points still missing, by name."""
    s, plan = split_params(params)
    teacher = load_model(s.teacher)
    found, missing = [], []
    for steps, spec, decay in schedule(s, plan, scaling_specs(s, plan, teacher)):
        path = locate(NAME, point_params(s, plan, spec, steps, decay))
        if path.exists():
            found.append({**load_record(path), "path": str(path)})
        else:
            missing.append(f"{spec.name} at {steps * tokens_per_step(s) / 1e6:.1f}M tokens"
                           + (" (linear decay)" if decay else ""))
    return found, missing


def schedule(s: Settings, plan: ScalingPlan, specs: list[StudentSpec]) -> list[tuple[int, StudentSpec, bool]]:
    """Every point in the order the study computes them: budget by budget, each student in turn; the decay check
    right after its budget."""
    order = []
    for i, steps in enumerate(plan.budgets):
        order += [(steps, spec, False) for spec in specs]
        if plan.decay_check == i:
            order.append((steps, specs[0], True))
    return order


def run_study(params: dict, profile: str, max_points: int | None = None, progress: bool = True) -> list[dict]:
    """Compute the missing points in :func:`schedule` order (finished points are read back, runs resume)."""
    s, plan = split_params(params)
    study = Study(s, plan, runs_dir(profile), progress)
    order = schedule(s, plan, list(study.specs.values()))
    done = []
    bar = tqdm(order, desc="scaling points", disable=not progress)
    for steps, spec, decay in bar:
        bar.set_postfix_str(f"{spec.name} @ {steps} steps")
        record = point_record(study, spec, steps, profile, decay)
        done.append(record)
        if max_points is not None and sum(not r.get("cached") for r in done) >= max_points:
            break
    return done


# -- reading the points ------------------------------------------------------------------------------
def task_score(metrics: dict) -> float:
    """The headline score of a task's metrics (the teacher's, the majority's or a run's: ``score``, x 100 as GLUE
    reports it)."""
    return 100 * float(metrics["score"])


def seed_scores(point: dict, tasks: list[str], share: str = "teacher") -> dict[int, float]:
    """Per task seed, the mean over ``tasks`` of the student's % of the teacher (``share='teacher'``) or % of the
    teacher's gain over the majority class (``'gain'``)."""
    per_seed: dict[int, list[float]] = {}
    for task in tasks:
        entry = point["tasks"][task]
        teacher, floor = task_score(entry["teacher"]), task_score(entry["majority"])
        for seed, run in entry["seeds"].items():
            x = task_score(run["metrics"])
            value = 100 * x / teacher if share == "teacher" else 100 * (x - floor) / (teacher - floor)
            per_seed.setdefault(int(seed), []).append(value)
    return {seed: float(np.mean(v)) for seed, v in per_seed.items()}


def curves(found: list[dict], tasks: list[str], share: str = "teacher") -> dict[str, dict]:
    """Per student (constant-schedule points that measured every one of ``tasks``), in budget order: ``tokens``,
    per-seed ``scores`` (:func:`seed_scores`), the zero-shot ``proxies`` and the precision each point
    ``trained_in``."""
    out: dict[str, dict] = {}
    records = sorted((r for r in found if r["result"]["schedule"] != "linear"), key=lambda r: r["result"]["tokens"])
    for record in records:
        point = record["result"]
        if all(t in point["tasks"] for t in tasks):
            entry = out.setdefault(point["student"], {"tokens": [], "scores": [], "proxies": [], "trained_in": []})
            entry["tokens"].append(point["tokens"])
            entry["scores"].append(seed_scores(point, tasks, share))
            entry["proxies"].append(point["proxies"])
            entry["trained_in"].append(trained_in(record))
    return out


def floor_share(found: list[dict], tasks: list[str]) -> float:
    """The majority class's score as % of the teacher's, averaged over ``tasks`` (the floor of a % of teacher)."""
    point = next(r["result"] for r in found if all(t in r["result"]["tasks"] for t in tasks))
    return float(np.mean([100 * task_score(point["tasks"][t]["majority"]) / task_score(point["tasks"][t]["teacher"])
                          for t in tasks]))


@dataclass(frozen=True)
class Trend:
    """Score against log2(tokens) for one student: the slope per doubling and the value at ``at_tokens``, each
    the mean over task seeds with a ``level`` t-interval across them (one least-squares line per seed)."""

    slope: float
    slope_interval: tuple[float, float]
    at_tokens: float
    value: float
    value_interval: tuple[float, float]
    budgets: int
    seeds: int


def fit_trend(tokens: list[float], scores: list[dict[int, float]], at_tokens: float, level: float = 0.95) -> Trend:
    """:class:`Trend` of per-seed scores (one dict per budget, seed -> score) measured at ``tokens``."""
    seeds = sorted(set.intersection(*(set(s) for s in scores)))
    if len(tokens) < 2 or len(seeds) < 2:
        raise ConfigError(f"a trend needs >= 2 budgets and >= 2 seeds common to them, got {len(tokens)} budgets "
                          f"and seeds {seeds}")
    x = np.log2(np.asarray(tokens, dtype=float))
    fits = [stats.linregress(x, [sc[seed] for sc in scores]) for seed in seeds]
    slopes = np.array([f.slope for f in fits])
    values = np.array([f.intercept + f.slope * math.log2(at_tokens) for f in fits])
    t = stats.t.ppf(0.5 + level / 2, len(seeds) - 1)

    def interval(v: np.ndarray) -> tuple[float, float]:
        half = t * v.std(ddof=1) / math.sqrt(len(v))
        return float(v.mean() - half), float(v.mean() + half)

    return Trend(float(slopes.mean()), interval(slopes), at_tokens, float(values.mean()), interval(values),
                 len(tokens), len(seeds))


# -- the verdict rules, written before the runs that decide them ---------------------------------------------------
def reach_verdict(trend: Trend, target: float) -> str:
    """Whether a student's score extrapolated to ``trend.at_tokens`` reaches ``target`` (the paper's % of teacher):
    ``"not reached at the paper's budget"`` when the interval's upper end is below it, ``"reached"`` when its
    lower end is at or above it, else ``"trending toward the claim"`` (the interval contains it)."""
    low, high = trend.value_interval
    if high < target:
        return "not reached at the paper's budget"
    return "reached" if low >= target else "trending toward the claim"


def rate_verdict(a: Trend, b: Trend) -> str:
    """``a``'s slope per doubling against ``b``'s: ``"faster"`` / ``"slower"`` when their intervals are disjoint,
    else ``"level"`` (no difference the seeds can resolve)."""
    if a.slope_interval[0] > b.slope_interval[1]:
        return "faster"
    if a.slope_interval[1] < b.slope_interval[0]:
        return "slower"
    return "level"


def compare_rates(a: dict, b: dict, at_tokens: float) -> tuple[str, Trend, Trend]:
    """Two students' :func:`curves` entries compared like with like: both trends fitted over the budgets *both*
    measured (a student further along would otherwise be judged on a different stretch of its curve), and
    :func:`rate_verdict` of the pair. Returns the verdict and the two trends (``a``'s, ``b``'s)."""
    common = sorted(set(a["tokens"]) & set(b["tokens"]))
    if len(common) < 2:
        raise ConfigError(f"comparing two students' rates needs >= 2 budgets both measured, got {len(common)}")
    ta, tb = (fit_trend(common, [e["scores"][e["tokens"].index(t)] for t in common], at_tokens)
              for e in (a, b))
    return rate_verdict(ta, tb), ta, tb


def precision_mix(curves_by_name: dict[str, dict], tokens: list[float] | None = None) -> str:
    """Which points of these :func:`curves` entries, over the budgets all of them measured (or those of ``tokens``),
    trained in another precision than most (hosts differ, see :func:`trained_in`): ``""`` when all trained in one,
    else e.g. ``"dense-1L-144-484 at 16.8M tokens trained in fp32, the other 11 points in bf16"``."""
    common = set.intersection(*(set(e["tokens"]) for e in curves_by_name.values()))
    if tokens is not None:
        common &= set(tokens)
    points = [(name, t, p) for name, e in curves_by_name.items()
              for t, p in zip(e["tokens"], e["trained_in"], strict=True) if t in common]
    counts = Counter(p for *_, p in points)
    if len(counts) < 2:
        return ""
    most = max(sorted(counts), key=counts.get)
    odd = [(name, t, p) for name, t, p in points if p != most]
    where = ", ".join(f"{name} at {t / 1e6:.1f}M tokens" for name, t, _ in odd)
    other = "/".join(sorted({p for *_, p in odd}))
    n = counts[most]
    return f"{where} trained in {other}, the other {n} point{'s' if n != 1 else ''} in {most}"


def difference(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> tuple[float, tuple[float, float]]:
    """Mean and ``level`` interval of ``a - b`` over two students' seed scores at one budget (Welch's t)."""
    x, y = np.array(list(a.values())), np.array(list(b.values()))
    se2 = x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y)
    dof = se2**2 / ((x.var(ddof=1) / len(x)) ** 2 / (len(x) - 1) + (y.var(ddof=1) / len(y)) ** 2 / (len(y) - 1)) \
        if se2 > 0 else 1.0
    half = stats.t.ppf(0.5 + level / 2, dof) * math.sqrt(se2)
    d = float(x.mean() - y.mean())
    return d, (d - half, d + half)


def init_verdict(diff_interval: tuple[float, float]) -> str:
    """C6 at one budget, from the paper's init minus zero maps: ``"the paper's init ahead"`` when the interval is
    above 0, ``"zero maps ahead"`` when below, else ``"level"``."""
    if diff_interval[0] > 0:
        return "the paper's init ahead"
    return "zero maps ahead" if diff_interval[1] < 0 else "level"
