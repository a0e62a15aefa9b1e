"""One training loop for every stage (fine-tuning, general and task distillation), on ``accelerate``.

Why one loop: the stages differ only in their loss and schedule, and each needs the same care,
which is easy to get wrong four times: seeded data order, ``accelerate`` for one or many
processes (``accelerate launch --num_processes N``; gloo on CPU, NCCL on GPUs), checkpoints every
``checkpoint_every`` steps and on interrupt, resuming from the last one when the same command runs
again, refusing to resume a directory written by another configuration, tqdm progress with the
loss, and a final model written atomically with ``save_pretrained`` (safetensors).

Run directory layout::
    out_dir/run.json         what this run is (config + identity); a rerun must match it
    out_dir/checkpoint/      accelerate state (model, optimizer, scheduler, RNG) + trainer_state.json
    out_dir/model/           the final model (save_pretrained), written last; its presence = done
    out_dir/history.json     per-step losses and wall time, written with the model
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
from torch import nn
from tqdm import tqdm
from transformers import get_scheduler

from tdlib.core.errors import ConfigError, check_choice
from tdlib.core.heads import head_names
from tdlib.core.io import load_weights, save_model_atomic, write_json_atomic
from tdlib.core.memory import retain_freed_memory
from tdlib.core.precision import PRECISIONS, autocast, resolve_precision
from tdlib.data.collate import pad_collate, pad_token_id

SCHEDULES = ("linear", "constant", "constant_with_warmup")
ATTENTIONS = ("auto", "eager", "sdpa")
RUN_TIME = "run_time.json"  # in a kept model's folder (out/at/<step>): the run's training seconds up to that step


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one stage. ``warmup`` is a fraction of ``steps``."""

    steps: int
    batch_size: int = 32
    lr: float = 5e-5
    schedule: str = "linear"
    warmup: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 0  # 0: only on interrupt
    precision: str = "fp32"  # "auto" | "bf16" | "fp32" (tdlib.core.precision); a run records the resolved one
    dropout: bool = True  # False: every nn.Dropout of the trained model at p=0 for this stage
    train_word_embeddings: bool = True  # False: the word-embedding matrix stays as loaded
    attention: str = "auto"  # the attention kernel while training (resolve_attention); not part of a run's key
    # the task head's learning rate (the pooler and classifier a fine-tuned model reads, tdlib.core.heads.head_names);
    # None: ``lr``. Why: a fresh head at an encoder's lr learns slowly (the teacher's CoLA sat at dev MCC 5.9 through
    # its first epoch at lr 5e-5). Measured on the teacher at 1e-3 (results/08_teacher/bb6cc58e7225.json): it raised
    # MRPC by 1.1 points, and CoLA learnt faster at first but ended 3.1 lower; RTE fell by 3.6
    head_lr: float | None = None
    # general distillation with the teacher online: its targets from one compiled graph
    # (tdlib.distill.forward.CompiledTeacher) instead of the eager forward; same targets up to rounding
    compile_teacher: bool = False

    def validate(self) -> TrainConfig:
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("attention", self.attention, ATTENTIONS)
        check_choice("precision", self.precision, PRECISIONS)
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {self.steps!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup!r}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr!r}")
        if self.head_lr is not None and not self.head_lr > 0:
            raise ConfigError(f"head_lr must be positive (or None: the stage's lr), got {self.head_lr!r}")
        return self


LossFn = Callable[[nn.Module, dict], dict[str, torch.Tensor]]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training, after the checkpoint was saved: says where, so the CLI prints one line."""

    def __init__(self, step: int, out_dir: Path) -> None:
        super().__init__(f"interrupted: checkpoint saved at step {step} in {out_dir}; "
                         "rerun the same command to resume")
        self.step, self.out_dir = step, out_dir



def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s random draws (dropout): a function of (seed, step) alone.

    Why not checkpoint the RNG state instead: a resumed run also draws where a straight run did not
    (a new data-loader iterator takes a seed from torch's RNG), so restored states drift by one draw
    and every later dropout mask differs. Seeding each step makes resume exact by construction.
    """
    return (seed * 1_000_003 + step) % 2**63


# config fields that do not change what a run computes: resume is exact whatever the checkpoint frequency, and
# the attention kernels compute the same attention (they differ in rounding only, as two BLAS paths do)
NOT_RESULT = ("checkpoint_every", "attention")
# fields added after runs were recorded, left out of a run's key at their default (the value that computes what
# those runs computed), so every earlier run keeps its directory and resumes
KEYED_UNLESS_DEFAULT = {"head_lr": None, "compile_teacher": False}


def resolve_attention(attention: str, device: str | torch.device = "cpu") -> str:
    """``'auto'`` -> the faster attention kernel to *train* with on ``device``: ``'eager'`` on a CPU, else ``'sdpa'``.

    Why not SDPA on a CPU: torch's CPU flash-attention backward is slow. In a measured stage-2 step of the
    6-layer IV-36-192 student (batch 32 x 128 tokens, bf16), it took 40% of the step (110 ms per layer
    against 7 ms for its forward). With eager attention (two batched matmuls and a softmax, differentiated
    by autograd) the step ran 1.8x faster; the teacher's fine-tuning step ran 1.2x faster. Notebook 03's task
    runs took 1.42x (IV-36-192), 1.56x (IV-16-96) and 1.2x (dense baselines) less time than the same runs with
    SDPA. Notebook 04's benchmark timed 1.46x on a packed 128-token general-distillation batch and 1.46x on a
    padded 64-token task batch (its previous run: 1.54x and 1.02x; one run's step times vary by tens of percent
    on a shared 2-core machine). Inference keeps SDPA, whose forward is fast: the switch lasts for the training
    stage only (:func:`stage_settings`).
    """
    check_choice("attention", attention, ATTENTIONS)
    if attention != "auto":
        return attention
    return "eager" if torch.device(device).type == "cpu" else "sdpa"


def result_fields(config: TrainConfig) -> dict:
    """The config fields that determine a run's result: every field but :data:`NOT_RESULT`."""
    return _result_part(asdict(config))


def _result_part(config: dict) -> dict:
    """A config dict's fields that determine the result (:func:`result_fields`), from a run.json's or live."""
    return {k: v for k, v in config.items() if k not in NOT_RESULT
            and not (k in KEYED_UNLESS_DEFAULT and v == KEYED_UNLESS_DEFAULT[k])}


def _diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _json_safe(obj):
    return json.loads(json.dumps(obj, default=str))


def resolved(config: TrainConfig) -> TrainConfig:
    """The config as it will run: ``precision='auto'`` replaced by what this machine uses (bf16 or fp32), and
    ``attention='auto'`` by the kernel it trains with.

    The resolved precision goes into the run identity, so a bf16 run is never resumed in fp32 elsewhere.
    """

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return dataclasses.replace(config.validate(), precision=resolve_precision(config.precision, device),
                               attention=resolve_attention(config.attention, device))


def check_run(out_dir: str | Path, config: TrainConfig, identity: dict | None = None) -> dict:
    """The run record of (config, identity); a ConfigError if ``out_dir`` holds another run.

    Cheap (reads one JSON): callers run it before loading teachers or decomposing, so a refusal comes
    in a second, not after the expensive set-up.
    """
    out = Path(out_dir)
    run = _json_safe({"config": asdict(resolved(config)), "identity": identity or {}})
    run_file = out / "run.json"
    if run_file.exists():
        old = json.loads(run_file.read_text())
        before, now = _result_part(old.get("config", {})), _result_part(run["config"])
        if before != now or old.get("identity") != run["identity"]:
            keys = _diff(before, now) + [
                f"identity.{k}" for k in _diff(old.get("identity", {}), run["identity"])]
            raise ConfigError(f"{out} holds a run with a different configuration (differs in {', '.join(keys)}); "
                              "resume with the same settings, or use a new output directory")
    return run


def is_done(out_dir: str | Path) -> bool:
    return (Path(out_dir) / "model" / "config.json").is_file() and (Path(out_dir) / "history.json").is_file()


def run_seconds(kept: str | Path) -> float | None:
    """Training seconds of a run up to its model kept in ``kept`` (``out/at/<step>``), summed over every session the
    run resumed in (evaluation excluded): from the kept model's ``run_time.json``, or, for a model kept before that
    file was written, from the finished run's history when the run ended at that step. None when neither says."""
    kept = Path(kept)
    if (kept / RUN_TIME).is_file():
        return float(json.loads((kept / RUN_TIME).read_text())["seconds"])
    history = kept.parent.parent / "history.json"
    if history.is_file():
        h = json.loads(history.read_text())
        if h.get("steps") and h["steps"][-1] == int(kept.name):
            return float(h["seconds"])
    return None


def train(model: nn.Module, loss_fn: LossFn, dataset, config: TrainConfig, out_dir: str | Path, *,
          identity: dict | None = None, frozen: Sequence[nn.Module] = (), desc: str = "train",
          progress: bool = True, accelerator=None, evaluate: Callable[[nn.Module], dict] | None = None,
          evaluate_at: Sequence[int] = (), keep_at: Sequence[int] = (), stop_at: int | None = None) -> dict:
    """Train ``model`` on ``dataset`` (a torch-formatted datasets.Dataset) to minimise ``loss_fn``.

    ``identity`` describes what is being trained (teacher, student spec, data hashes...); with the
    config it must equal what an existing ``out_dir`` was started with, or this raises instead of
    resuming someone else's run. ``frozen`` modules (teachers) are moved to the device and kept in
    eval mode. Returns the history dict (also in ``out_dir/history.json``); the trained model is
    ``out_dir/model``; ``model`` itself holds the trained weights afterwards. A finished run is not
    repeated: its weights are loaded into ``model`` and its history returned.

    ``evaluate(model) -> {name: value}`` is called (main process, eval mode, no grad) before the first step
    when 0 is in ``evaluate_at`` and after each step listed there: the points of a recovery curve, kept in
    ``history["curve"]`` (checkpointed with the history, so a resumed run keeps its earlier points). Its time
    is ``history["eval_seconds"]``, not part of ``history["seconds"]``.

    ``keep_at``: steps whose model is kept in ``out_dir/at/<step>`` (``save_pretrained``), e.g. a scaling study's
    budgets along one run. ``stop_at`` (< ``config.steps``): train up to that step, checkpoint and return the
    history so far with ``"stopped_at"``; the same call with a later ``stop_at`` (or none) resumes from there. With a
    constant schedule after warm-up a run stopped at step s has computed exactly what a run to s would.
    """

    config = resolved(config)
    out = Path(out_dir)
    run = check_run(out, config, identity)
    run_file = out / "run.json"
    if is_done(out) and run_file.exists():
        load_weights(model, out / "model")
        return json.loads((out / "history.json").read_text())
    end = config.steps if stop_at is None else min(int(stop_at), config.steps)
    retain_freed_memory()  # each step's activations and gradients reuse the last step's memory (core.memory)

    accelerator = accelerator or Accelerator(
        cpu=not torch.cuda.is_available(), dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])  # heads idle in stage 1
    set_seed(config.seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=pad_collate(pad_token_id(model)))
    if len(loader) == 0:
        raise ConfigError(f"{len(dataset)} examples make no full batch of {config.batch_size}; lower batch_size")
    if accelerator.is_main_process:
        write_json_atomic(run_file, run)
    inference_kernel = attention_kernel(model)  # before the stage switches it: curve points evaluate with it
    restore = stage_settings(model, config)
    optimizer = torch.optim.AdamW(param_groups(model, config), lr=config.lr, **fast_adamw(accelerator.device))
    scheduler = get_scheduler(config.schedule, optimizer, num_warmup_steps=round(config.warmup * config.steps),
                              num_training_steps=config.steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    for module in frozen:
        module.to(accelerator.device).eval().requires_grad_(False)

    ckpt = out / "checkpoint"
    step, history, elapsed = 0, {"steps": [], "loss": {}}, 0.0
    if (ckpt / "trainer_state.json").exists():
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / "trainer_state.json").read_text())
        step, history, elapsed = state["step"], state["history"], state["seconds"]
    resumed_from = step

    def clock() -> float:  # the run's seconds so far, over every session it resumed in; evaluations included
        return elapsed + time.perf_counter() - start

    def training_seconds() -> float:  # the clock less the evaluations (history["seconds"], run_time.json)
        return clock() - history.get("eval_seconds", 0.0)

    def save_checkpoint() -> None:
        accelerator.wait_for_everyone()
        tmp = out / "checkpoint.tmp"
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.save_state(str(tmp))
        if accelerator.is_main_process:
            write_json_atomic(tmp / "trainer_state.json", {"step": step, "history": history, "seconds": clock()})
            shutil.rmtree(ckpt, ignore_errors=True)
            tmp.rename(ckpt)
        accelerator.wait_for_everyone()

    def stamp() -> None:  # this run's line in the model card (config.tdlib_card["training"]), one per run
        unwrapped = accelerator.unwrap_model(model)
        card = dict(getattr(unwrapped.config, "tdlib_card", None) or {})
        earlier = [s for s in card.get("training", []) if s.get("run") != out.name]
        card["training"] = [*earlier, {"stage": desc.split()[0], "run": out.name, "steps": step,
                                       "batch_size": config.batch_size, "lr": config.lr, "schedule": config.schedule,
                                       "precision": config.precision}]
        unwrapped.config.tdlib_card = card

    def keep() -> None:
        kept = out / "at" / str(step)
        if step in keep_at and accelerator.is_main_process and not (kept / "config.json").is_file():
            stamp()
            save_model_atomic(accelerator.unwrap_model(model), kept)
            # the run's training time to this step over every session it resumed in (what run_seconds reads)
            write_json_atomic(kept / RUN_TIME, {"step": step, "seconds": training_seconds()})

    def take_point() -> None:
        keep()
        if evaluate is None or step not in evaluate_at or any(p["step"] == step for p in history.get("curve", [])):
            return
        t0 = time.perf_counter()
        if accelerator.is_main_process:
            with torch.no_grad(), using_attention(accelerator.unwrap_model(model), inference_kernel):
                point = evaluate(accelerator.unwrap_model(model))
            history.setdefault("curve", []).append({"step": step, **point})
        model.train()
        accelerator.wait_for_everyone()
        history["eval_seconds"] = history.get("eval_seconds", 0.0) + time.perf_counter() - t0

    start = time.perf_counter()
    take_point()
    model.train()
    bar = tqdm(total=end, initial=step, desc=desc, disable=not (progress and accelerator.is_main_process))
    try:
        while step < end:
            epoch, skip = divmod(step, len(loader))
            loader.set_epoch(epoch)
            batches = accelerator.skip_first_batches(loader, skip) if skip else loader
            for batch in batches:
                torch.manual_seed(step_seed(config.seed, step))
                with autocast(config.precision, accelerator.device):  # matmuls in bf16; losses stay fp32
                    losses = loss_fn(model, batch)
                accelerator.backward(losses["loss"])
                if config.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                step += 1
                values = {k: accelerator.reduce(v.detach().float(), "mean").item() for k, v in losses.items()}
                history["steps"].append(step)
                for k, v in values.items():
                    history["loss"].setdefault(k, []).append(v)
                bar.update(1)
                bar.set_postfix(loss=f"{values['loss']:.4f}")
                take_point()
                if config.checkpoint_every and step % config.checkpoint_every == 0 and step < end:
                    save_checkpoint()
                if step >= end:
                    break
    except KeyboardInterrupt:
        restore()
        save_checkpoint()
        bar.close()
        raise TrainingInterrupted(step, out) from None
    bar.close()
    restore()
    if step < config.steps:  # stopped at stop_at: the run continues from its checkpoint
        if step > resumed_from or not (ckpt / "trainer_state.json").exists():
            save_checkpoint()
        accelerator.unwrap_model(model).eval()
        return {**history, "stopped_at": step, "seconds": clock()}
    history.update({"seconds": training_seconds(),
                    "resumed_from": resumed_from,
                    "num_processes": accelerator.num_processes, "device": str(accelerator.device),
                    "precision": config.precision, "attention": config.attention})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        stamp()
        save_model_atomic(accelerator.unwrap_model(model), out / "model")
        write_json_atomic(out / "history.json", history)
        shutil.rmtree(ckpt, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.unwrap_model(model).eval()
    return history


def stage_settings(model: nn.Module, config: TrainConfig) -> Callable[[], None]:
    """Apply the stage's ``dropout``, ``train_word_embeddings`` and ``attention`` to ``model``; returns the undo.

    Why per stage, not in the saved config: they are training choices (a short distillation budget has no
    use for dropout's regularisation, the word embeddings are not part of the compressed encoder, and the
    attention kernel that trains fastest is not the one that infers fastest), so the saved model stays the
    architecture it was.
    """
    undo: list[Callable[[], None]] = []
    kernel = contextlib.ExitStack()  # the attention switch is using_attention's, held open for the stage
    kernel.enter_context(using_attention(model, resolve_attention(config.attention, next(model.parameters()).device)))
    undo.append(kernel.close)
    if not config.dropout:
        for module in model.modules():
            if isinstance(module, nn.Dropout) and module.p:
                undo.append(lambda m=module, p=module.p: setattr(m, "p", p))
                module.p = 0.0
    if not config.train_word_embeddings:
        for name, param in model.named_parameters():
            if name.endswith("word_embeddings.weight") and param.requires_grad:
                undo.append(lambda p=param: p.requires_grad_(True))
                param.requires_grad_(False)

    def restore() -> None:
        while undo:
            undo.pop()()

    return restore


def attention_kernel(model: nn.Module) -> str | None:
    """The attention kernel a transformers model runs now (None: not a model whose kernel can be switched)."""
    if not hasattr(model, "set_attn_implementation"):
        return None
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


@contextlib.contextmanager
def using_attention(model: nn.Module, kernel: str | None):
    """Run ``model`` with attention ``kernel`` inside the block (None: as it is). Curve points taken during a stage
    evaluate with the model's inference kernel, so the last point equals the final evaluation of the saved model."""
    current = attention_kernel(model)
    if kernel is None or current is None or current == kernel:
        yield model
        return
    model.set_attn_implementation(kernel)
    try:
        yield model
    finally:
        model.set_attn_implementation(current)


def fast_adamw(device: torch.device) -> dict:
    """AdamW's multi-tensor (``foreach``) implementation: a few vectorised ops over all parameters instead of
    a Python loop of small elementwise ops; the same algorithm. Not ``fused``: torch's fused kernel updates
    parameters without bumping their version counters, and the eval caches of :mod:`tdlib.core.layers` key on
    those counters (a stale cache would silently serve the pre-training weights)."""
    return {"foreach": True}


def is_main_process() -> bool:
    """True in a single process and in rank 0 of ``accelerate launch``: who writes shared files."""

    return PartialState().is_main_process


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW's groups: weight decay off for biases and LayerNorms; with ``config.head_lr``, the task head's
    parameters (:func:`tdlib.core.heads.head_names`) at that lr. Groups left empty are dropped. The scheduler scales
    each group's own lr, so the head keeps its ratio to the encoder through warm-up and decay."""

    head = head_names(model) if config.head_lr is not None else set()
    groups = []
    for is_head in (False, True):
        for no_decay in (False, True):
            params = [p for n, p in model.named_parameters()
                      if p.requires_grad and (n in head) == is_head and _no_decay(n) == no_decay]
            if params:
                groups.append({"params": params, "weight_decay": 0.0 if no_decay else config.weight_decay,
                               **({"lr": config.head_lr} if is_head else {})})
    return groups


def _no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name



