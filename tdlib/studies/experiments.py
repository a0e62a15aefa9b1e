"""The distillation experiments behind notebooks 02 (C1, accuracy half), 03 (C2/C3), 05 (C5) and 08 (the teacher).

:func:`glue_experiment` runs the paper's protocol 1 on GLUE: fine-tune the teacher per task, general-distil each
student (Tucker configs and their equal-budget dense baselines) from the pre-trained teacher on the corpus,
task-distil each (two stages) from the fine-tuned teacher, and evaluate everything on the dev sets.
:func:`method_experiment` trains one student per decomposition method at one budget with the same task
distillation; :func:`teacher_experiment` fine-tunes the teacher alone. Each is made of the runs of
:mod:`tdlib.studies.runs` and summarised by :mod:`tdlib.studies.aggregate`.

Parameters arrive as a dict (a notebook's ``parameters`` cell) at :func:`glue_record` or :func:`teacher_record`,
become one validated :class:`tdlib.studies.settings.Settings` there, and travel down as that object;
:func:`run_experiment` starts an experiment in this process or under ``accelerate launch``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tdlib.core.baseline import encoder_weights
from tdlib.core.errors import ConfigError, TdlibError
from tdlib.core.io import load_weights, write_json_atomic
from tdlib.core.modeling import with_decomposition
from tdlib.core.pretrained import load_model, load_tokenizer
from tdlib.core.stacking import stack_weights
from tdlib.data.glue import (
    get_task,
    task_files,
)
from tdlib.distill.proxies import Proxies, milestones, proxy_files
from tdlib.distill.stages import task_distill
from tdlib.studies.aggregate import average_over, over_seeds, summarise
from tdlib.studies.methods import compare_methods
from tdlib.studies.provenance import seed_everything
from tdlib.studies.records import cached, runs_dir
from tdlib.studies.runs import (
    Data,
    _hash,
    control_specs,
    dev_entry,
    run_general,
    run_task_student,
    run_teacher,
    stage1_identity,
    stage2_targets,
    student_specs,
    task_configs,
    teacher_dev_logits,
    teacher_entry,
)
from tdlib.studies.settings import Settings, keyed, settings
from tdlib.studies.specs import MethodSpec


def teacher_experiment(s: Settings, workdir: str | os.PathLike, progress: bool = True) -> dict:
    """The teacher alone, fine-tuned on every task with its dev score at each epoch's end (notebook 08).

    Why apart from the GLUE experiment: the teacher's recipe (epochs, training-set size) is chosen from these
    curves, and a longer recipe costs the teacher's fine-tuning only. Its runs are hashed like notebook 03's
    (same workdir), so a GLUE experiment that adopts the recipe reuses them instead of training them again.
    """
    data = Data(s, load_tokenizer(s.teacher))
    tasks = {task: teacher_entry(s, data, task, Path(workdir), progress)[1] for task in s.tasks}
    return {"tasks": tasks, "glue": average_over(tasks, lambda e: e["metrics"]),
            "majority_glue": average_over(tasks, lambda e: e["majority"])}


def glue_experiment(s: Settings, workdir: str | os.PathLike, progress: bool = True) -> dict:
    """Teacher vs Tucker students vs equal-budget baselines on every task: the C2/C3 table."""
    workdir = Path(workdir)
    start = time.perf_counter()
    tokenizer = load_tokenizer(s.teacher)
    data = Data(s, tokenizer)
    teacher_model = load_model(s.teacher).eval()
    raw = encoder_weights(teacher_model)
    specs = student_specs(s, teacher_model)

    proxies = None
    if s.curve_points:
        proxies = Proxies.for_settings(s, teacher_model, tokenizer, progress)
    del teacher_model

    out: dict = {"tasks": {}, "students": {}, "controls": {}, "teacher_encoder_weights": raw}
    if proxies is not None:
        out["proxies"] = {"teacher": proxies.teacher, "heldout_sequences": len(proxies.heldout),
                          "stsb_pairs": len(proxies.gold)}
    teacher_dirs = {}
    for task in s.tasks:
        teacher_dirs[task], out["tasks"][task] = teacher_entry(s, data, task, workdir, progress)
        out["tasks"][task]["students"] = {}
    corpus_cache: dict = {}
    for spec in control_specs(s):  # curve-only runs: the first student's protocol-1 controls, the paper's loss
        _, info = run_general(s, spec, tokenizer, workdir, corpus_cache, progress, proxies=proxies)
        out["controls"][spec.name] = {**spec.as_dict(), **info, "ratio": raw / info["params"]}
    for spec in specs:
        encoder_dir, info = run_general(s, spec, tokenizer, workdir, corpus_cache, progress, proxies=proxies)
        out["students"][spec.name] = {**spec.as_dict(), **info, "ratio": raw / info["params"]}
        for task in s.tasks:
            out["tasks"][task]["students"][spec.name] = over_seeds({
                seed: run_task_student(s, spec, data, task, encoder_dir, teacher_dirs[task], workdir, progress,
                                       curve=s.task_curve, seed=seed) for seed in s.seeds_for_tasks()})
    out["summary"] = summarise(out)
    if proxies is not None:
        for group in ("students", "controls"):
            for entry in out[group].values():
                entry["milestones"] = milestones(entry["curve"], proxies.teacher)
    out["seconds"] = time.perf_counter() - start
    return out


def resolve_processes(value: int | str | None = None) -> int:
    """How many processes train: ``value``, else ``$TDLIB_NUM_PROCESSES``, else ``"auto"`` = every visible GPU
    (1 on a machine without GPUs).

    An execution setting, not an experiment parameter (the records' cache key does not hold it): each process
    trains on ``batch_size`` examples per step, as ``accelerate`` does; the histories record the count.
    """

    value = os.environ.get("TDLIB_NUM_PROCESSES", "auto") if value is None else value
    if value == "auto":
        return max(1, torch.cuda.device_count())
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if isinstance(value, bool) or count < 1:
        raise ConfigError(f"num_processes (TDLIB_NUM_PROCESSES) must be a positive integer or 'auto', got {value!r}")
    return count


def run_experiment(kind: str, s: Settings, workdir: str | os.PathLike, progress: bool = True,
                   num_processes: int | str | None = None) -> dict:
    """Run an experiment (``glue`` or ``methods``) in this process, or across ``num_processes`` processes.

    Why a launcher: a notebook kernel is one process, so on an 8-GPU machine in-kernel training would use
    one GPU. With ``num_processes`` > 1 the experiment runs as ``accelerate launch -m tdlib experiment ...``
    (every process trains its shard of each batch; the main process writes the result), and this returns
    that result. The training code is the same in both cases.
    """

    if kind not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {kind!r}; choose one of {sorted(EXPERIMENTS)}")
    n = resolve_processes(num_processes)
    if n == 1:
        return EXPERIMENTS[kind](s, workdir, progress)
    with tempfile.TemporaryDirectory(prefix="tdlib-launch-") as tmp:
        write_json_atomic(Path(tmp) / "params.json", s.as_dict())
        cmd = [*launch_command(n), "-m", "tdlib", "experiment", kind, "--params", str(Path(tmp) / "params.json"),
               "--workdir", str(workdir), "--out", str(Path(tmp) / "result.json")]
        env = dict(os.environ)

        if not torch.cuda.is_available():  # CPU processes over gloo: share the cores instead of oversubscribing
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
        print(f"[tdlib] {kind} experiment on {n} processes: accelerate launch ... -m tdlib experiment {kind}",
              flush=True)
        proc = subprocess.run(cmd, env=env, stdout=None if progress else subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-80:])
            raise TdlibError(f"the {n}-process {kind} experiment failed (exit {proc.returncode}):\n{tail}")
        return json.loads((Path(tmp) / "result.json").read_text())


def launch_command(num_processes: int) -> list[str]:
    """``accelerate launch`` of ``num_processes`` processes on this machine, its script and arguments to follow. The
    processes meet on a port free now (not accelerate's fixed 29500), so two launches at once on one machine (two
    notebooks, two test workers) do not collide."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--main_process_port", str(port), "--mixed_precision", "no",
            "--dynamo_backend", "no"]


def glue_record(params: dict, profile: str, force: bool | None = None, extra: dict | None = None) -> dict:
    """The cached GLUE experiment of notebooks 03 and 05: ``results/03_glue/<hash(params)>.json``.

    ``params`` are the notebook's parameters that :data:`GLUE_DEFAULTS` knows; training runs go to
    :func:`tdlib.studies.records.runs_dir` of the profile, and the task files' sha256 to the provenance.
    """

    params = keyed(params)
    s = settings(params)  # the one Settings of this record: every stage below reads it
    files = [f for t in s.tasks for f in task_files(t)]
    if s.curve_points:
        files += [f for f in proxy_files() if f not in files]
    runs = runs_dir((extra or {}).get("base_profile", profile))  # a custom run reuses its base profile's runs
    return cached("03_glue", params, lambda: run_experiment("glue", s, runs), seed=s.seed,
                  profile=profile, data_files=files, force=force, extra=extra)


def teacher_record(params: dict, profile: str, force: bool | None = None, extra: dict | None = None) -> dict:
    """The cached teacher study of notebook 08: ``results/08_teacher/<hash(params)>.json``; its runs go to the
    base profile's runs folder, where notebook 03 finds them."""

    s = settings(params)
    runs = runs_dir((extra or {}).get("base_profile", profile))
    return cached("08_teacher", params, lambda: run_experiment("teacher", s, runs), seed=s.seed,
                  profile=profile, data_files=[f for t in s.tasks for f in task_files(t)], force=force, extra=extra)


def teacher_seed_records(params: dict, extra_seeds: dict[str, list[int]] | None, profile: str,
                         force: bool | None = None, extra: dict | None = None) -> dict[int, dict]:
    """Notebook 08's recipe re-run at other seeds on some tasks: {seed: cached record of the tasks that list it}.

    Why: each recipe was measured at one seed, so a 1-2 point difference between two recipes (CoLA at lr 2e-5
    against 3e-5) cannot be told from what a seed moves. ``extra_seeds`` maps a task to the seeds to add beside
    ``params['seed']``; each seed is one record (``params`` with that seed and those tasks), so its runs are
    hashed like every other teacher run and a record already made is read back."""
    if not extra_seeds:
        return {}
    tasks, own = list(params.get("tasks") or []), params.get("seed", 0)
    by_seed: dict[int, list[str]] = {}
    for task, seeds in extra_seeds.items():
        if task not in tasks:
            raise ConfigError(f"extra_seeds names task {task!r}, which this notebook does not run; "
                              f"use some of {tasks}")
        if not isinstance(seeds, list | tuple) or not seeds or not all(
                isinstance(x, int) and not isinstance(x, bool) for x in seeds):
            raise ConfigError(f"extra_seeds[{task!r}] must be a non-empty list of integer seeds, got {seeds!r}")
        if own in seeds or len(set(seeds)) != len(seeds):
            raise ConfigError(f"extra_seeds[{task!r}] = {seeds!r} must list distinct seeds other than the "
                              f"recipe's own seed {own}")
        for seed in seeds:
            by_seed.setdefault(seed, []).append(task)
    return {seed: teacher_record({**params, "seed": seed, "tasks": [t for t in tasks if t in names]}, profile,
                                 force=force, extra=extra)
            for seed, names in sorted(by_seed.items())}



def method_experiment(s: Settings, workdir: str | os.PathLike, progress: bool = True) -> dict:
    """C1 after distillation: every method at one budget, task-distilled identically.

    ``s``: the GLUE settings with ``task``, ``ratio`` (budget = encoder weights / ratio), ``methods``
    (names of :func:`tdlib.studies.methods.method_class`) and ``general``. Each method gets the ranks with the lowest
    weight error within the budget (as in the weight comparison). Students are identical except for the
    decomposition: the same init protocol and the same two-stage task recipe. Without ``general`` each is fitted
    to the fine-tuned teacher's stacked weights and only task-distilled; with it, each is fitted to the
    pre-trained teacher's, general-distilled as notebook 03's students are (its recovery proxies at the
    ``curve_points``), and then gets the fine-tuned teacher's head and the same task distillation. With
    ``task_seeds`` each method's task distillation runs once per seed and its entry holds the mean (``range``
    and ``seeds`` as in notebook 03), because one seed's SST-2 score moves by about as much as the methods differ.
    """
    task, ratio = s.task, float(s.ratio)
    workdir = Path(workdir)
    tokenizer = load_tokenizer(s.teacher)
    data = Data(s, tokenizer)
    teacher_dir, teacher_info = run_teacher(s, data, task, workdir, progress)
    teacher = load_model(teacher_dir).eval()
    tensor = stack_weights(teacher, s.ops)
    budget = round(tensor.numel() / ratio)
    train_data = data.split(task, "train")
    cfg1, cfg2 = task_configs(s, task, len(train_data))
    regression = get_task(task).is_regression
    t_logits = teacher_dev_logits(teacher, teacher_dir, task, data, progress)
    targets = stage2_targets(teacher, teacher_dir, task, train_data, s, progress)
    out: dict = {"task": task, "ratio": ratio, "budget": budget, "teacher": teacher_info, "methods": {},
                 "steps": [cfg1.steps, cfg2.steps]}
    source, proxies, corpus_cache = tensor, None, {}
    if s.general:  # decomposed from the pre-trained teacher, as notebook 03's students are
        pretrained = load_model(s.teacher).eval()
        source = stack_weights(pretrained, s.ops)
        if s.curve_points:
            proxies = Proxies.for_settings(s, pretrained, tokenizer, progress)
            out["proxies"] = {"teacher": proxies.teacher, "heldout_sequences": len(proxies.heldout),
                              "stsb_pairs": len(proxies.gold)}
    chosen = compare_methods(source, [budget], s.methods, seed=s.seed, progress=progress, keep_fits=True)
    for row in chosen:
        method = row["method"]
        if "skipped" in row:
            out["methods"][method] = {"skipped": row["skipped"]}
            continue
        ranks, fit = row["ranks"], row.pop("fit")
        identity = {"method": method, "ranks": ranks, "teacher": str(teacher_dir), "task": task}
        entry: dict = {"ranks": ranks, "params": fit.n_params(), "ratio": tensor.numel() / fit.n_params(),
                       "init_error": fit.relative_error(source)}
        if s.general:
            spec = MethodSpec(method, ranks, s.ops, s.general_objective)
            encoder_dir, entry["general"] = run_general(s, spec, tokenizer, workdir, corpus_cache, progress,
                                                        proxies=proxies,
                                                        student=with_decomposition(pretrained, fit, s.ops))
            identity["encoder"] = str(encoder_dir)
        identity.update(stage1_identity(s))
        runs = {}
        for seed in s.seeds_for_tasks():  # the run with s.seed hashes as it did before seeds were a setting
            c1, c2 = (dataclasses.replace(c, seed=seed) for c in (cfg1, cfg2))
            seed_everything(seed)
            student = with_decomposition(teacher, fit, s.ops).train()  # the fine-tuned teacher's embeddings, head
            if s.general:  # its encoder: the general-distilled one (same method and ranks, so the same structure)
                load_weights(student.base_model, encoder_dir)
            run_dir = workdir / "methods" / task / f"{method}-{_hash([identity, c1, c2])}"
            start = time.perf_counter()
            hist = task_distill(student, teacher, train_data, run_dir, c1, c2, regression=regression,
                                identity=identity, progress=progress, targets=targets, objective=s.task_objective)
            runs[seed] = {**dev_entry(student, task, data, t_logits, regression, progress),
                          "loss": {"stage1": hist["stage1"]["loss"]["loss"], "stage2": hist["stage2"]["loss"]["loss"]},
                          "seconds": time.perf_counter() - start, "steps": [c1.steps, c2.steps]}
        out["methods"][method] = {**entry, **over_seeds(runs)}  # with task_seeds: the mean, the range, each seed
    if proxies is not None:
        for entry in out["methods"].values():
            if "curve" in entry.get("general", {}):
                entry["general"]["milestones"] = milestones(entry["general"]["curve"], proxies.teacher)
    return out


# the experiments run_experiment (and ``python -m tdlib experiment KIND``) can start, by kind
EXPERIMENTS = {"glue": glue_experiment, "methods": method_experiment, "teacher": teacher_experiment}


