"""What this CPU multiplies at full speed, found once at import by asking oneDNN."""

from __future__ import annotations

import torch


def _onednn_linear_dtypes() -> frozenset:
    """The dtypes whose linear layers oneDNN runs (and packs) on this CPU, found by trying each.

    fp32 runs everywhere; bf16 and fp16 need AVX-512 (or AVX-NE-CONVERT). Without it oneDNN
    refuses them, and PyTorch's own half-precision matmul is scalar code: on an AVX2 Zen 3 it
    multiplied bf16 at 16 GFLOP/s against 96 for fp32 (2 threads, 512 x 768 x 2048).
    A probe rather than a table of CPU flags: it is right on CPUs nobody measured (why it exists:
    docs/experiments.md, "a CPU without AVX-512").
    """
    ok = set()
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        try:
            w = torch.ops.mkldnn._reorder_linear_weight(torch.ones(8, 8, dtype=dtype), 1)
            torch.ops.mkldnn._linear_pointwise(torch.ones(1, 8, dtype=dtype), w, None, "none", [], "")
            ok.add(dtype)
        except (AttributeError, RuntimeError):
            pass
    return frozenset(ok)


ONEDNN_DTYPES = _onednn_linear_dtypes() if torch.backends.mkldnn.is_available() else frozenset()


def cpu_computes_natively(dtype: torch.dtype) -> bool:
    """Whether this CPU multiplies `dtype` matrices at full speed (fp32: always)."""
    return dtype == torch.float32 or dtype in ONEDNN_DTYPES


def available_memory() -> int:
    """Bytes the kernel says a new allocation can take without swapping (MemAvailable)."""
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fits(extra_bytes: int) -> bool:
    """Whether `extra_bytes` more (a converted or packed copy of weights) leave half the memory
    available now free: what an inference setting may spend on speed without risking the process."""
    return extra_bytes <= available_memory() // 2


def heap_trimmer():
    """glibc's malloc_trim(0), which returns freed heap pages to the system (a no-op elsewhere):
    without it, the freed full-precision tensors of a long quantizing load stay in the process
    as holes between the kept quantized ones."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return lambda: libc.malloc_trim(0)
    except (OSError, AttributeError):
        return lambda: None
