"""Keeping freed memory for reuse on the CPU.

A compiled program allocates the same large arrays on every call. With glibc's default malloc
policy each array above 128 KiB is a fresh `mmap`, returned to the system when freed, so every
call writes into new pages and pays a page fault per 4 KiB page: 8,400 faults and about a fifth
of the time of a small transformer's training step. `retain_freed_memory()` asks glibc (once per
process, on the first CPU compile) to serve such arrays from the heap and not to give freed heap
memory back, so later calls reuse pages already mapped. Peak memory is unchanged; the process
keeps its high-water mark instead of returning memory between calls (as JAX's and PyTorch's own
allocators do). Setting `retain_memory` to False (FUNCGRAD_RETAIN_MEMORY=0) keeps glibc's
defaults; other C libraries are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from .. import config

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = [False]


def retain_freed_memory():
    """Apply the policy (see the module doc); True if glibc took it."""
    if _done[0]:
        return True
    _done[0] = True
    if not sys.platform.startswith("linux") or not config.read("retain_memory"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # arrays up to 256 MiB from the heap; freed heap memory kept up to 1 GiB
    return bool(mallopt(_M_MMAP_THRESHOLD, 256 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                        1 << 30))
