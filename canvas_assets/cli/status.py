"""Pipeline status (`canvas-assets status`): what the original design called pipeline monitoring.

Computed from the warehouse's catalog and sync log, the Layer-1 confirmations (`canvas_course_sync`: a
Layer-1 row carries no sync time of its own, since an unchanged row is never rewritten) and the Dagster
instance's recent runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from canvas_assets.warehouse.models import table
from canvas_assets.warehouse.sql import utc


@dataclass
class CourseStatus:
    course_id: int
    name: str | None
    last_status: str | None
    last_sync: datetime | None
    error: str | None
    # entity -> when a Layer-1 load last confirmed the course's rows of that entity against Canvas
    confirmed: dict[str, datetime] = field(default_factory=dict)
    # entity -> when a Layer-1 load last wrote one of those rows (insert, update, soft delete, restore)
    changed: dict[str, datetime] = field(default_factory=dict)

    @property
    def last_confirmed(self) -> datetime | None:
        """The oldest confirmation among the course's entities: every entity is at least this fresh."""
        return min(self.confirmed.values()) if self.confirmed else None


@dataclass
class PipelineStatus:
    courses_known: int
    courses_gone: int
    courses_synced: int
    courses_failed: int
    course_syncs: int
    success_rate: float | None
    mean_course_seconds: float | None
    api_calls: int
    last_sync: datetime | None
    courses: list[CourseStatus] = field(default_factory=list)
    recent_runs: list[dict[str, Any]] = field(default_factory=list)
    # entity -> (courses confirmed, oldest and newest confirmation) over the courses not gone
    confirmed: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def last_sync_age_seconds(self) -> float | None:
        if self.last_sync is None:
            return None
        return (datetime.now(timezone.utc) - utc(self.last_sync)).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (`canvas-assets status --json`), timestamps as ISO 8601."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "courses_known": self.courses_known,
            "courses_gone": self.courses_gone,
            "courses_synced": self.courses_synced,
            "courses_failed": self.courses_failed,
            "course_syncs": self.course_syncs,
            "success_rate": self.success_rate,
            "mean_course_seconds": self.mean_course_seconds,
            "api_calls": self.api_calls,
            "last_sync": iso(self.last_sync),
            "last_sync_age_seconds": self.last_sync_age_seconds,
            "confirmed": {
                entity: {k: (iso(v) if isinstance(v, datetime) else v) for k, v in figures.items()}
                for entity, figures in self.confirmed.items()
            },
            "courses": [
                {
                    "course_id": c.course_id,
                    "name": c.name,
                    "last_status": c.last_status,
                    "last_sync": iso(c.last_sync),
                    "error": c.error,
                    "last_confirmed": iso(c.last_confirmed),
                    "confirmed": {e: iso(t) for e, t in sorted(c.confirmed.items())},
                    "changed": {e: iso(t) for e, t in sorted(c.changed.items())},
                }
                for c in self.courses
            ],
            "recent_runs": self.recent_runs,
        }


def _as_dt(value: Any) -> datetime | None:
    if value is None:
        return None
    return utc(value if isinstance(value, datetime) else datetime.fromisoformat(str(value)))


@dataclass
class CourseAttempt:
    """One course in one run: the latest row of each (entity, stage) decides (a retried step writes again)."""

    run_id: str
    course_id: int
    status: str  # success | failed | gone
    started: datetime | None
    finished: datetime | None
    api_calls: int
    error: str | None


RANK = {"success": 0, "skipped": 0, "gone": 1, "failed": 2}


def course_attempts(conn: sa.Connection, run_ids: list[str] | None = None) -> list[CourseAttempt]:
    """Every (run, course) of the sync log, or of the given runs, with its outcome."""
    sql = (
        "SELECT id, run_id, course_id, entity, stage, status, started_at, finished_at, api_calls, error_type, "
        "message FROM canvas_sync_log"
    )
    stmt = sa.text(sql + (" ORDER BY id" if run_ids is None else " WHERE run_id IN :runs ORDER BY id"))
    if run_ids is not None:
        stmt = stmt.bindparams(sa.bindparam("runs", value=list(run_ids), expanding=True))
    latest: dict[tuple[str, int, str, str], Any] = {}
    calls: dict[tuple[str, int], int] = {}
    for row in conn.execute(stmt):
        latest[(row.run_id, int(row.course_id), row.entity, row.stage)] = row
        key = (row.run_id, int(row.course_id))
        calls[key] = calls.get(key, 0) + int(row.api_calls or 0)
    grouped: dict[tuple[str, int], list[Any]] = {}
    for (run_id, course_id, _, _), row in latest.items():
        grouped.setdefault((run_id, course_id), []).append(row)
    out = []
    for (run_id, course_id), rows in grouped.items():
        worst = max(rows, key=lambda r: RANK.get(r.status, 0))
        status = {"skipped": "success"}.get(worst.status, worst.status)
        starts = [d for d in (_as_dt(r.started_at) for r in rows) if d]
        ends = [d for d in (_as_dt(r.finished_at) for r in rows) if d]
        error = f"{worst.error_type}: {worst.message}" if status != "success" else None
        out.append(
            CourseAttempt(
                run_id,
                course_id,
                status,
                min(starts) if starts else None,
                max(ends) if ends else None,
                calls[(run_id, course_id)],
                error,
            )
        )
    return out


def live_rows(conn: Any, name: str, courses: list[int]) -> int:
    """Live rows of a Layer-1 table for these courses (students: those enrolled in them as students)."""
    columns = table(name).c
    live = " AND deleted_at IS NULL" if "deleted_at" in columns else ""
    if "course_id" in columns:
        sql = f"SELECT COUNT(*) FROM {name} WHERE course_id IN :ids{live}"
    elif name == "canvas_courses":  # its own id is the course
        sql = f"SELECT COUNT(*) FROM {name} WHERE id IN :ids{live}"
    else:  # canvas_students is global: the courses' student users
        sql = (
            "SELECT COUNT(DISTINCT user_id) FROM canvas_enrollments WHERE course_id IN :ids "
            "AND type = 'StudentEnrollment' AND deleted_at IS NULL"
        )
    stmt = sa.text(sql).bindparams(sa.bindparam("ids", expanding=True))
    return int(conn.execute(stmt, {"ids": courses}).scalar_one())


def account_live_rows(conn: Any, name: str) -> int:
    """Live rows of an account-level table (terms): the whole table, not a course's share."""
    live = " WHERE deleted_at IS NULL" if "deleted_at" in table(name).c else ""
    return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {name}{live}")).scalar_one())


def pipeline_status(engine: sa.Engine) -> PipelineStatus:
    with engine.connect() as conn:
        catalog = conn.execute(
            sa.text("SELECT course_id, name, gone_at FROM canvas_course_catalog ORDER BY course_id")
        ).all()
        attempts = course_attempts(conn)
        confirmations = conn.execute(
            sa.text("SELECT entity, course_id, confirmed_at, changed_at FROM canvas_course_sync")
        ).all()
    names = {int(r.course_id): r.name for r in catalog}
    gone_ids = {int(r.course_id) for r in catalog if r.gone_at is not None}
    latest: dict[int, CourseAttempt] = {}
    durations: list[float] = []
    ok = api_calls = 0
    last_sync: datetime | None = None
    for a in attempts:
        api_calls += a.api_calls
        ok += a.status == "success"
        if a.started and a.finished:
            durations.append((a.finished - a.started).total_seconds())
        if a.finished and (last_sync is None or a.finished > last_sync):
            last_sync = a.finished
        prev = latest.get(a.course_id)
        if prev is None or (a.finished and prev.finished and a.finished > prev.finished):
            latest[a.course_id] = a
    total = len(attempts)
    confirmed: dict[int, dict[str, datetime]] = {}
    changed: dict[int, dict[str, datetime]] = {}
    per_entity: dict[str, list[datetime]] = {}
    for row in confirmations:
        cid, at = int(row.course_id), _as_dt(row.confirmed_at)
        if at is not None:
            confirmed.setdefault(cid, {})[row.entity] = at
            if cid not in gone_ids:
                per_entity.setdefault(row.entity, []).append(at)
        when = _as_dt(row.changed_at)
        if when is not None:
            changed.setdefault(cid, {})[row.entity] = when
    courses = []
    for cid in sorted(set(names) | set(latest) | set(confirmed)):
        last = latest.get(cid)
        courses.append(
            CourseStatus(
                cid,
                names.get(cid),
                last.status if last else None,
                last.finished if last else None,
                last.error if last else None,
                confirmed.get(cid, {}),
                changed.get(cid, {}),
            )
        )
    return PipelineStatus(
        courses_known=len(names) - len(gone_ids),
        courses_gone=len(gone_ids),
        courses_synced=sum(1 for c in courses if c.last_status == "success"),
        courses_failed=sum(1 for c in courses if c.last_status == "failed"),
        course_syncs=total,
        success_rate=(ok / total) if total else None,
        mean_course_seconds=(sum(durations) / len(durations)) if durations else None,
        api_calls=api_calls,
        last_sync=last_sync,
        courses=courses,
        confirmed={
            entity: {"courses": len(times), "oldest": min(times), "newest": max(times)}
            for entity, times in sorted(per_entity.items())
        },
    )


def recent_runs(instance: Any, limit: int = 10) -> list[dict[str, Any]]:
    """The latest runs of the sync and discovery jobs in the Dagster instance.

    A failed run also carries `failure` (why it failed, in one line: the first failed step's error, or, for a
    run failed from outside, what Dagster's run monitoring or the code server saw, such as a worker killed by
    a signal) and `failed_courses` (the courses it left unsynced: those the instance stored a failure for).
    """
    from dagster import DagsterRunStatus

    from canvas_assets.defs.partitions import PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG

    out = []
    for run in instance.get_runs(limit=limit * 3):
        if not (run.job_name.startswith("sync_") or run.job_name == "discover_courses"):
            continue
        stats = instance.get_run_stats(run.run_id)
        start, end = stats.start_time, stats.end_time
        entry: dict[str, Any] = {
            "run_id": run.run_id,
            "job": run.job_name,
            "status": run.status.value,
            "range": (
                f"{run.tags.get(RANGE_START_TAG)}..{run.tags.get(RANGE_END_TAG)}"
                if RANGE_START_TAG in run.tags
                else run.tags.get(PARTITION_TAG, "")
            ),
            "seconds": round(end - start, 1) if start and end else None,
        }
        if run.status == DagsterRunStatus.FAILURE:
            entry["failure"] = run_failure_reason(instance, run.run_id)
            entry["failed_courses"] = failed_courses(instance, run.run_id)
        out.append(entry)
        if len(out) >= limit:
            break
    return out


# Dagster's message when a run is marked failed by something other than its own worker (run monitoring, the
# code server that saw the worker die): the reason is in the engine event just before it.
FAILED_FROM_OUTSIDE = "marked as failed from outside the execution context"


def run_failure_reason(instance: Any, run_id: str) -> str:
    """Why a run failed, in one line (at most 300 characters, known secrets redacted)."""
    from dagster import DagsterEventType

    from canvas_assets.canvas.redact import redact_known

    records = instance.get_records_for_run(
        run_id,
        of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE, DagsterEventType.ENGINE_EVENT},
    ).records
    entries = [r.event_log_entry for r in records if r.event_log_entry.dagster_event is not None]
    steps = (e.dagster_event for e in entries if e.dagster_event.event_type == DagsterEventType.STEP_FAILURE)
    reason = next((step_failure_reason(event) for event in steps), "")
    if not reason:
        engine = ""
        for entry in entries:
            event = entry.dagster_event
            if event.event_type == DagsterEventType.ENGINE_EVENT and _explains_a_failure(entry.message):
                engine = entry.message
            elif event.event_type == DagsterEventType.RUN_FAILURE:
                message = entry.message or "the run failed"
                reason = engine if FAILED_FROM_OUTSIDE in message and engine else message
    text = " ".join(redact_known(reason or "the run failed").split())
    return text if len(text) <= 300 else text[:299] + "…"


def step_failure_reason(event: Any, *, with_class: bool = True) -> str:
    """A step failure in one line: our Failure's description, else the innermost error (what went wrong)."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return f"{event.step_key}: {data.user_failure_data.description}"
    if data.error is None:
        return f"{event.step_key} failed"
    cause = data.error
    while cause.cause is not None:
        cause = cause.cause
    return f"{event.step_key}: {f'{cause.cls_name}: ' if with_class else ''}{cause.message.strip()}"


def _explains_a_failure(message: str) -> bool:
    words = ("terminated", "exited", "timed out", "Exceeded maximum runtime", "crash")
    return any(w in message for w in words) and not message.startswith("Process for run exited")


def failed_courses(instance: Any, run_id: str) -> list[str]:
    """The course keys a run stored a failure for (a course of a failed run that it did not store, or a course
    that failed inside it), in partition order."""
    from dagster import DagsterEventType

    from canvas_assets.defs.partitions import COURSE_PARTITIONS_NAME

    failed = {
        record.event_log_entry.dagster_event.partition
        for record in instance.get_records_for_run(
            run_id, of_type=DagsterEventType.ASSET_FAILED_TO_MATERIALIZE, limit=1_000_000
        ).records
        if record.event_log_entry.dagster_event is not None
    }
    failed.discard(None)
    order = {key: i for i, key in enumerate(instance.get_dynamic_partitions(COURSE_PARTITIONS_NAME))}
    return sorted(failed, key=lambda key: (order.get(key, len(order)), key))
