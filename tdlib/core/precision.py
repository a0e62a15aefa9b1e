"""Numeric precision of training and inference: ``precision = 'auto' | 'bf16' | 'fp32'``.

Why bf16 autocast: on a CPU with AMX-BF16 or AVX512-BF16 (or a GPU with bf16 units) a bf16 matmul runs
several times faster than fp32, and the linear maps are most of a distillation step. Autocast runs the
matmuls in bf16 while master weights, optimizer state, losses, softmax and metrics stay fp32 (autocast
keeps reductions such as ``mse_loss`` and ``softmax`` in fp32). ``auto`` picks bf16 only where the hardware
has it natively, checked, not assumed: emulated bf16 on an older CPU is slower than fp32.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch

from tdlib.core.errors import check_choice

PRECISIONS = ("auto", "bf16", "fp32")
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# Environment variables that cap the instruction sets the math libraries use (an AVX2 host's kernels can be run
# on a newer CPU this way). oneDNN runs PyTorch's bf16 matmuls, so its cap decides whether bf16 is native.
ISA_CAP_VARS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
ONEDNN_BELOW_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """The instruction-set flags this CPU reports (Linux ``/proc/cpuinfo``; [] elsewhere)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return []
    return next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])


def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The native-bf16 instruction sets this CPU reports (Linux ``/proc/cpuinfo``; () elsewhere)."""
    flags = cpu_flags(cpuinfo)
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


def isa_cap(environ: dict | None = None) -> dict[str, str]:
    """The instruction-set caps set in the environment (``ONEDNN_MAX_CPU_ISA=AVX2`` ...), by variable; {} if none."""
    environ = os.environ if environ is None else environ
    return {k: environ[k] for k in ISA_CAP_VARS if environ.get(k)}


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bf16 matmuls natively (CUDA: bf16 support; CPU: AMX-BF16 or AVX512-BF16,
    unless ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below them)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return _host_native_bf16()


def cpu_native_bf16(cpuinfo: str = "/proc/cpuinfo", environ: dict | None = None) -> bool:
    """Whether the CPU's bf16 matmuls are native: it reports AMX-BF16 or AVX512-BF16 and oneDNN is not capped
    below them by ``ONEDNN_MAX_CPU_ISA``."""
    cap = isa_cap(environ).get("ONEDNN_MAX_CPU_ISA", "").upper()
    return bool(cpu_bf16_flags(cpuinfo)) and cap not in ONEDNN_BELOW_BF16


@functools.cache
def _host_native_bf16() -> bool:
    return cpu_native_bf16()


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``'bf16'`` or ``'fp32'``: ``auto`` is bf16 where :func:`native_bf16`, else fp32."""
    check_choice("precision", precision, PRECISIONS)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(precision: str, device: str | torch.device = "cpu"):
    """A context running matmuls in bf16 (``precision='bf16'``) or a no-op (``'fp32'``)."""
    device = torch.device(device)
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
