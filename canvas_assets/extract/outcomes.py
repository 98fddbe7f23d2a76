"""What an extract run reports: per course and entity, how the fetch went (Dagster-free)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from canvas_assets.errors import CanvasAssetsError
from canvas_assets.warehouse.staging import FULL


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class EntityOutcome:
    entity: str
    records: Sequence[Any] | None = None  # fetched records (an incremental fetch's: its changes)
    api_calls: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    status: str = "success"  # success | failed | gone | unavailable
    error: CanvasAssetsError | None = None
    record_count: int = 0  # records staged (kept when the records are released after the staging write)
    mode: str = FULL  # incremental entities: `incremental` when only changes were fetched
    since: datetime | None = None  # ... and the instant they were asked for changes after
    changed: int | None = None  # ... and how many changed records came back
    removed: set[str] = field(default_factory=set)  # ... and the staged keys they drop
    watermark: datetime | None = None  # incremental entities: the latest change time among the records
    repeated: list[Any] | None = None  # ID_CHECKED_ENTITIES: ids the fetched list had more than once


@dataclass
class CourseOutcome:
    course_id: int
    entities: dict[str, EntityOutcome] = field(default_factory=dict)
    started_monotonic: float | None = None

    @property
    def status(self) -> str:
        statuses = {o.status for o in self.entities.values()}
        if "gone" in statuses:
            return "gone"
        if "failed" in statuses:
            return "failed"
        return "success"

    @property
    def error(self) -> CanvasAssetsError | None:
        for o in self.entities.values():
            if o.error is not None and o.status in ("failed", "gone"):
                return o.error
        return None


@dataclass
class ExtractReport:
    courses: dict[int, CourseOutcome]
    fetch_seconds: float  # wall time of the whole extraction, staging writes (which overlap it) included
    staging_write_seconds: float
    metrics: dict[str, Any]
    staging_rows_written: int = 0  # staged record rows inserted, updated or deleted

    def course_ids(self, status: str) -> list[int]:
        return [cid for cid, c in self.courses.items() if c.status == status]

    def raise_if_every_course_failed(self) -> None:
        """A run in which no course could be fetched is a failed run (a Canvas outage, say), with the
        first course's error; a run in which some failed is a successful run with failed courses."""
        failed = self.course_ids("failed")
        if failed and len(failed) == len(self.courses):
            first = self.courses[failed[0]].error
            assert first is not None
            first.message = f"every course of the run failed; first: course {failed[0]}: {first.message}"
            raise first


def repeated_ids(records: Sequence[Any]) -> list[Any]:
    """The `id`s that occur more than once among `records`, each once, in order of their second occurrence."""
    seen: set[Any] = set()
    again: dict[Any, None] = {}
    for record in records:
        rid = record.get("id") if isinstance(record, Mapping) else None
        if rid is None:
            continue
        try:
            if rid in seen:
                again[rid] = None
            seen.add(rid)
        except TypeError:  # an unhashable id (a malformed record): the transformer rejects it
            continue
    return list(again)
