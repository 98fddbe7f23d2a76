"""How the C heap serves a run: glibc's arenas capped for the extract's threads, and freed memory given back to
the operating system between the big stages of a run (elsewhere than glibc, both are no-ops)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Any

M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2


def limit_malloc_arenas() -> None:
    """Cap glibc's arenas at ARENAS. glibc fixes its cap when a ninth arena is first wanted, so this takes
    effect when called before many threads have allocated (before the extract's pool), and changes nothing
    after; an arena cap set in the environment (MALLOC_ARENA_MAX) is left alone.

    glibc gives threads that allocate at the same time heaps ("arenas") of their own, up to eight per core.
    The extract's pool threads (32) decode and free records in up to sixteen of them, and what each frees
    stays mapped there, fragmented, until something reuses it: the medium benchmark's sync peaked at 543 MB
    with 337 MB of it free heap. Two arenas serve the same threads (they allocate under the GIL, so they
    seldom contend): 410 MB, the wall time unchanged (the same as MALLOC_ARENA_MAX=2 in the environment).
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    mallopt = _glibc("mallopt")
    if mallopt is not None:
        mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        mallopt(M_ARENA_MAX, ARENAS)


def release_free_heap() -> None:
    """Give the C heap's free pages back to the OS (glibc's `malloc_trim`).

    glibc keeps what Python frees for its own later allocations. The millions of small objects of decoded
    records leave its heaps fragmented, and the extract's pool threads get heaps of their own: what they
    decoded and freed stays mapped there while the next stage adds its working set on top. A run calls this
    after each step (sync), and the Layer-1 ops before each chunk of courses; a call takes milliseconds.
    Measured: about 190 MB less peak RSS at the large benchmark scale after the extract, and 540 -> 490 MB
    for a 1,500-course Layer-1 step.
    """
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)


@functools.cache
def _glibc(name: str) -> Any:
    """A function of the C library, or None where it has none (macOS and musl have no `malloc_trim`)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(libc, name, None)
