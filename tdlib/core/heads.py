"""Sequence-classification heads: the paper's [CLS] pooler, mean pooling over tokens, or a cosine pair head.

BERT's own head (``BertForSequenceClassification``) reads the [CLS] token: pooler dense + tanh, then the
classifier. That is the paper's head and the default (``pooling="cls"``).

``pooling="mean"`` reads the attention-masked mean of the last layer's hidden states through the same
pooler and classifier. Why it exists: the cpu profile's teacher, all-MiniLM-L6-v2, is a
sentence-transformers model trained to be read by mean pooling, and its [CLS] state hardly varies
across sentences below the last layer. A compressed student far from its teacher (relative weight error
0.81 at IV-36-192) starts with attention maps that route almost nothing into [CLS], so a [CLS] head sees
the same vector for every input and task distillation stays at the majority class; a mean-pooled head
reads the hidden states that intermediate distillation matches token by token. The head has exactly
the parameters of BERT's, so heads copy between teacher and student unchanged.

``pooling="cosine"`` scores a sentence pair (STS-B) the way all-MiniLM-L6-v2 is used: each sentence is
encoded on its own and the score is ``a * cos(u, v) + b`` of their mean-pooled embeddings, with ``a = 5``
(STS-B's label range) and ``b = 0`` at init, so an untrained head already ranks pairs like the teacher's
zero-shot embeddings do. Why: with a cross-encoder head every compressed student stayed below Spearman 10 on
STS-B after up to 160 stage-2 steps (notebook 09, ``results/09_task_budget/84f8c6a8cd34.json``), although the
same encoders' embeddings rank its pairs at 62-74 zero-shot. The pair travels as one sequence,
``[CLS] a [SEP] [CLS] b [SEP]`` with token types 0 and 1 (:func:`tdlib.data.glue.encode` with ``separate=True``);
the head gives the encoder a block-diagonal attention mask, per-sentence positions and token type 0, which
is exactly two single-sentence forwards in one batch, so training, batching and the distillation losses,
which read hidden states token by token, are unchanged. The cosine and its scale run in fp32 (under bf16
autocast a score near 5 would step by 0.03).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertForSequenceClassification
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput

from tdlib.core.errors import ConfigError, check_choice

POOLINGS = ("cls", "mean", "cosine")
COSINE_SCALE = 5.0  # STS-B labels run from 0 to 5


class BertMeanPooledForSequenceClassification(BertForSequenceClassification):
    """``BertForSequenceClassification`` whose pooler reads the masked token mean instead of [CLS]."""

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, **kwargs) -> SequenceClassifierOutput:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        output_hidden_states=output_hidden_states, **kwargs)
        hidden = out.last_hidden_state
        mean = mean_pool(hidden, torch.ones(hidden.shape[:2], device=hidden.device) if attention_mask is None
                           else attention_mask)
        pooled = self.bert.pooler.activation(self.bert.pooler.dense(mean))
        logits = self.classifier(self.dropout(pooled))
        return _output(logits, labels, out, self.num_labels)


def _output(logits: torch.Tensor, labels: torch.Tensor | None, out, num_labels: int) -> SequenceClassifierOutput:
    loss = None
    if labels is not None:
        loss = (F.mse_loss(logits.squeeze(-1), labels.float().reshape(-1)) if num_labels == 1
                else F.cross_entropy(logits, labels.reshape(-1)))
    return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                    attentions=out.attentions)


def second_start(token_type_ids: torch.Tensor) -> torch.Tensor:
    """(batch, 1) index of each row's first token of sentence b (token type 1); 0 for a row without one."""
    return (token_type_ids == 1).int().argmax(1, keepdim=True)


def pair_inputs(token_type_ids: torch.Tensor, attention_mask: torch.Tensor, eager: bool, dtype: torch.dtype,
                start_b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(4D attention mask, position ids) that make one ``[CLS] a [SEP] [CLS] b [SEP]`` row two separate forwards.

    A token attends only to real tokens of its own sentence (token type 0 or 1); sentence b's positions restart
    at 0. The mask is boolean for SDPA and additive for eager attention. ``start_b``: :func:`second_start`, when
    the caller has it already.
    """
    seg = token_type_ids.long()
    keep = (seg[:, :, None] == seg[:, None, :]) & attention_mask.bool()[:, None, :]
    idx = torch.arange(seg.shape[1], device=seg.device).expand_as(seg)
    start_b = second_start(seg) if start_b is None else start_b
    positions = torch.where(seg.bool(), idx - start_b, idx)
    mask = keep[:, None]
    if eager:
        mask = torch.zeros(mask.shape, dtype=dtype, device=seg.device).masked_fill(~mask, torch.finfo(dtype).min)
    return mask, positions


class BertCosinePairForSequenceClassification(BertForSequenceClassification):
    """A sentence-pair regression head: ``a * cos(u, v) + b`` of the two sentences' mean-pooled embeddings.

    ``classifier`` is a 1 -> 1 linear map holding ``a`` and ``b``; BERT's pooler is dropped (nothing reads it,
    and unused parameters break distributed data parallel).
    """

    def __init__(self, config) -> None:
        if config.num_labels != 1:
            raise ConfigError(f"pooling='cosine' scores sentence pairs with one number (regression, e.g. STS-B); "
                              f"got num_labels={config.num_labels}; use pooling='mean' for classification")
        super().__init__(config)
        self.bert.pooler = None
        self.classifier = nn.Linear(1, 1)
        self._init_weights(self.classifier)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is getattr(self, "classifier", None):  # also where from_pretrained fills a missing head
            init.constant_(module.weight, COSINE_SCALE)
            init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, **kwargs) -> SequenceClassifierOutput:
        if token_type_ids is None or not bool((token_type_ids == 1).any(1).all()):
            raise ConfigError("pooling='cosine' scores sentence pairs: every row needs a second sentence "
                              "(token_type_ids 1), as STS-B's tokenised pairs have; use pooling='mean' for "
                              "single-sentence tasks")
        if attention_mask is None:
            attention_mask = torch.ones_like(token_type_ids)
        start_b = second_start(token_type_ids)
        if input_ids is not None:
            if not bool((input_ids.gather(1, start_b) == input_ids[:, :1]).all()):
                raise ConfigError("pooling='cosine' reads each sentence with its own [CLS]: encode pairs as "
                                  "[CLS] a [SEP] [CLS] b [SEP] (tdlib.data.glue.encode(..., separate=True)), not as "
                                  "one cross-encoder sequence")
        eager = self.config._attn_implementation == "eager"
        mask4d, positions = pair_inputs(token_type_ids, attention_mask, eager, self.dtype, start_b)
        out = self.bert(input_ids=input_ids, attention_mask=mask4d, position_ids=positions,
                        token_type_ids=torch.zeros_like(token_type_ids), output_hidden_states=output_hidden_states,
                        **kwargs)
        hidden, real = out.last_hidden_state.float(), attention_mask.bool()
        u = mean_pool(hidden, real & (token_type_ids == 0))
        v = mean_pool(hidden, real & (token_type_ids == 1))
        # the score in fp32 even under bf16 autocast: bf16 would step by 0.03 on STS-B's 0-5 scale (ties in ranks)
        with torch.autocast(hidden.device.type, enabled=False):
            cos = F.cosine_similarity(u, v, dim=-1).unsqueeze(-1)
            logits = self.classifier(cos.to(self.classifier.weight.dtype))
        return _output(logits, labels, out, self.num_labels)


HEADS = {cls.__name__: cls for cls in (BertMeanPooledForSequenceClassification,
                                       BertCosinePairForSequenceClassification)}


def head_names(model: nn.Module) -> set[str]:
    """The names of the parameters a task head adds to its encoder: everything outside the base model (the
    classifier) and the base model's pooler, which only a head reads. ``TrainConfig.head_lr`` trains these at
    their own learning rate."""
    base = getattr(model, "base_model_prefix", "")
    if not base or not hasattr(model, base):
        raise ConfigError(f"{type(model).__name__} has no base model to tell its head from; head_lr needs a "
                          "transformers model with a task head (e.g. BertForSequenceClassification)")
    return {n for n, _ in model.named_parameters() if not n.startswith(f"{base}.") or n.startswith(f"{base}.pooler.")}



def pooling_of(model: nn.Module | type | None) -> str:
    """The ``pooling`` a model's head (or head class; None: transformers' own) was built with: what its data must
    be encoded for."""
    cls = model if isinstance(model, type) or model is None else type(model)
    if cls is not None and issubclass(cls, BertCosinePairForSequenceClassification):
        return "cosine"
    return "mean" if cls is not None and issubclass(cls, BertMeanPooledForSequenceClassification) else "cls"


def head_class(pooling: str, model_type: str) -> type | None:
    """The class for ``pooling`` (None: transformers' own auto class, i.e. the [CLS] head)."""
    check_choice("pooling", pooling, POOLINGS)
    if pooling == "cls":
        return None
    if model_type != "bert":
        raise ConfigError(f"pooling={pooling!r} is implemented for BERT models (model_type 'bert'), not "
                          f"{model_type!r}; use pooling='cls'")
    return BertMeanPooledForSequenceClassification if pooling == "mean" else BertCosinePairForSequenceClassification


@torch.no_grad()
def copy_head(teacher: nn.Module, student: nn.Module, basis: torch.Tensor) -> None:
    """Copy ``teacher``'s pooler and classifier into ``student``, whose hidden states are ``h @ basis``.

    ``basis`` (H x h) is the student's basis of the teacher's hidden space (the identity for a student of the
    teacher's width). The cosine head's scale and bias read a cosine, not hidden states: copied as they are.
    """
    tb, sb = teacher.base_model, student.base_model
    if isinstance(teacher, BertCosinePairForSequenceClassification):
        student.classifier.load_state_dict(teacher.classifier.state_dict())
        return
    if getattr(tb, "pooler", None) is not None and getattr(sb, "pooler", None) is not None:
        sb.pooler.dense.weight.copy_(basis.T @ tb.pooler.dense.weight @ basis)
        sb.pooler.dense.bias.copy_(tb.pooler.dense.bias @ basis)
    student.classifier.weight.copy_(teacher.classifier.weight @ basis)
    student.classifier.bias.copy_(teacher.classifier.bias)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The attention-masked mean over tokens (sentence-transformers' pooling)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
