"""The training loop: determinism, resume after interrupt, refusing foreign runs, 2 processes."""

import json
import os
import socket
import subprocess
from pathlib import Path

import datasets
import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file
from transformers import BertModel

from tdlib.core.errors import ConfigError
from tdlib.core.modeling import compress
from tdlib.distill.loop import RUN_TIME, TrainConfig, TrainingInterrupted, run_seconds, train
from tdlib.distill.stages import distillation_step
from tdlib.studies.experiments import launch_command


def _data(n=24, t=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (n, t), generator=gen)
    data = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    data.set_format("torch")
    return data


def _pair(dropout=0.0):
    torch.manual_seed(0)
    teacher = BertModel(tiny_config(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)).eval()
    return teacher, compress(teacher, 4, 8)


def _run(out, steps=6, interrupt_at=None, dropout=0.0, **kw):
    teacher, student = _pair(dropout)
    calls = {"n": 0}

    def loss_fn(model, batch):
        calls["n"] += 1
        losses = distillation_step(model, teacher, batch)  # an interrupt mid-step: dropout already drew
        if interrupt_at is not None and calls["n"] == interrupt_at:
            raise KeyboardInterrupt
        return losses

    cfg = TrainConfig(steps=steps, batch_size=8, lr=1e-3, checkpoint_every=kw.pop("checkpoint_every", 0))
    history = train(student, loss_fn, _data(), cfg, out, frozen=[teacher], progress=False, **kw)
    return student, history


def test_same_seed_same_numbers_and_resume_after_interrupt(tmp_path):
    straight, h1 = _run(tmp_path / "a")
    again, h2 = _run(tmp_path / "b")
    assert h1["loss"] == h2["loss"]
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "c", interrupt_at=5)  # steps 1-4 done, step 5 interrupted
    state = json.loads((tmp_path / "c" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 4 and not (tmp_path / "c" / "model").exists()
    resumed, h3 = _run(tmp_path / "c")
    assert h3["resumed_from"] == 4 and h3["loss"]["loss"] == pytest.approx(h1["loss"]["loss"], rel=1e-5)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "c" / "checkpoint").exists(), "a finished run drops its checkpoint"


def test_resume_with_dropout_repeats_the_straight_run(tmp_path):
    """Every RNG a step draws from is checkpointed: a resumed run with dropout 0.1 is the straight run."""
    _, straight = _run(tmp_path / "a", steps=8, dropout=0.1)
    with pytest.raises(TrainingInterrupted, match="checkpoint saved at step 4 .* rerun the same command"):
        _run(tmp_path / "b", steps=8, interrupt_at=5, dropout=0.1)  # mid-epoch: 3 batches of 8 per epoch
    _, resumed = _run(tmp_path / "b", steps=8, dropout=0.1)
    assert resumed["resumed_from"] == 4
    assert resumed["loss"]["loss"] == pytest.approx(straight["loss"]["loss"], rel=1e-5, abs=1e-7)
    with pytest.raises(TrainingInterrupted):
        _run(tmp_path / "c", steps=8, interrupt_at=4, checkpoint_every=3, dropout=0.1)  # epoch boundary
    _, resumed = _run(tmp_path / "c", steps=8, dropout=0.1, checkpoint_every=3)
    assert resumed["loss"]["loss"] == pytest.approx(straight["loss"]["loss"], rel=1e-5, abs=1e-7)


def test_periodic_checkpoints_and_finished_runs_are_reused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, steps=6, interrupt_at=6, checkpoint_every=2)
    assert json.loads((tmp_path / "checkpoint" / "trainer_state.json").read_text())["step"] == 5
    trained, history = _run(tmp_path, steps=6, checkpoint_every=2)
    fresh, again = _run(tmp_path, steps=6, checkpoint_every=2)  # finished: loads the weights, trains nothing
    assert again == history
    for a, b in zip(trained.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_run_directory_refuses_another_configuration(tmp_path):
    _run(tmp_path, steps=2)
    with pytest.raises(ConfigError, match="different configuration .*steps"):
        _run(tmp_path, steps=3)
    with pytest.raises(ConfigError, match=r"identity\.teacher"):
        _run(tmp_path, steps=2, identity={"teacher": "other"})


def test_bad_configs_write_nothing(tmp_path):
    with pytest.raises(ConfigError, match="no full batch"):
        _, student = _pair()
        train(student, lambda m, b: {}, _data(n=4), TrainConfig(steps=1, batch_size=8), tmp_path / "x",
              progress=False)
    assert not (tmp_path / "x").exists()
    for bad, match in [({"steps": 0}, "steps"), ({"steps": 1, "warmup": 1.5}, "warmup"),
                       ({"steps": 1, "schedule": "cosine"}, "schedule")]:
        with pytest.raises(ConfigError, match=match):
            TrainConfig(**bad).validate()


SCRIPT = """
import sys, torch, datasets
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from safetensors.torch import load_file
from transformers import BertModel
from tdlib.core.modeling import compress
from tdlib.distill.stages import distillation_step
from tdlib.distill.loop import TrainConfig, TrainingInterrupted, train
torch.manual_seed(0)
teacher = BertModel(tiny_config()).eval()
student = compress(teacher, 4, 8)
ids = torch.randint(5, 120, (32, 10), generator=torch.Generator().manual_seed(0))
data = datasets.Dataset.from_dict({{"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()}})
data.set_format("torch")
train(student, lambda m, b: distillation_step(m, teacher, b), data, TrainConfig(steps=3, batch_size=4),
      sys.argv[1], frozen=[teacher], progress=False)
"""


def test_each_launch_names_a_port_free_at_launch_time():
    """accelerate's fixed default port (29500) would make two launches at once (two pytest-xdist workers, two
    notebooks) collide; each launch names a port that is free when it is built."""
    cmd = launch_command(2)
    port = int(cmd[cmd.index("--main_process_port") + 1])
    assert port != 29500 and cmd[cmd.index("--num_processes") + 1] == "2"
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free: nothing listens there


def test_two_cpu_processes_with_accelerate(tmp_path):
    script = tmp_path / "dist.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # with no GPU present, accelerate's torchrun launcher (--multi_gpu) starts CPU processes that join over gloo
    cmd = [*launch_command(2), str(script), str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["num_processes"] == 2 and len(history["loss"]["loss"]) == 3
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()


def test_the_optimizer_bumps_parameter_versions_so_eval_caches_see_training(tmp_path):
    """The eval caches of tdlib.core.layers key on version counters: training must change them (fused AdamW did not)."""
    teacher, student = _pair()
    student.eval()
    before = student(input_ids=torch.tensor([[5, 6, 7]])).last_hidden_state
    cfg = TrainConfig(steps=2, batch_size=8, lr=1e-2)
    train(student, lambda m, b: distillation_step(m, teacher, b), _data(), cfg, tmp_path, frozen=[teacher],
          progress=False)
    after = student(input_ids=torch.tensor([[5, 6, 7]])).last_hidden_state
    rebuilt = compress(teacher, 4, 8)
    rebuilt.load_state_dict(student.state_dict())
    torch.testing.assert_close(after, rebuilt.eval()(input_ids=torch.tensor([[5, 6, 7]])).last_hidden_state)
    assert not torch.allclose(before, after)


def test_a_changed_checkpoint_frequency_resumes_the_same_run(tmp_path):
    """checkpoint_every does not change what a run computes, so it is not part of the run's identity."""
    from tdlib.distill.loop import TrainConfig, check_run, result_fields

    a, b = TrainConfig(steps=4, checkpoint_every=2), TrainConfig(steps=4, checkpoint_every=0)
    assert result_fields(a) == result_fields(b) and "checkpoint_every" not in result_fields(a)
    (tmp_path / "run.json").write_text(json.dumps(check_run(tmp_path, a, {"x": 1})))
    check_run(tmp_path, b, {"x": 1})  # no refusal


def test_the_attention_kernel_is_a_training_choice_not_part_of_a_run(tmp_path):
    """'auto' trains with eager attention on a CPU (SDPA's CPU backward is slow) and SDPA on a GPU; the kernel
    switches for the stage only and is not in the run's key, since both compute the same attention."""
    from tdlib.distill.loop import check_run, resolve_attention, result_fields, stage_settings

    assert resolve_attention("auto", "cpu") == "eager" and resolve_attention("auto", "cuda") == "sdpa"
    assert resolve_attention("sdpa", "cpu") == "sdpa"
    with pytest.raises(ConfigError, match="attention"):
        TrainConfig(steps=1, attention="flash").validate()
    a, b = TrainConfig(steps=4, attention="eager"), TrainConfig(steps=4, attention="sdpa")
    assert result_fields(a) == result_fields(b)
    (tmp_path / "run.json").write_text(json.dumps(check_run(tmp_path, a, {"x": 1})))
    check_run(tmp_path, b, {"x": 1})  # no refusal

    torch.manual_seed(0)
    model = BertModel(tiny_config()).train()
    model.set_attn_implementation("sdpa")
    ids = torch.randint(5, 120, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # padding: both kernels must mask it alike
    sdpa = model(input_ids=ids, attention_mask=mask).last_hidden_state
    restore = stage_settings(model, TrainConfig(steps=1, attention="auto"))
    assert model.config._attn_implementation == "eager"
    eager = model(input_ids=ids, attention_mask=mask).last_hidden_state
    restore()
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(eager[mask.bool()], sdpa[mask.bool()], rtol=1e-4, atol=1e-4)


def test_training_leaves_the_saved_model_on_its_inference_kernel(tmp_path):
    """Steps train with eager attention on a CPU; curve points and the saved model use the inference kernel."""
    seen = []
    student, history = _run(tmp_path / "run", steps=2, evaluate=lambda m: seen.append(
        m.config._attn_implementation) or {"x": 0.0}, evaluate_at=[0, 2])
    assert seen == ["sdpa", "sdpa"] and [p["step"] for p in history["curve"]] == [0, 2]
    assert student.config._attn_implementation == "sdpa" and history["attention"] == "eager"
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert saved.get("_attn_implementation", saved.get("attn_implementation")) in (None, "sdpa")


def test_the_head_trains_at_its_own_learning_rate(tmp_path, tiny_classifier):
    """head_lr: the pooler and classifier move at their lr while the encoder, at a negligible lr, stays put."""
    from tdlib.core.heads import head_names

    model = tiny_classifier.train()
    assert head_names(model) == {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight",
                                 "classifier.bias"}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = _data(n=16)
    data = data.add_column("labels", [i % 3 for i in range(16)])
    data.set_format("torch")
    cfg = TrainConfig(steps=4, batch_size=8, lr=1e-12, head_lr=1e-2, warmup=0.0, schedule="constant", dropout=False)
    train(model, lambda m, b: {"loss": m(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                         labels=b["labels"]).loss}, data, cfg, tmp_path / "run", progress=False)
    for name, p in model.named_parameters():
        moved = (p.detach() - before[name]).abs().max().item()
        if name in head_names(model):
            assert moved > 1e-3, name
        else:
            assert moved < 1e-6, name


def test_head_lr_keys_a_run_only_when_set(tmp_path):
    """Runs recorded before head_lr existed keep their key and resume; a run with a head lr is another run."""
    from tdlib.distill.loop import check_run, result_fields

    plain = TrainConfig(steps=4)
    assert "head_lr" not in result_fields(plain)
    assert result_fields(TrainConfig(steps=4, head_lr=1e-3))["head_lr"] == 1e-3
    old = check_run(tmp_path, plain, {"x": 1})
    old["config"].pop("head_lr")  # a run.json written before the field existed
    (tmp_path / "run.json").write_text(json.dumps(old))
    check_run(tmp_path, plain, {"x": 1})  # no refusal
    with pytest.raises(ConfigError, match="head_lr"):
        check_run(tmp_path, TrainConfig(steps=4, head_lr=1e-3), {"x": 1})
    with pytest.raises(ConfigError, match="head_lr must be positive"):
        TrainConfig(steps=4, head_lr=0.0).validate()


def test_finetune_head_lr_is_validated_per_task():
    from tdlib.studies.settings import settings

    assert settings({"finetune_head_lr": {"cola": 1e-3}}).finetune_head_lr == {"cola": 1e-3}
    for bad in (-1.0, "fast", {"cola": 0}, True):
        with pytest.raises(ConfigError, match="finetune_head_lr"):
            settings({"finetune_head_lr": bad})


def test_stop_at_keeps_models_and_a_later_call_continues_the_same_run(tmp_path):
    straight, h1 = _run(tmp_path / "a", keep_at=[2, 6])
    _, part = _run(tmp_path / "b", keep_at=[2, 6], stop_at=2)
    assert part["stopped_at"] == 2 and not (tmp_path / "b" / "model").exists()
    assert (tmp_path / "b" / "at" / "2" / "config.json").is_file() and not (tmp_path / "b" / "at" / "6").exists()
    _, again = _run(tmp_path / "b", keep_at=[2, 6], stop_at=2)  # already there: nothing trains
    assert again["stopped_at"] == 2 and again["loss"]["loss"] == part["loss"]["loss"]
    resumed, h2 = _run(tmp_path / "b", keep_at=[2, 6])
    assert h2["resumed_from"] == 2 and h2["loss"]["loss"] == pytest.approx(h1["loss"]["loss"], rel=1e-5)
    for name in ("2", "6"):
        a = load_file(tmp_path / "a" / "at" / name / "model.safetensors")
        b = load_file(tmp_path / "b" / "at" / name / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # the kept models' training time is the run's, across the resume: at 6 it includes the session that reached 2
    at2, at6 = (run_seconds(tmp_path / "b" / "at" / n) for n in ("2", "6"))
    assert 0 < at2 <= at6
    (tmp_path / "b" / "at" / "6" / RUN_TIME).unlink()  # a model kept before the file existed: the run's history
    assert run_seconds(tmp_path / "b" / "at" / "6") == h2["seconds"]
    (tmp_path / "b" / "at" / "2" / RUN_TIME).unlink()  # ... which says nothing of a step the run did not end at
    assert run_seconds(tmp_path / "b" / "at" / "2") is None
