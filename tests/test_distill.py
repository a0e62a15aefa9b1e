import pytest
import torch
from conftest import tiny_config
from transformers import BertModel

from tdlib import compress
from tdlib.distill.forward import CompiledTeacher, LastLayerTaps, inputs
from tdlib.distill.loop import TrainConfig, result_fields
from tdlib.distill.losses import prediction_loss, soft_cross_entropy
from tdlib.distill.stages import distillation_step


def test_tapped_scores_are_the_attention_logits(batch):
    torch.manual_seed(0)
    config = tiny_config()
    config._attn_implementation = "eager"  # attention probabilities are returned by the eager path
    model = BertModel(config).eval()
    with torch.no_grad(), LastLayerTaps(model) as taps:
        out = model(**batch, output_attentions=True)
    mask = batch["attention_mask"]
    raw = taps.scores()  # unmasked logits
    additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(raw.dtype).min
    probs = torch.softmax(raw + additive, dim=-1)
    torch.testing.assert_close(probs, out.attentions[-1], rtol=1e-4, atol=1e-5)
    masked = taps.scores(mask)
    assert masked[1, :, 7:, :].abs().sum() == 0 and masked[1, :, :, 7:].abs().sum() == 0
    assert torch.equal(masked[0], raw[0])  # no padding in sequence 0


def test_scores_need_a_forward():
    with pytest.raises(RuntimeError, match="run the model's forward"):
        LastLayerTaps(BertModel(tiny_config())).scores()


def test_intermediate_loss_vanishes_at_full_rank_and_trains_the_bank(tiny_bert, batch):
    exact = compress(tiny_bert, 24, 32).eval()
    assert distillation_step(exact, tiny_bert, batch)["loss"] < 1e-8
    student = compress(tiny_bert, 3, 8).train()
    losses = distillation_step(student, tiny_bert, batch)
    assert losses["loss"] > 1e-4 and losses["att"] > 0 and losses["rep"] > 0
    losses["loss"].backward()
    assert student.encoder.tdlib_bank.C.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_bert.parameters())  # the teacher is never trained


def test_prediction_losses():
    t = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    s = torch.tensor([[0.1, 0.2, 0.3], [1.0, -1.0, 0.0]])
    entropy = soft_cross_entropy(t, t)
    assert soft_cross_entropy(s, t) > entropy  # Gibbs: the teacher's own distribution is the minimum
    one_hot = torch.tensor([[50.0, 0, 0], [0, 0, 50.0]])
    hard = torch.nn.functional.cross_entropy(s, torch.tensor([0, 2]))
    assert soft_cross_entropy(s, one_hot) == pytest.approx(hard.item(), rel=1e-5)
    mse = prediction_loss(torch.tensor([[1.0], [3.0]]), None, torch.tensor([2.0, 3.0]), regression=True)
    assert mse.item() == pytest.approx(0.5)


def test_prediction_step_and_vocab_check(tiny_classifier, batch):
    from tdlib.core.errors import ConfigError
    from tdlib.distill.stages import check_vocab, prediction_step

    labels = torch.tensor([0, 2, 1])
    out = prediction_step(tiny_classifier, tiny_classifier, {**batch, "labels": labels}, regression=False)
    logits = tiny_classifier(**batch).logits  # against itself: the teacher's entropy
    expected = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(out["loss"], expected)
    with pytest.raises(ConfigError, match="vocabulary"):
        check_vocab(BertModel(tiny_config(vocab_size=99)), tiny_classifier)


def test_every_method_trains_as_a_factor_stack(tiny_bert, batch):
    from tdlib.core.decompose import make
    from tdlib.core.layers import FactorStack
    from tdlib.core.modeling import with_decomposition
    from tdlib.core.stacking import stack_weights

    W = stack_weights(tiny_bert)
    full = with_decomposition(tiny_bert, make("tt", rank1=W.shape[0], rank2=32).fit(W)).eval()
    torch.testing.assert_close(full(**batch).last_hidden_state, tiny_bert(**batch).last_hidden_state,
                               rtol=1e-4, atol=1e-4)
    student = with_decomposition(tiny_bert, make("cp", rank=6).fit(W)).train()
    stack = student.base_model.encoder.tdlib_stack
    assert isinstance(stack, FactorStack) and stack.n_params() == 6 * (W.shape[0] + 2 * 32) + 6
    calls = []
    compose = stack.fit.compose
    stack.fit.compose = lambda f: calls.append(1) or compose(f)
    distillation_step(student, tiny_bert, batch)["loss"].backward()
    assert len(calls) == 1, "the tensor is composed once per forward, not once per map"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in stack.factors)


def test_all_layer_objective_vanishes_for_the_teacher_itself_and_adds_to_the_paper_loss(tiny_bert, batch):
    """Student == teacher: every term is zero; a compressed student: the paper's loss plus non-negative terms."""
    import pytest

    from tdlib import compress
    from tdlib.distill.losses import layer_map
    from tdlib.distill.stages import distillation_step

    assert layer_map(6, 6) == [1, 2, 3, 4, 5, 6] and layer_map(1, 6) == [6] and layer_map(3, 6) == [2, 4, 6]
    tiny_bert.eval()
    same = distillation_step(tiny_bert, tiny_bert, batch, "all_layers_cos")
    assert float(same["loss"]) == pytest.approx(0.0, abs=1e-6)
    student = compress(tiny_bert, 2, 4).eval()
    paper = distillation_step(student, tiny_bert, batch)
    ours = distillation_step(student, tiny_bert, batch, "all_layers_cos")
    assert float(ours["layers"]) > 0 and 0 < float(ours["cos"]) <= 2
    assert float(ours["loss"]) == pytest.approx(float(paper["loss"]) + float(ours["layers"]) + 10 * float(ours["cos"]),
                                                rel=1e-5)


def test_compiled_teacher_gives_the_eager_targets_and_losses(tiny_bert, batch):
    compiled = CompiledTeacher.of(tiny_bert)
    student = compress(tiny_bert, 3, 8).train()
    for objective in ("last_layer", "all_layers_cos"):
        eager = distillation_step(student, tiny_bert, batch, objective)
        fused = distillation_step(student, compiled, batch, objective)
        for key in eager:
            torch.testing.assert_close(fused[key], eager[key], atol=1e-5, rtol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the caller's autocast is the graph's
        scores, hidden = compiled.targets(batch)
    assert len(hidden) == tiny_bert.config.num_hidden_layers and scores.shape[1] == tiny_bert.config.num_attention_heads
    assert not any(p.requires_grad for p in compiled.frozen.parameters())
    assert all(p.requires_grad for p in tiny_bert.parameters())  # the teacher itself is left as it was
    # one graph per teacher while its weights stay as they are; an in-place change builds a new one
    assert CompiledTeacher.of(tiny_bert) is compiled
    with torch.no_grad():
        tiny_bert.encoder.layer[0].output.dense.weight.mul_(2.0)
    again = CompiledTeacher.of(tiny_bert)
    assert again is not compiled
    with LastLayerTaps(tiny_bert) as taps, torch.no_grad():
        hidden = tiny_bert(**inputs(batch), output_hidden_states=True).hidden_states[1:]
    scores, fresh = again.targets(batch)
    torch.testing.assert_close(scores, taps.scores(batch["attention_mask"]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fresh[0], hidden[0], atol=1e-5, rtol=1e-4)


def test_compile_teacher_is_keyed_only_when_set():
    assert "compile_teacher" not in result_fields(TrainConfig(steps=1))
    assert result_fields(TrainConfig(steps=1, compile_teacher=True))["compile_teacher"] is True
