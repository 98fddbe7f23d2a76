"""How glibc's allocator serves the extract's threads.

glibc gives threads that allocate at the same time heaps ("arenas") of their own, up to eight per core. The
extract's pool threads (32) decode and free records in up to sixteen of them, and what each frees stays
mapped there, fragmented, until something reuses it: the medium benchmark's sync peaked at 543 MB with 337 MB
of it free heap. Two arenas serve the same threads (they allocate under the GIL, so they seldom contend):
410 MB, the wall time unchanged (the same as MALLOC_ARENA_MAX=2 in the environment).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Any

M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2


def limit_malloc_arenas() -> None:
    """Cap glibc's arenas at ARENAS (elsewhere a no-op). glibc fixes its cap when a ninth arena is first
    wanted, so this takes effect when called before many threads have allocated (before the extract's pool),
    and changes nothing after; an arena cap set in the environment (MALLOC_ARENA_MAX) is left alone."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    mallopt = _mallopt()
    if mallopt is not None:
        mallopt(M_ARENA_MAX, ARENAS)


@functools.cache
def _mallopt() -> Any:
    """glibc's `mallopt`, or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return mallopt
