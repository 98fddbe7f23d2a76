"""`canvas_extract`: one multi-asset that fetches every staging entity of the run's courses at once."""

from collections.abc import Iterator

import dagster as dg

from canvas_assets.defs.assets.common import (
    CANVAS_RETRY_POLICY,
    add_course_metadata,
    course_keys,
    course_metadata,
    dagster_failures,
    report_run_figures,
)
from canvas_assets.defs.assets.tables import table_metadata
from canvas_assets.defs.partitions import COURSES, SINGLE_RUN
from canvas_assets.defs.resources import CanvasResource, SyncProfileResource, WarehouseResource
from canvas_assets.entities import ENTITIES
from canvas_assets.errors import CanvasPermissionError
from canvas_assets.extract.engine import Extractor
from canvas_assets.extract.outcomes import ExtractReport
from canvas_assets.profiles import STAGING_ENTITIES
from canvas_assets.progress import report as report_progress


def staging_key(entity: str) -> dg.AssetKey:
    return dg.AssetKey(["staging", entity])


@dg.multi_asset(
    name="canvas_extract",
    specs=[
        dg.AssetSpec(
            staging_key(e),
            skippable=True,
            group_name="staging",
            description=ENTITIES[e].staging_description
            + f" One row per record in `canvas_staging_records` (entity = '{e}'), as Canvas served it; how they "
            "were fetched in `canvas_staging`.",
            kinds={"canvas", "sql"},
            metadata=table_metadata("canvas_staging_records", "canvas_staging"),
        )
        for e in STAGING_ENTITIES
    ],
    can_subset=True,
    partitions_def=COURSES,
    backfill_policy=SINGLE_RUN,
    pool="canvas_api",
    retry_policy=CANVAS_RETRY_POLICY,
)
def canvas_extract(
    context: dg.AssetExecutionContext,
    canvas: CanvasResource,
    warehouse: WarehouseResource,
    sync_profile: SyncProfileResource,
) -> Iterator[dg.MaterializeResult]:
    """Fetch the run's courses from Canvas into staging: raw JSON per course and entity.

    All selected entities of all courses in the run are fetched concurrently; the Canvas resource's
    pacer keeps the token's rate-limit bucket below its high-water mark. Each course is written to
    staging as soon as it is complete, replacing its previous staging atomically, so Layer-1 can be
    rebuilt later with zero Canvas calls. Entities the sync profile switches off are not produced and
    their Layer-1 steps skip. A course Canvas no longer has is recorded as gone, not a failure.
    """
    with dagster_failures("extract"):
        profile = sync_profile.resolve()
        selected = [e for e in STAGING_ENTITIES if staging_key(e) in context.selected_asset_keys]
        entities = [e for e in selected if profile.wants(e)]
        skipped = [e for e in selected if e not in entities]
        if skipped:
            context.log.info(f"profile {profile.name} switches off {', '.join(skipped)}: not produced")
        if not entities:
            return
        courses = course_keys(context)
        wh = warehouse.get_warehouse()
        wh.ensure_schema()
        client = canvas.get_client(
            read_timeout=min(60.0, profile.request_timeout_seconds), max_retries=profile.retry_attempts
        )
        done = 0

        report_progress("fetch", 0, len(courses))

        def progress(course) -> None:
            nonlocal done
            done += 1
            report_progress("fetch", done, len(courses))
            if course.status != "success" or done % 25 == 0 or done == len(courses):
                err = course.error
                context.log.info(
                    f"course {course.course_id}: {course.status}"
                    + (f" ({err.error_type}: {err.message})" if err else "")
                    + f" [{done}/{len(courses)}]"
                )

        try:
            report = Extractor(
                client, wh, profile, entities=entities, run_id=context.run_id, on_course_done=progress
            ).run(courses)
        finally:
            client.close()
        report.raise_if_every_course_failed()
    warn_once_per_entity_not_permitted(context, report)
    report_run_figures(context, extract_figures(report))
    yield from _results(context, entities, report)


def warn_once_per_entity_not_permitted(context: dg.AssetExecutionContext, report: ExtractReport) -> None:
    """One warning per run (not per course) for each entity the token may not read (`optional_permission`:
    the grade audit log), naming how many courses it was skipped for and what to do."""
    skipped: dict[str, list[int]] = {}
    for course_id, course in report.courses.items():
        for entity, o in course.entities.items():
            if o.status == "unavailable" and isinstance(o.error, CanvasPermissionError):
                skipped.setdefault(entity, []).append(course_id)
    for entity, courses in skipped.items():
        context.log.warning(
            f"{entity} skipped for {len(courses)} course(s) (first: {min(courses)}): Canvas answered that the "
            f"token may not read them ({ENTITIES[entity].request}; a course's grade change log needs the "
            "'manage grades' or 'view all grades' permission in the course). Their rows were left as they were "
            f"and the courses are not failed; give the token's user that permission, or switch "
            f"entities.{entity} off in the profile, to silence this warning"
        )


def extract_figures(report: ExtractReport) -> dict[str, int | float]:
    """The extract's run-wide figures, reported once per run (the sync report, not run tags)."""
    m = report.metrics
    return {
        "canvas/courses": len(report.courses),
        "canvas/courses_ok": len(report.course_ids("success")),
        "canvas/courses_failed": len(report.course_ids("failed")),
        "canvas/courses_gone": len(report.course_ids("gone")),
        "canvas/api_calls": int(m.get("requests", 0)),
        "canvas/retries": int(m.get("retries", 0)),
        "canvas/throttled": int(m.get("throttled", 0)),
        "canvas/wait_seconds": round(float(m.get("wait_seconds", 0.0)), 3),
        "canvas/fetch_seconds": round(report.fetch_seconds, 3),
        "canvas/staging_write_seconds": round(report.staging_write_seconds, 3),
        "canvas/staging_rows_written": report.staging_rows_written,
        "canvas/incremental_fetches": sum(
            o.mode == "incremental" for c in report.courses.values() for o in c.entities.values()
        ),
    }


def _results(
    context: dg.AssetExecutionContext, entities: list[str], report: ExtractReport
) -> Iterator[dg.MaterializeResult]:
    """One result per staging asset; each course's event carries only that course's figures."""
    for entity in entities:
        key = staging_key(entity)
        per_course: dict[int, dict] = {}
        for course_id, course in report.courses.items():
            outcome = course.entities.get(entity)
            if outcome is None:
                continue
            status = "gone" if course.status == "gone" else outcome.status
            figures = {"canvas/fetch_mode": outcome.mode} if ENTITIES[entity].incremental else {}
            per_course[course_id] = course_metadata(
                status="success" if status == "unavailable" else status,
                rows=outcome.record_count,
                error=outcome.error if status in ("failed", "gone") else None,
                api_calls=outcome.api_calls,
                **figures,
            )
        add_course_metadata(context, key, per_course)
        yield dg.MaterializeResult(asset_key=key)
