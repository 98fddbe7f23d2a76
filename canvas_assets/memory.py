"""Giving freed memory back to the operating system between the big stages of a run."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any


def release_free_heap() -> None:
    """Give the C heap's free pages back to the OS (glibc's `malloc_trim`; elsewhere a no-op).

    glibc keeps what Python frees for its own later allocations. The millions of small objects of decoded
    records leave its heaps fragmented, and the extract's pool threads get heaps of their own: what they
    decoded and freed stays mapped there while the next stage adds its working set on top. A run calls this
    after each step (sync), and the Layer-1 ops before each chunk of courses; a call takes milliseconds.
    Measured: about 190 MB less peak RSS at the large benchmark scale after the extract, and 540 -> 490 MB
    for a 1,500-course Layer-1 step.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Any:
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)
