"""A steady stream of grading for the live-event benchmark: finals week at a chosen rate.

`GradingLoad(d, rate=200)` regrades submissions of the dataset at `rate` mutations a second from its own
thread, on a fixed schedule (the i-th mutation is due at start + i / rate; a late one runs at once and the
lag is reported, never silently skipped). Each mutation is `mutations.grade_submission` with an explicit
submission, so it goes through the same hooks as any other: with an emitter attached that is one
`grade_change` and one `submission_updated` (subscribe to `grade_change` only for one event per mutation).
Targets are drawn at random from a pool of gradable submissions spread over the courses, so a stream
regrades many rows, and a row now and then twice within seconds (what a reordering test needs).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from canvas_assets.sandbox import mutations
from canvas_assets.sandbox.submissions import gradable

if TYPE_CHECKING:
    from canvas_assets.sandbox.data import SandboxData

MAX_RATE = 5000.0


@dataclass
class LoadReport:
    """What a run did: mutations made, failures, how far behind schedule it fell at worst, its length."""

    mutations: int = 0
    errors: int = 0
    max_behind_s: float = 0.0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.mutations / self.seconds if self.seconds > 0 else 0.0


def grading_targets(
    d: SandboxData, *, per_course: int = 40, courses: list[int] | None = None, seed: int = 23
) -> list[tuple[int, int]]:
    """(course id, submission id) pairs of gradable submissions of published assignments, up to
    `per_course` from each available course (or from `courses`), shuffled with `seed`."""
    if per_course < 1:
        raise ValueError("per_course must be >= 1")
    pool: list[tuple[int, int]] = []
    with d.lock:
        for cid in courses if courses is not None else d.course_ids(("available",)):
            taken = 0
            for rec, a in d._submissions.rows(cid):
                if gradable(a):
                    pool.append((cid, int(rec["id"])))
                    taken += 1
                    if taken >= per_course:
                        break
    if not pool:
        raise ValueError("the sandbox has no gradable submission to regrade")
    random.Random(seed).shuffle(pool)
    return pool


class GradingLoad:
    """Regrades submissions at `rate` a second for `duration_s` from a background thread.

    `start()` begins, `join()` waits for the end and returns the `LoadReport`, `stop()` ends early.
    `run()` does the same in the calling thread.
    """

    def __init__(
        self, d: SandboxData, rate: float, *, targets: list[tuple[int, int]] | None = None, seed: int = 23
    ) -> None:
        if not 0 < rate <= MAX_RATE:
            raise ValueError(f"rate must be between 0 and {MAX_RATE:.0f} mutations a second, got {rate!r}")
        self.d = d
        self.rate = rate
        self.targets = targets if targets is not None else grading_targets(d, seed=seed)
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.report = LoadReport()

    def run(self, duration_s: float) -> LoadReport:
        if duration_s <= 0:
            raise ValueError("duration_s must be > 0")
        report = self.report = LoadReport()
        start = time.monotonic()
        total = int(duration_s * self.rate)
        for i in range(total):
            due = start + i / self.rate
            now = time.monotonic()
            if due > now and self._stop.wait(due - now):
                break
            if self._stop.is_set():
                break
            report.max_behind_s = max(report.max_behind_s, time.monotonic() - due)
            course_id, submission_id = self.targets[self._rng.randrange(len(self.targets))]
            try:
                mutations.grade_submission(self.d, course_id, submission_id)
                report.mutations += 1
            except (KeyError, ValueError):  # the submission left (an enrollment dropped meanwhile)
                report.errors += 1
        report.seconds = time.monotonic() - start
        return report

    def start(self, duration_s: float) -> GradingLoad:
        if self._thread is not None:
            raise RuntimeError("this load is already running")
        self._thread = threading.Thread(target=self.run, args=(duration_s,), name="grading-load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> LoadReport:
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.report
