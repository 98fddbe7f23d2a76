"""The fetch plans of `grade_changes` (canvas_assets.entities): Canvas's grade change audit log of a course.

GradeChangeAuditApiController#for_course (`/api/v1/audit/grade_change/courses/:id`) serves the events newest
first, bookmarked, each page an object holding them under `events`; `start_time` is inclusive. The log is
append-only, so it is fetched in full once and then by time window from the course's watermark (less the
overlap, `extract.incremental`), re-read events merged by their uuid (docs/canvas-api.md §7).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any


def fetch(client: Any, profile: Any, course_id: int, timeout: float) -> list[dict]:
    """Every event of the course: its first fetch (the profile asks nothing of it)."""
    return list(client.list_grade_changes(course_id, timeout=timeout))


def fetch_since(client: Any, course_id: int, since: datetime, timeout: float) -> list[dict]:
    """Events created at or after `since` (the watermark less the overlap; Canvas's `start_time` is
    inclusive): re-read events merge by id, never twice."""
    return list(client.list_grade_changes(course_id, start_time=since, timeout=timeout))


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


def event_id(record: Any) -> str | None:
    """An audit event's key: its uuid string (not a Canvas id); None when it has none."""
    value = record.get("id") if isinstance(record, Mapping) else None
    return value if isinstance(value, str) and value else None
