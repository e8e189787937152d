"""Keep the client's memory flat on long jobs.

Each in-flight request and frame batch is a multi-megabyte buffer allocated and freed from worker
threads. glibc raises its mmap threshold after the first such free and then serves these buffers
from per-thread heap arenas, which fragment and grow with the job's length. Pinning the threshold
at 1 MiB sends every large buffer to mmap, returned to the OS on free.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
_done = False


def pin_large_allocations_to_mmap(threshold: int = 1 << 20) -> bool:
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _done = bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # not glibc: nothing to tune
        _done = False
    return _done
