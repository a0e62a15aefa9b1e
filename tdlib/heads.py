"""Sequence-classification heads: the paper's [CLS] pooler, or mean pooling over tokens.

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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import BertForSequenceClassification
from transformers.modeling_outputs import SequenceClassifierOutput

from .errors import ConfigError, check_choice

POOLINGS = ("cls", "mean")


class BertMeanPooledForSequenceClassification(BertForSequenceClassification):
    """``BertForSequenceClassification`` whose pooler reads the masked token mean instead of [CLS]."""

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, **kwargs) -> SequenceClassifierOutput:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        output_hidden_states=output_hidden_states, **kwargs)
        hidden = out.last_hidden_state
        mask = (torch.ones(hidden.shape[:2], device=hidden.device) if attention_mask is None
                else attention_mask).unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        pooled = self.bert.pooler.activation(self.bert.pooler.dense(mean))
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = (F.mse_loss(logits.squeeze(-1), labels.float().reshape(-1)) if self.num_labels == 1
                    else F.cross_entropy(logits, labels.reshape(-1)))
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions)


HEADS = {"BertMeanPooledForSequenceClassification": BertMeanPooledForSequenceClassification}


def head_class(pooling: str, model_type: str) -> type | None:
    """The class for ``pooling`` (None: transformers' own auto class, i.e. the [CLS] head)."""
    check_choice("pooling", pooling, POOLINGS)
    if pooling == "cls":
        return None
    if model_type != "bert":
        raise ConfigError(f"pooling='mean' is implemented for BERT models (model_type 'bert'), not "
                          f"{model_type!r}; use pooling='cls'")
    return BertMeanPooledForSequenceClassification

