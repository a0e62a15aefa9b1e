"""Precision selection (checked on the hardware, not assumed) and bf16/fp32 parity of training."""

import pytest
import torch

from tdlib.core import precision
from tdlib.core.errors import ConfigError


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert precision.cpu_bf16_flags(str(info)) == ("amx_bf16", "avx512_bf16")
    info.write_text("processor : 0\nflags : fpu sse avx avx2\n")
    assert precision.cpu_bf16_flags(str(info)) == ()
    assert precision.cpu_bf16_flags(str(tmp_path / "missing")) == ()


def test_an_isa_cap_below_bf16_makes_bf16_emulated(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16\n")
    assert precision.cpu_native_bf16(str(info), environ={})
    assert precision.cpu_native_bf16(str(info), environ={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"})
    for cap in ("avx2", "AVX512_CORE", "AVX512_CORE_VNNI"):
        assert not precision.cpu_native_bf16(str(info), environ={"ONEDNN_MAX_CPU_ISA": cap})
    assert precision.isa_cap({"ATEN_CPU_CAPABILITY": "avx2", "PATH": "/bin"}) == {"ATEN_CPU_CAPABILITY": "avx2"}
    info.write_text("processor : 0\nflags : fpu sse avx avx2\n")
    assert not precision.cpu_native_bf16(str(info), environ={})


def test_auto_picks_bf16_only_where_native(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": False)
    assert precision.resolve_precision("auto") == "fp32"
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": True)
    assert precision.resolve_precision("auto") == "bf16"
    assert precision.resolve_precision("fp32") == "fp32" and precision.resolve_precision("bf16") == "bf16"
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        precision.resolve_precision("fp16")


def test_bf16_matmuls_and_fp32_losses_under_autocast():
    lin = torch.nn.Linear(8, 8)
    with precision.autocast("bf16"):
        y = lin(torch.randn(2, 8))
        loss = torch.nn.functional.mse_loss(y, torch.zeros_like(y))
    assert y.dtype == torch.bfloat16 and loss.dtype == torch.float32 and lin.weight.dtype == torch.float32
    with precision.autocast("fp32"):
        assert lin(torch.randn(2, 8)).dtype == torch.float32


def test_a_bf16_run_tracks_the_fp32_run(tmp_path):
    """Same seed, same data, 12 steps of general distillation: losses agree to bf16's precision."""
    from test_train import _data, _pair

    from tdlib.distill.loop import TrainConfig, train
    from tdlib.distill.stages import distillation_step

    histories = {}
    for p in ("fp32", "bf16"):
        teacher, student = _pair()
        cfg = TrainConfig(steps=12, batch_size=8, lr=1e-3, precision=p)
        histories[p] = train(student, lambda m, b, t=teacher: distillation_step(m, t, b), _data(), cfg,
                             tmp_path / p, frozen=[teacher], progress=False)
    assert histories["bf16"]["precision"] == "bf16" and histories["fp32"]["precision"] == "fp32"
    a, b = histories["fp32"]["loss"]["loss"], histories["bf16"]["loss"]["loss"]
    assert max(abs(x - y) / x for x, y in zip(a, b, strict=True)) < 0.02  # measured: 0.3%
