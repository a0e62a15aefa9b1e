"""The distillation experiments behind notebooks 02 (C1, accuracy half), 03 (C2/C3) and 05 (C5).

:func:`glue_experiment` runs the paper's protocol 1 on GLUE: fine-tune the teacher per task,
general-distil each student (Tucker configs and their equal-budget dense baselines) from the
pre-trained teacher on the corpus, task-distil each (two stages) from the fine-tuned teacher, and
evaluate everything on the dev sets. :func:`method_experiment` trains one student per
decomposition method at one budget with the same task distillation.

Each training run lives in ``workdir/<stage>/<name>-<hash>/`` where the hash covers everything
that determines it (settings, data file hashes, parent runs), so a rerun reuses finished runs,
resumes interrupted ones, and a changed setting starts a new run instead of mixing two.
Parameters arrive as dicts (a notebook's ``parameters`` cell) and become one validated
:class:`tdlib.studies.settings.Settings` at the top of each experiment.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState

from tdlib.core.baseline import encoder_weights, ffn_for_budget, shrink
from tdlib.core.errors import ConfigError, TdlibError
from tdlib.core.fitting import BlockwiseFit
from tdlib.core.io import key_of, load_weights, sha256_file, write_json_atomic
from tdlib.core.modeling import DATA_AWARE, compress, count_params, init_name, with_decomposition
from tdlib.core.precision import resolve_precision
from tdlib.core.pretrained import load_model, load_tokenizer
from tdlib.core.stacking import stack_weights
from tdlib.data.calibration import cached_calibration
from tdlib.data.corpus import load_corpus
from tdlib.data.glue import (
    combine_dev_metrics,
    compute_metrics,
    dev_splits,
    encode,
    get_task,
    glue_average,
    load_task,
    task_file,
    task_files,
    task_scores,
)
from tdlib.distill.forward import predict
from tdlib.distill.loop import TrainConfig, check_run, is_main_process, result_fields
from tdlib.distill.proxies import Proxies, milestones, proxy_files
from tdlib.distill.stages import fidelity, finetune, general_distill, task_distill, task_model
from tdlib.distill.teacher_cache import TeacherCache, teacher_logits
from tdlib.studies.methods import compare_methods, method_class
from tdlib.studies.provenance import seed_everything
from tdlib.studies.records import cached, runs_dir
from tdlib.studies.settings import Settings, keyed, settings
from tdlib.studies.specs import BaselineSpec, MethodSpec, StudentSpec, TuckerSpec


def _hash(obj) -> str:
    """The run-directory key of (identity, configs): what determines a run's result, nothing else.

    A config's ``checkpoint_every`` is left out: resume is exact, so how often a run checkpoints does not
    change what it computes, and a rerun with another frequency resumes the same run.
    """

    if isinstance(obj, list):
        obj = [result_fields(o) if isinstance(o, TrainConfig) else o for o in obj]
    return key_of(obj, 10)


def per_task(value, task: str):
    """A setting that is one value for every task, or a {task: value} dict (tasks it omits get None)."""
    return value.get(task) if isinstance(value, dict) else value


def _steps(explicit: int | None, epochs: float, n: int, batch: int) -> int:
    return int(explicit) if explicit else max(1, round(epochs * n / batch))


class Data:
    """Encoded train/dev splits of each task, and the file hashes that identify them."""

    def __init__(self, s: Settings, tokenizer) -> None:
        self.s, self.tokenizer, self._cache = s, tokenizer, {}

    def split(self, task: str, split: str):
        key = (task, split)
        if key not in self._cache:
            limit = per_task(self.s.max_train_examples, task) if split == "train" else None
            raw = load_task(task, split, max_examples=limit, seed=self.s.seed)
            data = encode(raw, self.tokenizer, task, self.s.max_length,
                          separate=self.s.pooling_for(task) == "cosine").rename_column("label", "labels")
            data = data.add_column("idx", list(range(len(data))))  # row numbers: cached teacher logits are read by them
            cols = [c for c in ("input_ids", "attention_mask", "token_type_ids", "labels", "idx")
                    if c in data.column_names]
            data.set_format("torch", columns=cols)
            self._cache[key] = data
        return self._cache[key]

    def dev(self, task: str) -> dict[str, object]:
        """Every dev split the task reports (MNLI: matched and mismatched), by split name."""
        return {split: self.split(task, split) for split in dev_splits(task)}

    def files(self, task: str) -> dict[str, str]:
        out = {}
        for split in get_task(task).splits:
            path = task_file(task, split)
            out[split] = sha256_file(path) if path is not None else f"hub:glue/{get_task(task).hub}"
        return out


def _config(s: Settings, steps: int, lr: float, schedule: str, warmup: float, distill: bool = True,
            head_lr: float | None = None) -> TrainConfig:
    """A stage's config; ``distill=False`` (teacher fine-tuning) keeps dropout and trains every parameter."""
    return TrainConfig(steps=steps, batch_size=s.batch_size, lr=lr, schedule=schedule, warmup=warmup,
                       seed=s.seed, checkpoint_every=s.checkpoint_every, precision=s.precision,
                       dropout=s.distill_dropout or not distill,
                       train_word_embeddings=s.train_word_embeddings or not distill, head_lr=head_lr)


def task_configs(s: Settings, task: str, n_train: int) -> tuple[TrainConfig, TrainConfig]:
    """Task distillation's two stages: intermediate losses at a constant lr, then prediction with 10% warm-up."""
    e1, e2 = s.task_epochs.get(task, [3, 3])
    return (_config(s, _steps(s.stage1_steps, e1, n_train, s.batch_size), s.task_lr, "constant", 0.0),
            _config(s, _steps(s.stage2_steps, e2, n_train, s.batch_size), s.task_lr, "linear", 0.1))


def run_teacher(s: Settings, data: Data, task: str, workdir: Path | None = None, progress: bool = True,
                out: Path | None = None) -> tuple[Path, dict]:
    """Fine-tune the teacher on ``task`` (into ``out``, or a hashed run dir of ``workdir``); (model dir, info)."""
    spec = get_task(task)
    train_data = data.split(task, "train")
    epochs = per_task(s.finetune_epochs, task) or Settings.finetune_epochs
    cfg = _config(s, _steps(per_task(s.finetune_steps, task), epochs, len(train_data), s.batch_size),
                  per_task(s.finetune_lr, task), "linear", 0.1, distill=False,
                  head_lr=per_task(s.finetune_head_lr, task))
    identity = {"teacher": str(s.teacher), "task": task, "data": data.files(task), "n_train": len(train_data),
                "max_length": s.max_length, "pooling": s.pooling_for(task), "padding": "dynamic"}
    out = Path(out) if out else workdir / "finetune" / f"{task}-{_hash([identity, cfg])}"
    check_run(out, cfg, identity)
    seed_everything(s.seed)
    model = load_model(s.teacher, num_labels=spec.num_labels, pooling=s.pooling_for(task),
                       problem_type="regression" if spec.is_regression else "single_label_classification")
    per_epoch = len(train_data) // s.batch_size  # full batches: the loader drops the last partial one
    history = finetune(model, train_data, out, cfg, identity=identity, progress=progress,
                       evaluate=lambda m: dev_metrics(task, data, dev_logits(m, task, data, progress=False)),
                       evaluate_at=epoch_ends(cfg.steps, per_epoch))
    if is_main_process():
        data.tokenizer.save_pretrained(str(out / "model"))  # so the directory is a complete teacher
    metrics = dev_metrics(task, data, dev_logits(model, task, data, progress))
    return out / "model", {"metrics": metrics, "seconds": history["seconds"], "steps": cfg.steps,
                           "loss": history["loss"]["loss"], "curve": history.get("curve", []),
                           "steps_per_epoch": per_epoch, "epochs": cfg.steps / max(1, per_epoch)}


def epoch_ends(steps: int, steps_per_epoch: int) -> list[int]:
    """The step that ends each epoch of a ``steps``-step run, and its last step (a partial last epoch)."""
    return sorted({*range(max(1, steps_per_epoch), steps, max(1, steps_per_epoch)), steps})


def student_specs(s: Settings, teacher_model) -> list[StudentSpec]:
    """Every student: the Tucker configs and, for each, its equal-budget dense baseline."""
    specs, baselines = [], list(s.baselines or [])
    for i, (rl, rd) in enumerate(s.students):
        tucker = TuckerSpec(rl, rd, s.ops, s.init, s.general_objective)
        specs.append(tucker)
        if i < len(baselines) and baselines[i]:  # a baseline per student, in order; fewer is fine
            layers, hidden = baselines[i]
            ffn = ffn_for_budget(tucker_budget(teacher_model, rl, rd, s.ops), layers, hidden)
            specs.append(BaselineSpec(layers, hidden, ffn, tucker.name, s.general_objective))
    return specs


def control_specs(s: Settings) -> list[TuckerSpec]:
    """The first Tucker student with each of ``s.controls``' overrides (init, objective): curve-only runs."""
    if not s.controls or not s.students:
        return []
    rl, rd = s.students[0]
    out = []
    for override in s.controls:
        spec = TuckerSpec(rl, rd, s.ops, override.get("init", s.init), override.get("objective", s.general_objective))
        out.append(spec.renamed(spec.name + "".join(f" {k}={v}" for k, v in sorted(override.items()))))
    return out


def needs_all_layers(s: Settings) -> bool:
    """Whether any general-distillation run of ``s`` matches every layer (the teacher cache then stores them)."""
    objectives = {s.general_objective, *(c.get("objective", s.general_objective) for c in s.controls)}
    return objectives != {"last_layer"}


def curve_steps(total: int, points: int) -> list[int]:
    """Geometric checkpoints: 0, total/2^(points-2), ..., total/2, total (deduplicated); [] for no curve."""
    if points <= 0:
        return []
    steps = {0, total, *(total // 2**k for k in range(1, max(0, points - 1)))}
    return sorted(steps)


def tucker_budget(teacher_model, rank_layer: int, rank_dim: int, ops: str) -> int:
    n, d, _ = stack_weights(teacher_model, ops).shape
    return method_class("IV").param_count((n, d, d), rank_layer=rank_layer, rank_dim=rank_dim)


def build_student(spec: StudentSpec, teacher_model, seed: int, calibration=None):
    """The model of a Tucker or baseline spec, built from ``teacher_model`` (a method student comes from its fit)."""
    if not isinstance(spec, TuckerSpec | BaselineSpec):
        raise ConfigError(f"{spec.name} is a {spec.kind} student: build it from its fitted decomposition "
                          "(tdlib.core.modeling.with_decomposition) and pass it to run_general as student=")
    if isinstance(spec, TuckerSpec):
        fit = BlockwiseFit(**spec.fit, seed=seed) if spec.fit else None
        return compress(teacher_model, spec.rank_layer, spec.rank_dim, spec.ops, init=spec.init, seed=seed,
                        calibration=calibration, fit=fit)
    return shrink(teacher_model, spec.num_layers, spec.hidden_size, spec.intermediate_size)


def student_params(model, spec: StudentSpec) -> int:
    if isinstance(spec, MethodSpec):  # counted as the budget counts it (CP's weights vector folds into a factor)
        return getattr(model, "base_model", model).encoder.tdlib_stack.fit.n_params()
    return count_params(model, spec.ops).decomposed if isinstance(spec, TuckerSpec) else encoder_weights(model)


def run_general(s: Settings, spec: StudentSpec, tokenizer, workdir: Path | None, corpus_cache: dict,
                progress: bool = True, out: Path | None = None, proxies=None, student=None) -> tuple[Path, dict]:
    """General distillation of one student from the pre-trained teacher (with ``proxies``, a
    :class:`tdlib.distill.proxies.Proxies`: its recovery curve at :func:`curve_steps`). ``student``: the model of
    ``spec``, when the caller has built it already (notebook 02's method students, from the fits its rank search
    made), instead of :func:`build_student`.

    The corpus is read and the run directory checked before the teacher is loaded and decomposed, so bad
    data or a refused run directory fail in seconds.
    """
    if "corpus" not in corpus_cache:
        corpus_cache["corpus"] = load_corpus(tokenizer, max_length=s.general_max_length,
                                             max_sequences=s.general_sequences, progress=progress)
    corpus, files = corpus_cache["corpus"]
    corpus.set_format("torch")
    cfg = _config(s, int(s.general_steps), s.general_lr, "linear", 0.1)
    identity = {"teacher": str(s.teacher), "student": spec.as_dict(), "corpus_files": len(files),
                "corpus_sha": _hash([sha256_file(f) for f in files]) if files else "hub",
                "sequences": len(corpus), "max_length": s.general_max_length}
    if s.teacher_cache:
        identity["teacher_targets"] = "float16 cache"
    evaluate_at = curve_steps(cfg.steps, s.curve_points) if proxies is not None else []
    if evaluate_at:
        identity["curve"] = {"steps": evaluate_at, "proxy_sequences": s.proxy_sequences}
    name = spec.name.replace(" ", "_").replace("=", "-")
    out = Path(out) if out else workdir / "general" / f"{name}-{_hash([identity, cfg])}"
    check_run(out, cfg, identity)
    seed_everything(s.seed)
    teacher = load_model(s.teacher).eval()
    cache = None
    if s.teacher_cache:
        if "idx" not in corpus.column_names:
            corpus = corpus.add_column("idx", list(range(len(corpus))))
            corpus.set_format("torch")
            corpus_cache["corpus"] = (corpus, files)
        key = {k: identity[k] for k in ("teacher", "corpus_files", "corpus_sha", "sequences", "max_length")}
        with PartialState().main_process_first():  # one process builds it, the others open it
            cache = TeacherCache.build_or_open((workdir or out.parent) / "teacher-cache", key, teacher,
                                               corpus.remove_columns("idx"),
                                               resolve_precision(s.precision), progress=progress,
                                               all_layers=needs_all_layers(s))
    calibration = None
    if isinstance(spec, TuckerSpec) and init_name(spec.init) in DATA_AWARE:
        calibration = cached_calibration(teacher, tokenizer, (workdir or out.parent) / "calibration",
                                         ops=spec.ops, progress=progress, **(spec.calibration or {}))
    if student is None:
        student = build_student(spec, teacher, s.seed, calibration)
    history = general_distill(student, teacher, corpus, out, cfg, identity=identity, progress=progress, cache=cache,
                              objective=spec.objective, evaluate=proxies,
                              evaluate_at=evaluate_at)
    if is_main_process():
        tokenizer.save_pretrained(str(out / "model"))
    info = {"seconds": history["seconds"], "steps": cfg.steps, "params": student_params(student, spec),
            "final_loss": history["loss"]["loss"][-1], "loss": history["loss"]["loss"],
            "tokens": cfg.steps * cfg.batch_size * s.general_max_length * history.get("num_processes", 1)}
    if "curve" in history:
        info.update(curve=history["curve"], eval_seconds=history.get("eval_seconds", 0.0))
    return out / "model", info


def stage1_identity(s: Settings) -> dict:
    """What a task run's identity adds for its stage-1 loss: nothing for the paper's (so its runs keep the keys
    they had before ``task_objective`` existed), else the objective."""
    return {} if s.task_objective == "last_layer" else {"stage1_objective": s.task_objective}


def run_task_student(s: Settings, spec: StudentSpec, data: Data, task: str, encoder_dir: Path, teacher_dir: Path,
                     workdir: Path | None, progress: bool = True, out: Path | None = None,
                     curve: list[int] | None = None, seed: int | None = None) -> dict:
    """Two-stage task distillation of a general-distilled student; dev metrics (and fidelity to the teacher).

    With ``curve`` (stage-2 steps) the dev metrics are also taken at those steps of stage 2 (``curve`` in the
    result): the task-distillation curve of notebooks 03 (``task_curve``) and 09. The run's folder is hashed
    from what it trains, so 09 reuses 03's run whenever their settings agree. ``seed`` (default ``s.seed``)
    seeds both stages; the run with ``s.seed`` hashes as it did before seeds were a setting.
    """
    train_data = data.split(task, "train")
    seed = s.seed if seed is None else seed
    cfg1, cfg2 = (dataclasses.replace(c, seed=seed) for c in task_configs(s, task, len(train_data)))
    identity = {"student": spec.as_dict(), "encoder": str(encoder_dir), "teacher": str(teacher_dir), "task": task,
                "padding": "dynamic"}
    if curve:
        identity["curve"] = sorted(curve)
    identity.update(stage1_identity(s))
    out = Path(out) if out else workdir / "task" / task / f"{spec.name}-{_hash([identity, cfg1, cfg2])}"
    check_run(out / "stage1", cfg1, identity)  # before any model loads: a refusal comes at once
    check_run(out / "stage2", cfg2, {**identity, "after": "stage1"})
    seed_everything(seed)
    teacher = load_model(teacher_dir).eval()
    student = task_model(load_model(encoder_dir), teacher)
    regression = get_task(task).is_regression
    t_logits = teacher_dev_logits(teacher, teacher_dir, task, data, progress)

    def measure(model) -> dict:
        return dev_entry(model, task, data, t_logits, regression)

    hist = task_distill(student, teacher, train_data, out, cfg1, cfg2, regression=regression, identity=identity,
                        progress=progress, evaluate=measure if curve else None, evaluate_at=curve or (),
                        targets=stage2_targets(teacher, teacher_dir, task, train_data, s, progress),
                        objective=s.task_objective)
    if is_main_process():  # the model directory is complete: `evaluate` reads its own tokenizer
        data.tokenizer.save_pretrained(str(out / "stage2" / "model"))
    entry = {**measure(student), "seconds": hist["stage1"]["seconds"] + hist["stage2"]["seconds"],
             "steps": [cfg1.steps, cfg2.steps], "model": str(out / "stage2" / "model"),
             "loss": {"stage1": hist["stage1"]["loss"]["loss"], "stage2": hist["stage2"]["loss"]["loss"]}}
    if curve:
        entry.update(curve=hist["stage2"].get("curve", []), eval_seconds=hist["stage2"].get("eval_seconds", 0.0))
    return entry


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


def teacher_entry(s: Settings, data: Data, task: str, workdir: Path, progress: bool = True) -> tuple[Path, dict]:
    """The fine-tuned teacher of ``task`` and its record entry: dev metrics and curve, the data's sha256, the
    training and dev sizes and the majority-class floor its score is read against."""
    model_dir, info = run_teacher(s, data, task, workdir, progress)
    info.update(n_train=len(data.split(task, "train")), n_dev=sum(len(d) for d in data.dev(task).values()),
                data=data.files(task), majority=majority_metrics(task, data))
    return model_dir, info


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
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "tdlib",
               "experiment", kind, "--params", str(Path(tmp) / "params.json"), "--workdir", str(workdir),
               "--out", str(Path(tmp) / "result.json")]
        env = dict(os.environ)

        if not torch.cuda.is_available():  # CPU processes over gloo: share the cores instead of oversubscribing
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
        print(f"[tdlib] {kind} experiment on {n} processes: accelerate launch ... -m tdlib experiment {kind}",
              flush=True)
        proc = subprocess.run(cmd, env=env, stdout=None if progress else subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise TdlibError(f"the {n}-process {kind} experiment failed (exit {proc.returncode}):\n{tail}")
        return json.loads((Path(tmp) / "result.json").read_text())


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


def majority_metrics(task: str, data: Data) -> dict[str, float]:
    """Dev metrics of a constant predictor: the training set's majority class (regression: its mean score).

    The floor a student must rise above to have learnt anything from the task: a student stuck at the
    majority class scores this, and on MRPC or RTE that is already most of the teacher's score.
    """
    train = np.asarray(data.split(task, "train")["labels"])
    constant = float(train.mean()) if get_task(task).is_regression else int(np.bincount(train.astype(int)).argmax())
    return dev_metrics(task, data, {split: np.full(len(d), constant) for split, d in data.dev(task).items()})


def dev_logits(model, task: str, data: Data, progress: bool = True) -> dict[str, np.ndarray]:
    """The model's logits on each dev split of the task."""
    return {split: predict(model, d, progress=progress, precision=data.s.precision)
            for split, d in data.dev(task).items()}


def dev_entry(model, task: str, data: Data, t_logits: np.ndarray, regression: bool, progress: bool = False) -> dict:
    """A student's dev measurement, one shape for every record: the task's metrics, its fidelity to the
    teacher's dev logits ``t_logits`` (:func:`tdlib.distill.stages.fidelity`) and the spread of its logits (a student
    stuck at one class has a spread near 0)."""
    logits = dev_logits(model, task, data, progress)
    joined = np.concatenate(list(logits.values()))
    return {"metrics": dev_metrics(task, data, logits), "fidelity": fidelity(joined, t_logits, regression),
            "logit_std": float(joined.std(0).mean())}


def teacher_dev_logits(teacher, teacher_dir: Path, task: str, data: Data, progress: bool = True) -> np.ndarray:
    """The fine-tuned teacher's logits on the task's dev splits, joined; computed once per teacher and kept
    beside it (:func:`tdlib.distill.teacher_cache.teacher_logits`): each of a task's students and seeds reads them."""
    return np.concatenate([teacher_logits(teacher, teacher_dir, d, data.s.precision, progress)
                           for d in data.dev(task).values()])


def stage2_targets(teacher, teacher_dir: Path, task: str, train_data, s: Settings, progress: bool = True):
    """Stage 2's soft targets: the teacher's logits on every training row, computed once per teacher and
    training set (None for a regression task, whose stage 2 reads the gold scores)."""

    if get_task(task).is_regression:
        return None
    return torch.from_numpy(teacher_logits(teacher, teacher_dir, train_data, s.precision, progress))


def dev_metrics(task: str, data: Data, logits: dict[str, np.ndarray]) -> dict[str, float]:
    """The task's metrics on each dev split, combined (MNLI reports matched and mismatched, as the paper does)."""
    return combine_dev_metrics(task, {split: compute_metrics(task, logits[split], np.asarray(d["labels"]))
                                      for split, d in data.dev(task).items()})


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


def curve_glue(runs: dict, tasks: list[str], teacher_glue: float) -> list[dict]:
    """GLUE average (and % of the teacher's) at each curve step common to every task's run of a student."""

    steps = sorted(set.intersection(*[{p["step"] for p in runs[t]["curve"]} for t in tasks]))
    out = []
    for step in steps:
        points = {t: next(p for p in runs[t]["curve"] if p["step"] == step) for t in tasks}
        glue = average_over(points, lambda p: p["metrics"])
        out.append({"step": step, "glue": glue, "percent_of_teacher": 100.0 * glue / teacher_glue})
    return out
