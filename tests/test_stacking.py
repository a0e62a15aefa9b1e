import pytest
import torch
from conftest import tiny_config
from torch import nn
from transformers import BertModel

from tdlib import UnsupportedModelError, stack_weights, unstack_weights
from tdlib.core.modeling_tdlib import slots
from tdlib.core.stacking import geometry, model_slots


@pytest.mark.parametrize("ops,per_layer", [("san", 4), ("ffn", 8), ("san_ffn", 12)])
def test_tensor_size_follows_ops(tiny_bert, ops, per_layer):
    w = stack_weights(tiny_bert, ops)
    assert w.shape == (per_layer * 2, 32, 32)


def test_minilm_tensor_is_72x384x384(minilm):
    assert stack_weights(minilm).shape == (72, 384, 384)


def test_orientation_is_y_equals_xW(tiny_bert):
    """Every slot's matrix maps the layer input exactly as its module does (bias removed)."""
    w = stack_weights(tiny_bert)
    layers = tiny_bert.encoder.layer
    x = torch.randn(5, 32)
    for s in model_slots(tiny_bert):
        lin = layers[s.layer].get_submodule(s.path)
        if s.role == "ffn_down":  # input block s.block of the 128-wide input
            xin = torch.zeros(5, 128)
            xin[:, s.block * 32:(s.block + 1) * 32] = x
            expect = lin(xin) - lin.bias
        else:
            out = lin(x) - lin.bias
            expect = out[:, s.block * 32:(s.block + 1) * 32] if s.role == "ffn_up" else out
        torch.testing.assert_close(x @ w[s.index], expect, rtol=1e-5, atol=1e-5)


def test_slot_order_is_layer_major_q_k_v_o_up_down():
    roles = [(s.role, s.block) for s in slots(2, 4)][:12]
    assert roles == [("query", 0), ("key", 0), ("value", 0), ("attn_out", 0)] + [("ffn_up", b) for b in range(4)] + [
        ("ffn_down", b) for b in range(4)]
    assert [s.layer for s in slots(2, 4)] == [0] * 12 + [1] * 12


@pytest.mark.parametrize("ops", ["san", "ffn", "san_ffn"])
def test_round_trip_is_exact(tiny_bert, ops):
    w = stack_weights(tiny_bert, ops)
    torch.manual_seed(3)
    new = torch.randn_like(w)
    unstack_weights(tiny_bert, new, ops)
    assert torch.equal(stack_weights(tiny_bert, ops), new)
    unstack_weights(tiny_bert, w, ops)
    assert torch.equal(stack_weights(tiny_bert, ops), w)


def test_ffn_width_not_multiple_of_hidden_is_rejected():
    model = BertModel(tiny_config(intermediate_size=100))
    with pytest.raises(UnsupportedModelError, match="not a multiple of the hidden size"):
        geometry(model)
    assert stack_weights(model, "san").shape == (8, 32, 32)  # attention-only still works
    with pytest.raises(UnsupportedModelError, match="use ops=.san."):
        stack_weights(model, "ffn")


def test_non_bert_model_is_rejected():
    with pytest.raises(UnsupportedModelError, match="no BERT-style encoder"):
        stack_weights(nn.Sequential(nn.Linear(4, 4)))


def test_wrong_tensor_shape_is_rejected(tiny_bert):
    with pytest.raises(UnsupportedModelError, match="does not match"):
        unstack_weights(tiny_bert, torch.zeros(3, 32, 32))


def test_unknown_ops_is_rejected(tiny_bert):
    from tdlib import ConfigError

    with pytest.raises(ConfigError, match="unknown ops 'mlp'"):
        stack_weights(tiny_bert, "mlp")
