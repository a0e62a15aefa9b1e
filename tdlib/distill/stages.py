"""Knowledge-distillation losses of the reference recipe (../shared/PAPER.md), teacher and student alike.

Intermediate distillation matches the **last layer's** pre-softmax attention scores and hidden
states (MSE); prediction distillation matches logits by soft cross-entropy at temperature T
(STS-B: MSE to the gold score). The scores are read with forward hooks on the last layer's query
and key maps (:class:`LastLayerTaps`), so the same code serves a dense teacher and a compressed
student (whose maps are ``BankLinear``), and no attention implementation needs patching.
Masked positions are zeroed in the scores of both models, as the reference code does, so padding
never contributes to the loss.

The stages of the recipe are functions over :func:`tdlib.distill.loop.train` (one ``accelerate`` loop):
:func:`finetune` (teacher per task), :func:`general_distill` (pre-trained teacher, corpus),
:func:`task_distill` (fine-tuned teacher; stage 1 intermediate losses at a constant lr, stage 2
prediction distillation with 10% warm-up), and :func:`evaluate` on a GLUE dev set.
A narrower student (the equal-budget baseline of :mod:`tdlib.core.baseline`) is compared against the
teacher's hidden states projected onto its width, by the projection saved with it.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tdlib.core.errors import ConfigError, check_choice
from tdlib.core.heads import copy_head
from tdlib.core.modeling import compression_spec
from tdlib.core.modeling_tdlib import apply_structure
from tdlib.data.glue import compute_metrics, get_task
from tdlib.distill.forward import (
    CompiledTeacher,
    LastLayerTaps,
    _unwrap,
    attention_scores,
    hidden_projection,
    inputs,
    predict,
)
from tdlib.distill.loop import TrainConfig, train
from tdlib.distill.losses import OBJECTIVES, intermediate_loss, objective_loss, prediction_loss, soft_cross_entropy


def distillation_step(student: nn.Module, teacher: nn.Module, batch: dict,
                      objective: str = "last_layer") -> dict[str, torch.Tensor]:
    """One intermediate-distillation forward: both models on ``batch``, the recipe's loss on the last layer
    (or the ``objective`` of :func:`objective_loss`)."""
    batch = inputs(batch)
    if isinstance(teacher, CompiledTeacher):
        t_scores, t_hidden = teacher.targets(batch)
        return _student_loss(student, batch, t_scores, t_hidden, objective)
    mask = batch.get("attention_mask")
    with torch.no_grad(), LastLayerTaps(teacher) as t_taps:
        t_out = teacher(**batch, output_hidden_states=True)
        t_scores = t_taps.scores(mask)
    return _student_loss(student, batch, t_scores, list(t_out.hidden_states[1:]), objective)


def cached_distillation_step(student: nn.Module, cache, batch: dict,
                             objective: str = "last_layer") -> dict[str, torch.Tensor]:
    """:func:`distillation_step` with the teacher's targets read from a
    :class:`tdlib.distill.teacher_cache.TeacherCache` (rows ``batch['idx']``) instead of a teacher forward."""
    mask = batch.get("attention_mask")
    device = batch["input_ids"].device
    t = {k: v.to(device) for k, v in cache.targets(batch["idx"]).items()}
    t_scores = attention_scores(t["q"], t["k"], _unwrap(student).config.num_attention_heads, mask)
    if objective != "last_layer" and "hs" not in t:
        raise ConfigError(f"objective {objective!r} needs every layer's teacher states; build the teacher cache "
                          "with all_layers=True")
    hidden = [*t["hs"].unbind(1), t["h"]] if "hs" in t else [t["h"]]
    return _student_loss(student, inputs(batch), t_scores, hidden, objective)


def _student_loss(student: nn.Module, batch: dict, t_scores: torch.Tensor, t_hidden: list[torch.Tensor],
                  objective: str = "last_layer") -> dict:
    check_choice("objective", objective, OBJECTIVES)
    with LastLayerTaps(student) as s_taps:
        s_out = student(**batch, output_hidden_states=True)
        s_scores = s_taps.scores(batch.get("attention_mask"))
    proj = hidden_projection(_unwrap(student))
    if proj is not None:
        t_hidden = [h @ proj.to(h) for h in t_hidden]
    base = intermediate_loss(s_scores, t_scores, s_out.hidden_states[-1], t_hidden[-1])
    return objective_loss(objective, s_out.hidden_states, t_hidden, batch.get("attention_mask"), base)


def prediction_step(student: nn.Module, teacher: nn.Module, batch: dict, regression: bool,
                    temperature: float = 1.0, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Stage-2 forward: soft cross-entropy to the teacher's logits (regression: MSE to the gold score).

    ``targets`` (the teacher's logits on every training row,
    :func:`tdlib.distill.teacher_cache.cached_teacher_logits`) are
    read at the batch's ``idx`` instead of running the teacher."""
    x = inputs(batch)
    logits = student(**x).logits
    if regression:
        return {"loss": prediction_loss(logits, None, batch["labels"], True)}
    if targets is not None:
        if "idx" not in batch:
            raise ConfigError("cached teacher logits need the batch's row numbers: give the dataset an 'idx' "
                              "column (tdlib.studies.runs.Data does)")
        t_logits = targets[batch["idx"].cpu()].to(logits.device)
    else:
        with torch.no_grad():
            t_logits = teacher(**x).logits
    return {"loss": prediction_loss(logits, t_logits, batch["labels"], False, temperature)}



def check_vocab(student: nn.Module, teacher: nn.Module) -> None:
    """Teacher and student read the same token ids, or distillation compares different inputs."""
    vs, vt = student.config.vocab_size, teacher.config.vocab_size
    if vs != vt:
        raise ConfigError(f"student vocabulary ({vs} tokens) differs from the teacher's ({vt}); distil a student "
                          "built from this teacher (tdlib.compress or tdlib.core.baseline.shrink)")


# -- the stages -------------------------------------------------------------------------------------
def finetune(model: nn.Module, train_data, out_dir: str | Path, config: TrainConfig, *, identity: dict | None = None,
             progress: bool = True, evaluate=None, evaluate_at=()) -> dict:
    """Fine-tune a model with a classification/regression head on a task's (encoded) training set.

    ``evaluate`` and ``evaluate_at`` record a dev curve (:func:`tdlib.distill.loop.train`): whether the teacher had
    converged, or more epochs would still have paid, is read from it, not guessed."""
    return train(model, lambda m, b: {"loss": m(**inputs(b), labels=b["labels"]).loss}, train_data, config,
                 out_dir, identity=identity, desc=f"finetune {Path(out_dir).name}", progress=progress,
                 evaluate=evaluate, evaluate_at=evaluate_at)


def general_distill(student: nn.Module, teacher: nn.Module, corpus, out_dir: str | Path, config: TrainConfig, *,
                    identity: dict | None = None, progress: bool = True, cache=None, objective: str = "last_layer",
                    evaluate=None, evaluate_at=(), keep_at=(), stop_at: int | None = None) -> dict:
    """General distillation: intermediate losses against the pre-trained teacher on a packed corpus.

    With ``cache`` (a :class:`tdlib.distill.teacher_cache.TeacherCache` of ``corpus``, which then needs an ``idx``
    column) the teacher's targets are read from it instead of recomputed every step. ``objective``: the
    paper's ``"last_layer"`` loss or ``"all_layers_cos"`` (:func:`objective_loss`). ``evaluate`` and
    ``evaluate_at`` record a recovery curve (:func:`tdlib.distill.loop.train`; :class:`tdlib.distill.proxies.Proxies`);
    ``keep_at`` and ``stop_at`` keep the model at given steps and stop early, resumably (a scaling study's budgets).
    """
    check_vocab(student, teacher)
    check_choice("objective", objective, OBJECTIVES)
    if cache is None:
        targets = CompiledTeacher.of(teacher) if config.compile_teacher else teacher
        loss, frozen = (lambda m, b: distillation_step(m, targets, b, objective)), [teacher]
    else:
        loss, frozen = (lambda m, b: cached_distillation_step(m, cache, b, objective)), []
    return train(student, loss, corpus, config, out_dir, identity=identity, frozen=frozen,
                 desc=f"general {Path(out_dir).name}", progress=progress, evaluate=evaluate,
                 evaluate_at=evaluate_at, keep_at=keep_at, stop_at=stop_at)


def task_distill(student: nn.Module, teacher: nn.Module, train_data, out_dir: str | Path, stage1: TrainConfig,
                 stage2: TrainConfig, *, regression: bool, identity: dict | None = None, progress: bool = True,
                 evaluate=None, evaluate_at=(), targets: torch.Tensor | None = None,
                 objective: str = "last_layer") -> dict:
    """Two-stage task distillation; stage 1's model is stage 2's start. Returns both histories.

    ``objective`` is stage 1's loss against the fine-tuned teacher (:func:`objective_loss`): the paper's
    ``"last_layer"``, or ``"all_layers_cos"``, which gives every student layer a target on the task's own data.

    ``evaluate`` and ``evaluate_at`` record a dev curve over stage 2 (:func:`tdlib.distill.loop.train`; step 0 is
    the model stage 1 left): whether more task distillation would still pay is read from it. ``targets``: the
    teacher's logits on ``train_data``'s rows, read by stage 2 instead of a teacher forward
    (:func:`prediction_step`)."""
    check_vocab(student, teacher)
    check_choice("objective", objective, OBJECTIVES)
    out = Path(out_dir)
    h1 = train(student, lambda m, b: distillation_step(m, teacher, b, objective), train_data, stage1, out / "stage1",
               identity=identity, frozen=[teacher], desc=f"stage1 {out.name}", progress=progress)
    h2 = train(student, lambda m, b: prediction_step(m, teacher, b, regression, targets=targets), train_data,
               stage2, out / "stage2",
               identity={**(identity or {}), "after": "stage1"}, frozen=[teacher], desc=f"stage2 {out.name}",
               progress=progress, evaluate=evaluate, evaluate_at=evaluate_at)
    return {"stage1": h1, "stage2": h2}


def task_model(encoder: nn.Module, teacher: nn.Module) -> nn.Module:
    """A task student: ``encoder`` (compressed or narrower, after general distillation) + the teacher's head.

    The model class, label count and problem type come from the fine-tuned ``teacher``; its pooler and
    classifier are copied (projected onto a narrower student's width), so stage 2 starts from a
    head that already reads the hidden states the encoder was distilled to produce.
    """
    if not hasattr(teacher, "classifier"):
        raise ConfigError(f"the task teacher ({type(teacher).__name__}) has no classification head; pass a "
                          "fine-tuned teacher (python -m tdlib finetune ...)")
    cfg = copy.deepcopy(encoder.config)
    for key in ("num_labels", "problem_type", "id2label", "label2id"):
        setattr(cfg, key, getattr(teacher.config, key))
    cfg.architectures = [type(teacher).__name__]
    model = type(teacher)(cfg)
    spec = compression_spec(encoder)
    if spec is not None:
        apply_structure(model, spec)
    model.base_model.load_state_dict(encoder.state_dict())
    proj = hidden_projection(encoder)
    B = proj if proj is not None else torch.eye(teacher.config.hidden_size)  # the student's basis of hidden states
    copy_head(teacher, model, B)
    if proj is not None:
        model.tdlib_extra = {"hidden_projection": proj}
    return model.eval()



def fidelity(student_logits: np.ndarray, teacher_logits: np.ndarray, regression: bool) -> dict[str, float]:
    """How closely a student follows its teacher on the same inputs (finer than a dev metric that saturates).

    Classification: ``agreement`` (fraction of equal predicted classes) and ``soft_ce`` (cross-entropy of the
    student's distribution against the teacher's, the stage-2 loss); regression: ``mse_to_teacher``.
    """
    s, t = torch.as_tensor(student_logits).float(), torch.as_tensor(teacher_logits).float()
    if regression:
        return {"mse_to_teacher": float(F.mse_loss(s.reshape(-1), t.reshape(-1)))}
    return {"agreement": float((s.argmax(-1) == t.argmax(-1)).float().mean()),
            "soft_ce": float(soft_cross_entropy(s, t))}


def evaluate(model: nn.Module, task: str, data, batch_size: int = 64, progress: bool = True) -> dict[str, float]:
    """The task's metrics of ``model`` on an encoded dev set (with ``labels``)."""
    get_task(task)
    logits = predict(model, data, batch_size, progress)
    return compute_metrics(task, logits, np.asarray(data["labels"]))
