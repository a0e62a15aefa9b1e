import pytest
import torch
from conftest import tiny_config
from transformers import BertModel

from tdlib.core.baseline import encoder_weights, ffn_for_budget, shrink
from tdlib.core.errors import ConfigError
from tdlib.distill.stages import distillation_step, task_model


def test_full_size_shrink_is_the_teacher(tiny_bert, batch):
    same = shrink(tiny_bert, 2, 32, 128)
    torch.testing.assert_close(same(**batch).last_hidden_state, tiny_bert(**batch).last_hidden_state)
    assert not getattr(same, "tdlib_extra", None)


def test_budget_matching_and_narrow_projection(tiny_bert, batch):
    budget = 3000
    ffn = ffn_for_budget(budget, 1, 16)
    narrow = shrink(tiny_bert, 1, 16, ffn)
    assert abs(encoder_weights(narrow) - budget) <= 16 and narrow.config.tdlib_baseline["layers_kept"] == [0]
    P = narrow.tdlib_extra["hidden_projection"]
    torch.testing.assert_close(P.T @ P, torch.eye(16), atol=1e-5, rtol=0)
    losses = distillation_step(narrow, tiny_bert, batch)  # teacher hidden states projected onto 16 dims
    assert torch.isfinite(losses["loss"]) and narrow(**batch).last_hidden_state.shape[-1] == 16


def test_bad_baselines_get_one_clear_error(tiny_bert):
    with pytest.raises(ConfigError, match="cannot hold"):
        ffn_for_budget(100, 1, 32)
    with pytest.raises(ConfigError, match="multiple of the 4 heads"):
        shrink(tiny_bert, 1, 18, 10)
    with pytest.raises(ConfigError, match="num_layers must be in 1..2"):
        shrink(tiny_bert, 3)


def test_task_model_takes_the_teacher_head(tiny_classifier, batch):
    torch.manual_seed(1)
    encoder = shrink(BertModel(tiny_config()).eval(), 1, 16, 20)
    student = task_model(encoder, tiny_classifier)
    P = encoder.tdlib_extra["hidden_projection"]
    torch.testing.assert_close(student.classifier.weight, tiny_classifier.classifier.weight @ P)
    assert student.config.num_labels == 3 and student(**batch).logits.shape == (3, 3)
    with pytest.raises(ConfigError, match="no classification head"):
        task_model(encoder, encoder)


def test_the_teacher_as_its_own_student_is_the_teacher(tiny_classifier, batch):
    """task_model's wiring (encoder + copied head) loses nothing: a full-size copy predicts like the teacher."""
    student = task_model(tiny_classifier.bert, tiny_classifier)
    torch.testing.assert_close(student(**batch).logits, tiny_classifier(**batch).logits)
