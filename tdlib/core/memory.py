"""The process's memory allocator: keep freed activation memory for the next forward.

PyTorch's CPU tensors come from ``malloc``. With glibc's defaults a block of more than 128 KiB (at first; the
threshold then adapts, up to 32 MiB) is its own ``mmap``, returned with ``munmap`` when the tensor is freed, and the
top of the heap is given back to the kernel once 128 KiB of it are free. A BERT forward allocates and frees its
activations (8 x 128 tokens x 3,072 floats is 12.6 MB per GELU) layer after layer, so each forward faults its
working set back in page by page, and the kernel zeroes every page. Measured on a 2-core AMD EPYC host (BERT-base
geometry, eager, 8 x 128): 35,000-38,000 page faults per fp32 forward for the dense and for IV-96-128 alike,
some 150 MB zeroed per forward; with :func:`retain_freed_memory`, under 1,000.

That cost is the same in absolute terms for every model, so it weighs most on the fastest: it is overhead that a
compressed model cannot shrink. ONNX Runtime has its own arena; jemalloc or tcmalloc (``LD_PRELOAD``) do the same
for a whole process. :func:`retain_freed_memory` sets glibc's two thresholds (``mallopt``) so freed blocks stay in
the heap and are reused: what ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` would do if set before the
process started. The training loop, the inference runners and the benchmarks call it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks up to 32 MiB come from the heap
TRIM_THRESHOLD = 2**30  # up to 1 GiB of freed heap is kept for reuse


@functools.cache
def retain_freed_memory() -> bool:
    """Keep freed tensor memory in the process for reuse (glibc ``mallopt``); once per process.

    Returns
    -------
    bool
        True when the thresholds were set; False where the C library is not glibc (macOS, musl, Windows), which
        is left as it is.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl has mallopt as a stub that does nothing
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
