"""The runs a study is made of: one teacher fine-tuning, one general distillation, one task distillation.

Each training run lives in ``workdir/<stage>/<name>-<key>/`` where the key covers everything that determines it
(settings, data files' sha256, parent runs), so a rerun reuses finished runs, resumes interrupted ones, and a
changed setting starts a new run instead of mixing two. Each returns the entry a record keeps: dev metrics,
fidelity to the teacher, losses, seconds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState

from tdlib.core.baseline import encoder_weights, ffn_for_budget, shrink
from tdlib.core.errors import ConfigError
from tdlib.core.fitting import BlockwiseFit
from tdlib.core.io import key_of, sha256_file
from tdlib.core.modeling import compress, count_params
from tdlib.core.modeling_tdlib import DATA_AWARE, init_name
from tdlib.core.precision import resolve_precision
from tdlib.core.pretrained import load_model
from tdlib.core.stacking import stack_weights
from tdlib.data.calibration import cached_calibration
from tdlib.data.corpus import load_corpus
from tdlib.data.glue import combine_dev_metrics, compute_metrics, dev_splits, encode, get_task, load_task, task_file
from tdlib.distill.forward import predict
from tdlib.distill.loop import TrainConfig, check_run, is_main_process, result_fields
from tdlib.distill.stages import fidelity, finetune, general_distill, task_distill, task_model
from tdlib.distill.teacher_cache import TeacherCache, cached_teacher_logits
from tdlib.studies.methods import method_class
from tdlib.studies.provenance import seed_everything
from tdlib.studies.settings import Settings
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
            head_lr: float | None = None, general: bool = False) -> TrainConfig:
    """A stage's config; ``distill=False`` (teacher fine-tuning) keeps dropout and trains every parameter;
    ``general``: general distillation, the one stage ``compile_teacher`` applies to."""
    return TrainConfig(steps=steps, batch_size=s.batch_size, lr=lr, schedule=schedule, warmup=warmup,
                       seed=s.seed, checkpoint_every=s.checkpoint_every, precision=s.precision,
                       dropout=s.distill_dropout or not distill,
                       train_word_embeddings=s.train_word_embeddings or not distill, head_lr=head_lr,
                       compile_teacher=general and s.compile_teacher)


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
    cfg = _config(s, int(s.general_steps), s.general_lr, "linear", 0.1, general=True)
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


def teacher_entry(s: Settings, data: Data, task: str, workdir: Path, progress: bool = True) -> tuple[Path, dict]:
    """The fine-tuned teacher of ``task`` and its record entry: dev metrics and curve, the data's sha256, the
    training and dev sizes and the majority-class floor its score is read against."""
    model_dir, info = run_teacher(s, data, task, workdir, progress)
    info.update(n_train=len(data.split(task, "train")), n_dev=sum(len(d) for d in data.dev(task).values()),
                data=data.files(task), majority=majority_metrics(task, data))
    return model_dir, info


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
    beside it (:func:`tdlib.distill.teacher_cache.cached_teacher_logits`): each of a task's students and seeds reads
    them."""
    return np.concatenate([cached_teacher_logits(teacher, teacher_dir, d, data.s.precision, progress)
                           for d in data.dev(task).values()])


def stage2_targets(teacher, teacher_dir: Path, task: str, train_data, s: Settings, progress: bool = True):
    """Stage 2's soft targets: the teacher's logits on every training row, computed once per teacher and
    training set (None for a regression task, whose stage 2 reads the gold scores)."""

    if get_task(task).is_regression:
        return None
    return torch.from_numpy(cached_teacher_logits(teacher, teacher_dir, train_data, s.precision, progress))


def dev_metrics(task: str, data: Data, logits: dict[str, np.ndarray]) -> dict[str, float]:
    """The task's metrics on each dev split, combined (MNLI reports matched and mismatched, as the paper does)."""
    return combine_dev_metrics(task, {split: compute_metrics(task, logits[split], np.asarray(d["labels"]))
                                      for split, d in data.dev(task).items()})
