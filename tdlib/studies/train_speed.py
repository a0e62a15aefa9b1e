"""Training throughput: tokens per second of each training stage, against this machine's bf16-matmul roofline.

Why: the claims that need training (C2, C3, C5) are tested at whatever budget a CPU can pay, so a step's
speed is the budget. Every number here is measured in one process with a fixed thread count by
``torch.utils.benchmark`` (warm-up, then the median of repeated blocks):

* each stage (teacher fine-tuning, general distillation of every student, task distillation stage 1) as
  the paper's recipe runs it (fp32, dropout on, every parameter trained) and as the profile runs it
  (precision, dropout and word embeddings as configured; foreach AdamW in both), and general distillation also
  with the teacher's targets read from a cache; a stage's settings are timed in interleaved rounds, and each
  speed-up over the paper recipe comes with a 95% interval;
* the **roofline**: the step's matmul FLOPs (``torch.utils.flop_counter``, forward and backward) divided by
  the matmul rate of the step's precision measured in the same run (bf16 where the CPU has it natively,
  else fp32); ``fraction_of_roofline`` = roofline time / step time;
* an **ablation** of the general-distillation step of the first student, one change at a time, and of stage 2
  of task distillation of every student: the teacher's forward against its logits read from a file;
* **parity**: the general-distillation loss after the same steps from the same seed, fp32 vs bf16.

On a CPU without native bf16 (AVX2 only), bf16 matmuls are emulated and run hundreds of times slower than
fp32: the bf16 rows are skipped there with that reason, and ``precision='auto'`` trains in fp32.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile

import datasets
import numpy as np
import torch
from torch import nn
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from tdlib.core.memory import retain_freed_memory
from tdlib.core.modeling import set_implementation
from tdlib.core.precision import autocast, native_bf16, resolve_precision
from tdlib.core.pretrained import load_model
from tdlib.distill.forward import CompiledTeacher, inputs
from tdlib.distill.loop import TrainConfig, fast_adamw, resolve_attention, stage_settings
from tdlib.distill.stages import cached_distillation_step, distillation_step, prediction_step, task_model
from tdlib.distill.teacher_cache import TeacherCache
from tdlib.studies.provenance import seed_everything
from tdlib.studies.runs import build_student, student_specs
from tdlib.studies.runtimes import interleaved, ratio_interval
from tdlib.studies.settings import settings


def matmul_rate(dtype: torch.dtype, threads: int, size: int = 2048, min_run_time: float = 1.0) -> float:
    """Measured FLOP/s of a square ``size`` matmul in ``dtype`` (the roofline's denominator)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dtype)
    b = torch.randn(size, size, generator=gen).to(dtype)
    timer = benchmark.Timer("a @ b", globals={"a": a, "b": b}, num_threads=threads)
    return 2 * size**3 / timer.blocked_autorange(min_run_time=min_run_time).median


def random_batch(batch: int, seq_len: int, vocab: int, num_labels: int | None = None, seed: int = 0) -> dict:
    """Token ids (speed does not depend on which tokens), full attention, and labels for fine-tuning."""
    gen = torch.Generator().manual_seed(seed)
    out = {"input_ids": torch.randint(1000, vocab, (batch, seq_len), generator=gen),
           "attention_mask": torch.ones(batch, seq_len, dtype=torch.long),
           "token_type_ids": torch.zeros(batch, seq_len, dtype=torch.long)}
    if num_labels:
        out["labels"] = torch.randint(0, num_labels, (batch,), generator=gen)
    return out


def padded(batch: dict, seed: int = 0) -> dict:
    """``batch`` with right padding: row lengths uniform in [seq_len / 4, seq_len], as dynamic padding leaves a
    task batch. Why a second batch: general distillation reads packed sequences (no padding mask), task
    distillation padded ones, and the attention kernels take other paths with a mask: the ablation times both."""
    gen = torch.Generator().manual_seed(seed + 1)
    b, t = batch["input_ids"].shape
    lengths = torch.randint(max(1, t // 4), t + 1, (b,), generator=gen)
    lengths[0] = t  # the longest row sets the width, as in a dynamically padded batch
    keep = torch.arange(t)[None, :] < lengths[:, None]
    return {**batch, "input_ids": batch["input_ids"].masked_fill(~keep, 0), "attention_mask": keep.long()}


def _finetune_loss(model: nn.Module, batch: dict) -> dict:
    return {"loss": model(**inputs(batch), labels=batch["labels"]).loss}


class Step:
    """One optimizer step of a stage (autocast forward, backward, clip, foreach AdamW), timed repeatedly."""

    def __init__(self, model: nn.Module, loss_fn, batch: dict, config: TrainConfig) -> None:
        self.model, self.loss_fn, self.batch = model.train(), loss_fn, batch
        self.config = dataclasses.replace(config, precision=resolve_precision(config.precision),
                                          attention=resolve_attention(config.attention))
        self.restore = stage_settings(model, self.config)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, **fast_adamw(torch.device("cpu")))

    def __call__(self) -> float:
        with autocast(self.config.precision):
            loss = self.loss_fn(self.model, self.batch)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return float(loss.detach())

    def flops(self) -> int:
        """Matmul FLOPs of one step (forward and backward; the optimizer's elementwise work is not counted)."""
        with FlopCounterMode(display=False) as counter:  # one context: entering it again resets the count
            with autocast(self.config.precision):
                loss = self.loss_fn(self.model, self.batch)["loss"]
            loss.backward()
        self.optimizer.zero_grad()
        return counter.get_total_flops()

    def time(self, threads: int, min_run_time: float) -> float:
        self()  # warm-up: first-call allocations and kernel selection
        timer = benchmark.Timer("step()", globals={"step": self}, num_threads=threads)
        return timer.blocked_autorange(min_run_time=min_run_time).median

    def close(self) -> None:
        self.restore()


PAPER = {"precision": "fp32", "dropout": True, "train_word_embeddings": True, "attention": "sdpa",
         "compile_teacher": False}


def _row(name: str, stage: str, step: Step, setting: dict, batch: dict, flops: int, seconds: float,
         rates: dict[str, float]) -> dict:
    rate = rates[step.config.precision]
    return {"stage": stage, "model": name, **setting, "precision": step.config.precision,
            "attention": step.config.attention,
            "batch": batch["input_ids"].shape[0], "seq_len": batch["input_ids"].shape[1],
            "step_ms": 1000 * seconds, "tokens_per_s": batch["input_ids"].numel() / seconds,
            "gflop_per_step": flops / 1e9, "roofline_ms": 1000 * flops / rate,
            "fraction_of_roofline": flops / rate / seconds}


def measure(name: str, stage: str, model: nn.Module, loss_fn, batch: dict, setting: dict, threads: int,
            min_run_time: float, rates: dict[str, float], lr: float = 1e-4) -> dict:
    """One setting's step on its own (the ablation's rows): median of repeated blocks."""
    step = Step(copy.deepcopy(model), loss_fn, batch, TrainConfig(steps=1, lr=lr, **setting))
    try:
        flops = step.flops()
        seconds = step.time(threads, min_run_time)
    finally:
        step.close()
    return _row(name, stage, step, setting, batch, flops, seconds, rates)


def measure_against_paper(name: str, stage: str, model: nn.Module, settings_: dict[str, tuple], threads: int,
                          rounds: int, min_run_time: float, rates: dict[str, float], lr: float = 1e-4) -> list[dict]:
    """The step of each setting (``label -> (setting, loss_fn, batch)``, the paper recipe first), timed in
    interleaved rounds (:func:`tdlib.studies.runtimes.interleaved`: one block per setting per round, the order
    rotating): each row's ``speedup`` over the paper recipe is the geometric mean of the per-round ratios with its
    95% interval (``low``, ``high``), so a drift of the machine during the run moves both sides of a ratio."""
    steps = {label: Step(copy.deepcopy(model), loss_fn, batch, TrainConfig(steps=1, lr=lr, **setting))
             for label, (setting, loss_fn, batch) in settings_.items()}
    try:
        flops = {label: step.flops() for label, step in steps.items()}
        times = interleaved({label: (lambda _, s=step: s()) for label, step in steps.items()}, {}, threads, rounds,
                            min_run_time / rounds)
    finally:
        for step in steps.values():
            step.close()
    paper = next(iter(settings_))
    rows = []
    for label, (setting, _, batch) in settings_.items():
        ms = times[label]
        row = {"setting": label, **_row(name, stage, steps[label], setting, batch, flops[label],
                                        float(np.median(ms)) / 1e3, rates), "ms": ms}
        if label != paper:
            row.update(ratio_interval(times[paper], ms))
        rows.append(row)
    return rows


def parity(student: nn.Module, teacher: nn.Module, batches: list[dict], lr: float, seed: int = 0) -> dict:
    """General-distillation losses of the same steps from the same seed, fp32 and bf16 (dropout off).

    Numerics, not speed: it runs wherever bf16 does (emulated too), so keep ``batches`` small off AMX."""
    out = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(seed)
        step = Step(copy.deepcopy(student), lambda m, b: distillation_step(m, teacher, b), None,
                    TrainConfig(steps=1, lr=lr, precision=precision, dropout=False))
        losses = []
        for batch in batches:
            step.batch = batch
            losses.append(step())
            step.optimizer.zero_grad()
        step.close()
        out[precision] = losses
    out["max_relative_difference"] = max(abs(a - b) / abs(a) for a, b in zip(out["fp32"], out["bf16"], strict=True))
    return out


def stage2_rows(students: dict[str, nn.Module], task_teacher: nn.Module, batch: dict, setting: dict, threads: int,
                min_run_time: float, rates: dict[str, float], lr: float) -> list[dict]:
    """Stage 2 of task distillation, per student: the teacher's forward every step, then its logits read from
    the file every student and seed shares (:func:`tdlib.distill.teacher_cache.cached_teacher_logits`). Why per
    student: the
    teacher's share of a step is larger the smaller the student's own forward and backward."""
    task_teacher = task_teacher.eval().requires_grad_(False)
    with torch.no_grad(), autocast(resolve_precision(setting.get("precision", "auto"))):
        targets = task_teacher(**inputs(batch)).logits.float()
    batch = {**batch, "idx": torch.arange(batch["input_ids"].shape[0])}
    rows = []
    for name, encoder in students.items():
        student = task_model(encoder, task_teacher)
        for label, cached in (("teacher forward every step", None), ("+ teacher logits from the file", targets)):
            loss = lambda m, b, t=cached: prediction_step(m, task_teacher, b, regression=False, targets=t)  # noqa: E731
            rows.append({"change": f"task stage 2 ({name}, padded batch): {label}",
                         **measure(name, "task stage 2", student, loss, batch, setting, threads, min_run_time, rates,
                                   lr)})
    return rows


def run_train_bench(teacher: nn.Module, task_teacher: nn.Module, students: dict[str, nn.Module], setting: dict,
                    threads: int = 2, batch: int = 16, seq_len: int = 128, task_seq_len: int = 64,
                    min_run_time: float = 3.0, rounds: int = 5, parity_steps: int = 20, lr: float = 1e-3,
                    seed: int = 0, progress: bool = True) -> dict:
    """The stage table (paper recipe vs ``setting``; general distillation also with the teacher's targets read from
    a cache, as notebook 03 runs it; each stage's settings timed in ``rounds`` interleaved rounds, ``min_run_time``
    seconds per setting in all), the roofline, the ablation and the parity check.

    ``teacher`` is the pre-trained encoder, ``task_teacher`` the same with a classification head, ``students``
    the general-distillation students by name (the first is ablated). ``setting`` holds the profile's
    ``precision``, ``dropout``, ``train_word_embeddings`` and (optionally) ``attention``.
    """
    torch.set_num_threads(threads)
    retain_freed_memory()
    bf16 = native_bf16()
    rates = {"fp32": matmul_rate(torch.float32, threads)}
    if bf16:
        rates["bf16"] = matmul_rate(torch.bfloat16, threads)
    vocab = teacher.config.vocab_size
    gen_batch = random_batch(batch, seq_len, vocab, seed=seed)
    task_batch = random_batch(batch, task_seq_len, vocab, num_labels=task_teacher.config.num_labels, seed=seed)
    teacher = teacher.eval().requires_grad_(False)
    general = lambda m, b: distillation_step(m, teacher, b)  # noqa: E731
    compiled = CompiledTeacher(teacher)
    fused = lambda m, b: distillation_step(m, compiled, b)  # noqa: E731

    def loss_for(loss_fn, s: dict):  # the teacher's forward as the setting runs it
        return fused if loss_fn is general and s.get("compile_teacher") else loss_fn
    jobs = [("finetune", "teacher", task_teacher, _finetune_loss, task_batch)]
    jobs += [("general", name, s, general, gen_batch) for name, s in students.items()]
    first = next(iter(students))
    jobs.append(("task stage 1", first, students[first], general, task_batch))
    setting = {**setting, "precision": resolve_precision(setting.get("precision", "auto"))}
    precision = "bf16" if bf16 else "fp32"
    holder = tempfile.TemporaryDirectory(prefix="tdlib-cache-")  # the teacher's targets read, not computed
    cache_rows = datasets.Dataset.from_dict({k: gen_batch[k].tolist() for k in ("input_ids", "attention_mask",
                                                                            "token_type_ids")})
    cache = TeacherCache.build_or_open(holder.name, {"bench": seed}, teacher, cache_rows, precision, progress=False)
    cached_batch = {**gen_batch, "idx": torch.arange(batch)}
    from_cache = lambda m, b: cached_distillation_step(m, cache, b)  # noqa: E731
    no_teacher = {k: v for k, v in setting.items() if k != "compile_teacher"}  # its targets are read
    rows = []
    for stage, name, model, loss_fn, b in tqdm(jobs, desc="train bench", disable=not progress):
        settings_ = {"paper recipe": (PAPER, loss_for(loss_fn, PAPER), b),
                     "profile": (setting, loss_for(loss_fn, setting), b)}
        if stage == "general":  # general distillation as notebook 03 runs it: the teacher's targets read from its cache
            settings_["profile, teacher targets cached"] = (no_teacher, from_cache, cached_batch)
        rows += measure_against_paper(name, stage, model, settings_, threads, rounds, min_run_time, rates, lr)
    steps = [("paper recipe (fp32)", PAPER)]
    if bf16:
        steps.append(("+ bf16", {**PAPER, "precision": "bf16"}))
    steps += [("+ dropout off", {**PAPER, "precision": precision, "dropout": False}),
              ("+ word embeddings frozen", {"precision": precision, "dropout": False, "train_word_embeddings": False,
                                            "attention": "sdpa"}),
              ("+ eager attention", {"precision": precision, "dropout": False, "train_word_embeddings": False,
                                     "attention": "eager"}),
              ("+ compiled teacher", {"precision": precision, "dropout": False, "train_word_embeddings": False,
                                      "attention": "eager", "compile_teacher": True})]
    ablation = [] if bf16 else [{"change": "+ bf16", "skipped": "this CPU has no native bf16 (AMX-BF16 or "
                                 "AVX512-BF16): bf16 matmuls are emulated, far slower than fp32"}]
    for label, s in tqdm(steps, desc="ablation", disable=not progress):
        ablation.append({"change": label, **measure(first, "general", students[first], loss_for(general, s),
                                                    gen_batch, s, threads, min_run_time, rates, lr)})
    ablation.append({"change": "+ teacher targets from the cache", **measure(
        first, "general", students[first], from_cache, cached_batch, steps[-2][1], threads, min_run_time,
        rates, lr)})
    holder.cleanup()
    base = {"precision": precision, "dropout": False, "train_word_embeddings": False}
    task_padded = padded(task_batch, seed)
    for label, kernel in (("task stage 1, padded batch: SDPA", "sdpa"), ("+ eager attention (padded batch)", "eager")):
        ablation.append({"change": label, **measure(first, "task stage 1", students[first], general, task_padded,
                                                    {**base, "attention": kernel}, threads, min_run_time, rates, lr)})
    ablation += stage2_rows(students, task_teacher, task_padded,
                            {**base, "attention": setting.get("attention", "auto")}, threads, min_run_time, rates, lr)
    if getattr(students[first].config, "tdlib", None) is not None:  # a Tucker student: the other training path

        rebuilt = set_implementation(copy.deepcopy(students[first]), "reconstructed")
        ablation.append({"change": "student forward: rebuild each W_i, then dense (instead of factorized)",
                         **measure(first, "general", rebuilt, general, gen_batch, steps[-2][1], threads,
                                   min_run_time, rates, lr)})
    small = [random_batch(4, 32, vocab, seed=seed + i) for i in range(parity_steps)]
    return {"threads": threads, "native_bf16": bf16, "matmul_tflops": {k: v / 1e12 for k, v in rates.items()},
            "rows": rows, "ablation": ablation, "parity": parity(students[first], teacher, small, lr, seed)}


def profile_train_bench(teacher_name: str, students: list, baselines: list, ops: str, setting: dict,
                        threads: int = 2, batch: int = 16, seq_len: int = 128, task_seq_len: int = 64,
                        min_run_time: float = 3.0, rounds: int = 5, seed: int = 0, progress: bool = True) -> dict:
    """:func:`run_train_bench` on a profile's teacher, Tucker students and equal-budget baselines."""

    seed_everything(seed)
    teacher = load_model(teacher_name).eval()
    task_teacher = load_model(teacher_name, num_labels=2, pooling=setting.get("pooling", "cls"))
    specs = student_specs(settings({"students": students, "baselines": baselines, "ops": ops}), teacher)
    models = {spec.name: build_student(spec, teacher, seed) for spec in specs}
    knobs = {k: setting[k] for k in ("precision", "dropout", "train_word_embeddings", "attention", "compile_teacher")
             if k in setting}
    return run_train_bench(teacher, task_teacher, models, knobs, threads, batch, seq_len, task_seq_len,
                           min_run_time, rounds, seed=seed, progress=progress)
