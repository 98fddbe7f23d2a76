"""The fetch plans of `grade_changes` (canvas_assets.entities): Canvas's grade change audit log of a course,
append-only, so fetched in full once and then from the watermark; a big course's first fetch is cut into time
windows fetched at once (`fetch_in_windows`). How Canvas serves it and why windows: docs/canvas-api.md §7.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from canvas_assets.extract.incremental import parse_time

# A course whose log may take more pages than this is fetched in time windows of about this many pages each
# (the pages of one window come one after another, 30-50 ms each), at most MAX_WINDOWS of them.
WINDOW_PAGES = 20
EVENTS_PER_PAGE = 100  # the client's per_page
MAX_WINDOWS = 64
STUDENT_TYPES = ("StudentEnrollment", "StudentViewEnrollment")


def fetch(client: Any, profile: Any, course_id: int, timeout: float) -> list[dict]:
    """Every event of the course: its first fetch (the profile asks nothing of it)."""
    return list(client.list_grade_changes(course_id, timeout=timeout))


def fetch_since(client: Any, course_id: int, since: datetime, timeout: float) -> list[dict]:
    """Events created at or after `since` (the watermark less the overlap; Canvas's `start_time` is
    inclusive): re-read events merge by id, never twice."""
    return list(client.list_grade_changes(course_id, start_time=since, timeout=timeout))


def fetch_in_windows(
    client: Any, course_id: int, records_of: Mapping[str, Sequence[Any]], timeout: float
) -> Sequence[Any] | None:
    """A big course's first fetch in time windows, fetched concurrently; None for a course one list serves.

    The run's assignments and enrollments of the course size it: a grade change per graded submission
    makes up most of a log, so assignments x students bounds it, give or take regrades. The windows are
    cut at quantiles of the assignments' due dates (their creation when undated): grading follows due
    dates, so each window holds about as many assignments' grading. Where the cuts fall decides only how
    even the windows are, never what they hold: the first window has no start and the last no end."""
    assignments, enrollments = records_of.get("assignments"), records_of.get("enrollments")
    if assignments is None or enrollments is None:
        return None
    students = {
        e.get("user_id") for e in enrollments if isinstance(e, Mapping) and e.get("type") in STUDENT_TYPES
    }
    times = sorted(t for t in map(_assignment_time, assignments) if t is not None)
    pages = len(times) * len(students) / EVENTS_PER_PAGE
    windows = min(MAX_WINDOWS, len(times), math.ceil(pages / WINDOW_PAGES))
    if windows < 2:
        return None
    cuts = [times[len(times) * k // windows] for k in range(1, windows)]
    return client.list_grade_changes_in_windows(course_id, cuts, timeout=timeout)


def _assignment_time(assignment: Any) -> datetime | None:
    """When an assignment's grading is due to start: its due date, else its creation (None: unreadable)."""
    if not isinstance(assignment, Mapping):
        return None
    return parse_time(assignment.get("due_at") or assignment.get("created_at"))


def no_new_parents(
    client: Any,
    course_id: int,
    staged: Sequence[Any],
    records_of: Mapping[str, Sequence[Any]],
    timeout: float,
) -> list[dict]:
    """Every audit event has a creation time, so the time window sees them all: nothing to ask by parent."""
    return []


def every_event(records_of: Mapping[str, Sequence[Any]]) -> Callable[[Mapping[str, Any]], bool]:
    """Audit events outlive what they describe (a deleted assignment's grade changes stay in Canvas's log):
    a merge drops none."""
    return lambda _event: True
