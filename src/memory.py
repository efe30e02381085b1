"""How much memory this process holds and held at its peak: CUDA allocations on GPU, else the resident set
size. One place, so a training run's `peak_memory_gb` and the benchmark's mean the same thing."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import resource
import sys
from pathlib import Path

import torch


def _status_gb(field: str) -> float | None:
    """A memory line of /proc/self/status in GiB (Linux); None where there is none."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20  # kB
    return None


def peak_memory_gb() -> float:
    """Peak since the process started or the last `release_and_reset_peak()`: CUDA allocations on GPU, else
    the peak resident set size (VmHWM on Linux, getrusage elsewhere)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    peak = _status_gb("VmHWM")
    if peak is not None:
        return peak
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (2**30 if sys.platform == "darwin" else 2**20)


def release_and_reset_peak() -> float:
    """Free what earlier work left (Python, glibc's arenas), restart the peak counter, and return the memory
    in use now (GiB): a peak measured after this is the next piece of work's own, not the process's so far."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**30
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set size
    return _status_gb("VmRSS") or 0.0
