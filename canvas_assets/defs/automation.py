"""Scheduled syncs, syncing of newly discovered courses, and failure reporting (docs/operations.md,
"Backfill": the schedules, and why they are schedules of ranged runs rather than declarative automation).

The decisions (which ranges, which run keys) are pure functions tested on their own.
"""

import json
import os
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Optional

import dagster as dg
import sqlalchemy as sa

from canvas_assets.canvas.redact import redact_known
from canvas_assets.cli.status import run_failure_reason
from canvas_assets.defs.assets.common import gone_course_ids
from canvas_assets.defs.jobs import JOB_FOR_PRESET, discover_courses, profile_asset_keys
from canvas_assets.defs.partitions import (
    COURSE_PARTITIONS_NAME,
    COURSES,
    RANGE_END_TAG,
    RANGE_START_TAG,
    course_keys_of_run,
    plan_course_runs,
    range_tags,
)
from canvas_assets.defs.resources import WarehouseResource
from canvas_assets.profiles import environment_profile_name, preset

WEBHOOK_ENV_VAR = "CANVAS_ASSETS_FAILURE_WEBHOOK"


# --- pure decision logic -------------------------------------------------------------------------------
def plan_ranged_runs(
    all_keys: Sequence[str],
    wanted: Sequence[str],
    *,
    profile_name: str,
    run_key_prefix: str,
) -> list[dg.RunRequest]:
    """One RunRequest per contiguous range of wanted course keys, carrying the profile as run config."""
    profile = preset(profile_name)
    selection = profile_asset_keys(profile)
    return [
        dg.RunRequest(
            run_key=f"{run_key_prefix}:{i}:{keys[0]}-{keys[-1]}",
            run_config=profile.to_run_config(),
            asset_selection=selection,
            tags={
                **range_tags(keys[0], keys[-1]),
                "canvas/profile": profile.name,
                "canvas/courses": str(len(keys)),
            },
        )
        for i, keys in enumerate(plan_course_runs(all_keys, wanted))
    ]


def never_synced(all_keys: Sequence[str], materialized: set[str], gone: set[str]) -> list[str]:
    """Course keys with no staging materialization yet (and not known to be gone)."""
    return [k for k in all_keys if k not in materialized and k not in gone]


def _active_keys(
    instance: dg.DagsterInstance, warehouse: Optional[WarehouseResource]
) -> tuple[list[str], set[str]]:
    keys = instance.get_dynamic_partitions(COURSE_PARTITIONS_NAME)
    gone: set[str] = set()
    if warehouse is not None:
        try:
            gone = {str(c) for c in gone_course_ids(warehouse.get_warehouse(), [int(k) for k in keys])}
        except sa.exc.SQLAlchemyError as exc:
            # A warehouse with no catalog yet knows no gone course; anything else is worth saying.
            if not isinstance(exc, (sa.exc.OperationalError, sa.exc.ProgrammingError)):
                raise
    return list(keys), gone


# --- schedules --------------------------------------------------------------------------------------------
def sync_schedule(
    name: str, cron: str, preset_name: str, *, running: bool, description: str
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=name,
        cron_schedule=cron,
        job_name=JOB_FOR_PRESET[preset_name],
        execution_timezone=os.environ.get("CANVAS_ASSETS_TIMEZONE", "UTC"),
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
        description=description,
    )
    def _schedule(context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource):
        keys, gone = _active_keys(context.instance, warehouse)
        wanted = [k for k in keys if k not in gone]
        if not wanted:
            return dg.SkipReason("no course partitions yet: the discovery schedule registers them")
        when = context.scheduled_execution_time or datetime.now(timezone.utc)
        return plan_ranged_runs(
            keys, wanted, profile_name=preset_name, run_key_prefix=f"{name}:{when:%Y%m%dT%H%M}"
        )

    return _schedule


course_discovery_schedule = dg.ScheduleDefinition(
    name="course_discovery",
    job=discover_courses,
    cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refresh the course catalog every hour; new courses become partitions and are synced by "
    "`new_courses_sensor` soon after.",
)
nightly_sync = sync_schedule(
    "nightly_lightweight_sync",
    "30 2 * * *",
    "LIGHTWEIGHT",
    running=True,
    description="Every night: all known courses, LIGHTWEIGHT profile, in ranged runs (one per contiguous range of courses).",
)
weekly_full_sync = sync_schedule(
    "weekly_full_sync",
    "30 4 * * 0",
    "FULL_PROCESSING",
    running=True,
    description="Every Sunday: all known courses, FULL_PROCESSING (assignments, modules, analytics).",
)


# --- newly discovered courses -----------------------------------------------------------------------------
@dg.sensor(
    name="new_courses_sensor",
    job_name="sync_full",  # every asset; each request selects its profile's
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Syncs courses that were registered but never synced, in ranged runs, with the profile from "
    "CANVAS_SYNC_PROFILE.",
)
def new_courses_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    keys, gone = _active_keys(context.instance, warehouse)
    status = (
        context.instance.get_status_by_partition(dg.AssetKey(["staging", "courses"]), keys, COURSES)
        if keys
        else {}
    )
    materialized = {
        k for k, s in (status or {}).items() if s is not None and s.value in ("MATERIALIZED", "IN_PROGRESS")
    }
    pending = never_synced(keys, materialized, gone)
    if not pending:
        return dg.SkipReason("every known course has been synced at least once")
    profile_name = environment_profile_name()
    # The cursor makes each batch of new courses requested once, even if its run is still queued.
    cursor = set(json.loads(context.cursor)) if context.cursor else set()
    fresh = [k for k in pending if k not in cursor]
    if not fresh:
        return dg.SkipReason(f"{len(pending)} new course(s) already requested")
    requests = plan_ranged_runs(keys, fresh, profile_name=profile_name, run_key_prefix=f"new:{fresh[0]}")
    context.update_cursor(json.dumps(sorted(cursor | set(fresh))[-5000:]))
    return requests


# --- failure reporting ------------------------------------------------------------------------------------
def failure_report(
    run_id: str,
    job_name: str,
    tags: Mapping[str, str],
    step_failures: list[dict[str, Any]],
    course_keys: Sequence[str],
) -> dict[str, Any]:
    """The payload recorded and posted for a failed run (token-free by construction: no URLs, no config)."""
    return {
        "event": "canvas_assets.run_failed",
        "run_id": run_id,
        "job": job_name,
        "profile": tags.get("canvas/profile"),
        "courses": list(course_keys),
        "failures": step_failures,
    }


def stage_of(step_key: str) -> str:
    if step_key.startswith("canvas_extract"):
        return "extract"
    if "transform_" in step_key:
        return "transform"
    if "load_" in step_key:
        return "load"
    if "catalog" in step_key:
        return "catalog"
    return "check" if "check" in step_key else step_key


def post_webhook(url: str, payload: dict[str, Any], timeout: float = 10.0) -> None:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=timeout):
        pass


@dg.run_failure_sensor(
    name="sync_failure_reporter",
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
    description="Records the failed courses, error type and stage of failed runs in canvas_sync_log and, when "
    f"{WEBHOOK_ENV_VAR} is set, posts a JSON report to that URL.",
)
def sync_failure_reporter(context: dg.RunFailureSensorContext, warehouse: WarehouseResource) -> None:
    run = context.dagster_run
    failures = []
    for event in context.get_step_failure_events():
        data = event.event_specific_data
        meta = {}
        user = getattr(data, "user_failure_data", None)
        if user is not None and user.metadata:
            meta = {k: getattr(v, "value", v) for k, v in user.metadata.items()}
        err = getattr(data, "error", None)
        failures.append(
            {
                "step": event.step_key,
                "stage": meta.get("stage") or stage_of(event.step_key or ""),
                "error_type": meta.get("error_type") or (err.cls_name if err else None),
                "error_category": meta.get("error_category"),
                "recoverable": meta.get("recoverable"),
                "message": redact_known(
                    user.description
                    if user is not None and user.description
                    else (err.message if err else "")
                )[:2000],
            }
        )
    if not failures:
        # No step failed: the run itself was ended from outside (its worker killed, say).
        failures.append(
            {
                "step": None,
                "stage": "run",
                "error_type": "RunFailure",
                "error_category": None,
                "recoverable": None,
                "message": run_failure_reason(context.instance, run.run_id)
                or redact_known(context.failure_event.message or "run failed"),
            }
        )
    # A range whose ends are unknown to the instance is still worth naming in the report.
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    courses = course_keys_of_run(context.instance, run.tags) or ([start, end] if start and end else [])
    now = datetime.now(timezone.utc)
    first = failures[0]
    rows = [
        {
            "run_id": run.run_id,
            "course_id": int(c),
            "entity": "*",
            "stage": first["stage"] if first["stage"] in ("extract", "transform", "load") else "run",
            "records": 0,
            "api_calls": 0,
            "started_at": now,
            "finished_at": now,
            "duration_s": 0.0,
            "status": "failed",
            "error_type": first["error_type"],
            "error_category": first["error_category"],
            "message": (
                f"run failed in {first['step']}: {first['message']}"
                if first["step"]
                else str(first["message"])
            )[:2000],
        }
        for c in courses
        if str(c).isdigit()
    ]
    if rows:
        try:
            wh = warehouse.get_warehouse()
            wh.ensure_schema()
            wh.write_sync_log(rows)
        except Exception as exc:
            context.log.warning(
                f"could not record the failure in canvas_sync_log: {type(exc).__name__}: {exc}"
            )
    url = os.environ.get(WEBHOOK_ENV_VAR)
    if url:
        payload = failure_report(run.run_id, run.job_name, run.tags, failures, courses)
        try:
            post_webhook(url, payload)
        except Exception as exc:
            context.log.warning(f"failure webhook not delivered: {type(exc).__name__}")


SCHEDULES = [course_discovery_schedule, nightly_sync, weekly_full_sync]
SENSORS = [new_courses_sensor, sync_failure_reporter]
