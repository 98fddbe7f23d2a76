"""Deadlines that hold: a time budget over everything the client does for one piece of work.

A read timeout bounds one socket read, not a response (a body trickled a byte at a time never trips it),
not a list (a list whose every page links a new next page never ends), and not the waits between
requests (backoff, the pacer's leak wait). A `Deadline` does: the work that owns it (the extraction of
one course's entity, the discovery of courses) opens it with `within`, and every request made meanwhile,
by that thread or by the follow-up threads it fans out to, stops at it: the pacer's wait, each attempt's
read timeout, the reading of each body, each backoff, each next page. Past it the client raises
`CanvasTimeout` naming the work, what it was doing and the budget; no retry follows.

The deadline lives in a thread-local, so the client's domain methods need no parameter for it, and the
code that sets budgets (the extraction engine) needs nothing of the client.
"""

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
