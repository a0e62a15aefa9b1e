"""The mean-pooled head: what it reads, how it saves and loads, and that students inherit it."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config
from transformers import BertForSequenceClassification, DistilBertConfig

from tdlib.distill import task_model
from tdlib.errors import ConfigError
from tdlib.heads import BertMeanPooledForSequenceClassification, head_class
from tdlib.modeling import compress
from tdlib.models import load_model


@pytest.fixture
def mean_head() -> BertMeanPooledForSequenceClassification:
    torch.manual_seed(0)
    return BertMeanPooledForSequenceClassification(tiny_config(num_labels=3)).eval()


def test_reads_the_masked_token_mean(mean_head, batch):
    out = mean_head.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    h, m = out.last_hidden_state, batch["attention_mask"].unsqueeze(-1).float()
    mean = (h * m).sum(1) / m.sum(1)
    expected = mean_head.classifier(torch.tanh(mean_head.bert.pooler.dense(mean)))
    torch.testing.assert_close(mean_head(**batch).logits, expected)


def test_padding_does_not_change_the_logits(mean_head, batch):
    """Row 1 has 7 real tokens: the same row cut to those 7 gives the same logits."""
    full = mean_head(**batch).logits[1]
    short = mean_head(input_ids=batch["input_ids"][1:2, :7], attention_mask=batch["attention_mask"][1:2, :7]).logits
    torch.testing.assert_close(full, short[0], atol=1e-5, rtol=1e-5)


def test_differs_from_the_cls_head_with_the_same_weights(mean_head, batch):
    cls = BertForSequenceClassification(mean_head.config).eval()
    cls.load_state_dict(mean_head.state_dict())
    assert not torch.allclose(cls(**batch).logits, mean_head(**batch).logits)


def test_losses_match_the_task_kind(batch):
    torch.manual_seed(0)
    reg = BertMeanPooledForSequenceClassification(tiny_config(num_labels=1)).eval()
    out = reg(**batch, labels=torch.tensor([0.5, 1.0, 2.0]))
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1),
                                                                      torch.tensor([0.5, 1.0, 2.0])))


def test_load_model_builds_saves_and_reloads_the_head(tiny_teacher_dir, tmp_path, batch):
    model = load_model(tiny_teacher_dir, num_labels=2, pooling="mean").eval()
    assert isinstance(model, BertMeanPooledForSequenceClassification)
    model.save_pretrained(str(tmp_path))
    again = load_model(tmp_path).eval()  # the saved architecture decides, no pooling argument needed
    assert type(again) is BertMeanPooledForSequenceClassification
    torch.testing.assert_close(again(**batch).logits, model(**batch).logits)
    assert type(load_model(tiny_teacher_dir, num_labels=2)) is BertForSequenceClassification


def test_students_inherit_the_head_and_round_trip_compressed(mean_head, batch, tmp_path):
    student = task_model(compress(mean_head.bert, 4, 16, "san_ffn", seed=0), mean_head)
    assert type(student) is BertMeanPooledForSequenceClassification
    student.save_pretrained(str(tmp_path))
    again = load_model(tmp_path)
    assert type(again) is BertMeanPooledForSequenceClassification
    torch.testing.assert_close(again(**batch).logits, student.eval()(**batch).logits)


def test_bad_pooling_and_unsupported_models_are_one_clear_error(tiny_teacher_dir):
    with pytest.raises(ConfigError, match="unknown pooling 'max'"):
        load_model(tiny_teacher_dir, num_labels=2, pooling="max")
    with pytest.raises(ConfigError, match="implemented for BERT models"):
        head_class("mean", DistilBertConfig().model_type)
    assert head_class("cls", "distilbert") is None
