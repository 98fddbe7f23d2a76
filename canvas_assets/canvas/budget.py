"""Deadlines that hold: a time budget over everything the client does for one piece of work, in the
calling thread and the follow-up threads it fans out to (docs/canvas-api.md §1, Time limits)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from canvas_assets.errors import CanvasTimeout

_local = threading.local()


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() value
    seconds: float  # the whole budget, for messages
    what: str  # the work it bounds, e.g. "course 1006's enrollments"
    setting: str = ""  # where the budget is configured, for messages

    def left(self) -> float:
        return self.at - time.monotonic()

    def expired(self, doing: str, *, url: str | None = None) -> CanvasTimeout:
        """The error once the budget is spent while `doing` (token-free `url` if a request was involved)."""
        where = f" ({self.setting})" if self.setting else ""
        # Not recoverable: trying again spends the same budget on the same answer (a step retry of a
        # discovery that never ends would cost three budgets); the next sync tries again.
        return CanvasTimeout(
            f"{self.what} ran out of its {self.seconds:g} s budget{where} while {doing}",
            url=url,
            recoverable=False,
        )


def current() -> Deadline | None:
    """The calling thread's deadline, if its work has one."""
    return getattr(_local, "deadline", None)


@contextmanager
def within(seconds: float, what: str, *, setting: str = "", at: float | None = None) -> Iterator[Deadline]:
    """Bound the calling thread's Canvas requests by `seconds` from now (or by the monotonic instant `at`).

    Nested budgets keep the earlier deadline: an inner one can shorten the outer, never extend it.
    """
    deadline = Deadline(time.monotonic() + seconds if at is None else at, seconds, what, setting)
    outer = current()
    if outer is not None and outer.at <= deadline.at:
        deadline = outer
    with adopted(deadline):
        yield deadline


@contextmanager
def adopted(deadline: Deadline | None) -> Iterator[None]:
    """Run a helper thread's share of the work under the deadline of the thread it works for."""
    outer = current()
    _local.deadline = deadline
    try:
        yield
    finally:
        _local.deadline = outer
