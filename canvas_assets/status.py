"""Pipeline status (`canvas-assets status`): what the original design called pipeline monitoring.

Computed from the warehouse's catalog and sync log (per course and entity rows written by every
extract), plus the Dagster instance's recent runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa


@dataclass
class CourseStatus:
    course_id: int
    name: str | None
    last_status: str | None
    last_sync: datetime | None
    error: str | None


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

    @property
    def last_sync_age_seconds(self) -> float | None:
        if self.last_sync is None:
            return None
        return (datetime.now(timezone.utc) - _utc(self.last_sync)).total_seconds()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _as_dt(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return _utc(value)
    return _utc(datetime.fromisoformat(str(value)))


def pipeline_status(engine: sa.Engine) -> PipelineStatus:
    with engine.connect() as conn:
        catalog = conn.execute(
            sa.text("SELECT course_id, name, gone_at FROM canvas_course_catalog ORDER BY course_id")
        ).all()
        # One row per (run, course): failed if any entity failed, gone if the course vanished.
        attempts = conn.execute(
            sa.text(
                """SELECT run_id, course_id,
                          MIN(started_at) AS started, MAX(finished_at) AS finished,
                          SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed,
                          SUM(CASE WHEN status = 'gone' THEN 1 ELSE 0 END) AS gone,
                          SUM(COALESCE(api_calls, 0)) AS api_calls,
                          MAX(CASE WHEN status IN ('failed', 'gone') THEN error_type || ': ' || message END) AS error
                   FROM canvas_sync_log WHERE stage = 'extract'
                   GROUP BY run_id, course_id"""
            )
        ).all()
    names = {int(r.course_id): r.name for r in catalog}
    gone_ids = {int(r.course_id) for r in catalog if r.gone_at is not None}
    latest: dict[int, Any] = {}
    durations: list[float] = []
    ok = total = api_calls = 0
    last_sync: datetime | None = None
    for a in attempts:
        started, finished = _as_dt(a.started), _as_dt(a.finished)
        total += 1
        api_calls += int(a.api_calls or 0)
        if not a.failed and not a.gone:
            ok += 1
        if started and finished:
            durations.append((finished - started).total_seconds())
        if finished and (last_sync is None or finished > last_sync):
            last_sync = finished
        prev_finished = _as_dt(latest[int(a.course_id)].finished) if int(a.course_id) in latest else None
        if int(a.course_id) not in latest or (finished and prev_finished and finished > prev_finished):
            latest[int(a.course_id)] = a
    courses = []
    for cid in sorted(set(names) | set(latest)):
        last = latest.get(cid)
        state = None if last is None else ("gone" if last.gone else "failed" if last.failed else "success")
        courses.append(
            CourseStatus(
                cid,
                names.get(cid),
                state,
                _as_dt(last.finished) if last else None,
                last.error if last else None,
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
    )


def recent_runs(instance: Any, limit: int = 10) -> list[dict[str, Any]]:
    """The latest runs of the sync and discovery jobs in the Dagster instance."""
    out = []
    for run in instance.get_runs(limit=limit * 3):
        if not (run.job_name.startswith("sync_") or run.job_name == "discover_courses"):
            continue
        stats = instance.get_run_stats(run.run_id)
        start, end = stats.start_time, stats.end_time
        out.append(
            {
                "run_id": run.run_id,
                "job": run.job_name,
                "status": run.status.value,
                "range": (
                    f"{run.tags.get('dagster/asset_partition_range_start')}..{run.tags.get('dagster/asset_partition_range_end')}"
                    if "dagster/asset_partition_range_start" in run.tags
                    else run.tags.get("dagster/partition", "")
                ),
                "seconds": round(end - start, 1) if start and end else None,
            }
        )
        if len(out) >= limit:
            break
    return out
