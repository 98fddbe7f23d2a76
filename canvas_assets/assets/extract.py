"""`canvas_extract`: one multi-asset that fetches every staging entity of the run's courses at once."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from canvas_assets.assets.common import CANVAS_RETRY_POLICY, course_keys, dagster_failures
from canvas_assets.canvas.resource import CanvasResource
from canvas_assets.extract import Extractor, ExtractReport
from canvas_assets.partitions import COURSES, SINGLE_RUN
from canvas_assets.profiles import STAGING_ENTITIES, SyncProfileResource
from canvas_assets.warehouse.resource import WarehouseResource

STAGING_DESCRIPTIONS = {
    "courses": "Raw course objects (with term, student count, and the profile's extra course fields).",
    "students": "Raw users with a student enrollment in the course.",
    "enrollments": "Raw enrollments of every type and state but deleted, with their grades.",
    "assignments": "Raw assignments of the course.",
    "modules": "Raw modules of the course with all of their items.",
    "student_summaries": "Raw analytics student summaries (page views, participations, tardiness).",
}


def staging_key(entity: str) -> dg.AssetKey:
    return dg.AssetKey(["staging", entity])


@dg.multi_asset(
    name="canvas_extract",
    specs=[
        dg.AssetSpec(
            staging_key(e),
            skippable=True,
            group_name="staging",
            description=STAGING_DESCRIPTIONS[e],
            kinds={"canvas", "sql"},
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
        entities = [
            e for e in STAGING_ENTITIES if staging_key(e) in context.selected_asset_keys and profile.wants(e)
        ]
        skipped = [
            e for e in STAGING_ENTITIES if staging_key(e) in context.selected_asset_keys and e not in entities
        ]
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

        def progress(course) -> None:
            nonlocal done
            done += 1
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
        failed = report.course_ids("failed")
        if failed and len(failed) == len(courses):
            first = report.courses[failed[0]].error
            assert first is not None
            first.message = f"every course of the run failed; first: course {failed[0]}: {first.message}"
            raise first
    yield from _results(entities, report, profile.name)


def _results(entities: list[str], report: ExtractReport, profile_name: str) -> Iterator[dg.MaterializeResult]:
    records = report.records_by_entity()
    m = report.metrics
    shared: dict[str, Any] = {
        "profile": profile_name,
        "courses": len(report.courses),
        "courses_ok": len(report.course_ids("success")),
        "courses_failed": dg.MetadataValue.json(report.course_ids("failed")),
        "courses_gone": dg.MetadataValue.json(report.course_ids("gone")),
        "api_calls": int(m.get("requests", 0)),
        "retries": int(m.get("retries", 0)),
        "throttled": int(m.get("throttled", 0)),
        "wait_seconds": round(float(m.get("wait_seconds", 0.0)), 3),
        "fetch_seconds": round(report.fetch_seconds, 3),
        "staging_write_seconds": round(report.staging_write_seconds, 3),
        "records_by_entity": dg.MetadataValue.json(records),
    }
    for entity in entities:
        yield dg.MaterializeResult(
            asset_key=staging_key(entity),
            metadata={
                **shared,
                "records": records.get(entity, 0),
                "dagster/row_count": records.get(entity, 0),
            },
        )
