"""Layer-1 tables: `layer1/<entity>` graph assets, each `load_<entity>(transform_<entity>(staging))`.

The transformer op reads the run's courses from staging and turns raw Canvas records into typed rows
(one registry of transformers, shared with the tests); the load op upserts them in one transaction,
soft-deletes what vanished and records score history. Both see every course of a ranged run.
"""

import dataclasses
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import dagster as dg

from canvas_assets.assets.common import course_keys, dagster_failures, extract_outcomes, gone_course_ids
from canvas_assets.errors import TransformationError
from canvas_assets.partitions import COURSES, SINGLE_RUN
from canvas_assets.profiles import STAGING_ENTITIES, SyncProfileResource
from canvas_assets.transform import TRANSFORMERS, TransformResult
from canvas_assets.warehouse.resource import WarehouseResource

LAYER1_DESCRIPTIONS = {
    "courses": "`canvas_courses`: one row per course, with term, visibility and (by profile) syllabus and settings.",
    "students": "`canvas_students`: the people enrolled as students, with SIS and login ids and email.",
    "enrollments": "`canvas_enrollments` with current/final scores and grades; changes go to "
    "`canvas_score_history` (grades over time).",
    "assignments": "`canvas_assignments`: due dates, points, grading type, submission types.",
    "modules": "`canvas_modules` and `canvas_module_items`: course structure and content.",
    "student_summaries": "`canvas_student_summaries`: page views, participations and tardiness per student.",
}


@dataclasses.dataclass
class StagedTransform:
    """What the transform op hands to the load op."""

    result: TransformResult
    course_ids: list[
        int
    ]  # the courses whose rows this load replaces (gone courses were soft-deleted already)
    seconds: float


def build_layer1_asset(entity: str) -> dg.AssetsDefinition:
    transformer = TRANSFORMERS[entity]

    @dg.op(
        name=f"transform_{entity}",
        ins={"staged": dg.In(dg.Nothing)},
        out=dg.Out(StagedTransform, is_required=False),
        tags={"canvas/stage": "transform"},
    )
    def transform_op(
        context: dg.OpExecutionContext, warehouse: WarehouseResource, sync_profile: SyncProfileResource
    ) -> Iterator[dg.Output]:
        with dagster_failures("transform"):
            profile = sync_profile.resolve()
            if not profile.wants(entity):
                context.log.info(f"profile {profile.name} switches {entity} off: layer1/{entity} skipped")
                return
            t0 = time.monotonic()
            courses = course_keys(context)
            wh = warehouse.get_warehouse()
            wh.ensure_schema()
            gone = gone_course_ids(wh, courses)
            staged = {cid: recs for cid, recs in wh.read_staging(entity, courses).items() if cid not in gone}
            fetched = extract_outcomes(wh, context.run_id, entity)
            if fetched:
                # The extract ran in this run: load what it fetched, and leave the rows of a course it could
                # not fetch as they are (its staging is an older fetch; loading it would pass as fresh).
                failed = sorted(
                    c for c, (status, _) in fetched.items() if status not in ("success", "skipped")
                )
                staged = {c: r for c, r in staged.items() if c in fetched and c not in failed}
                if failed:
                    context.log.warning(
                        f"{entity} of {len(failed)} course(s) not fetched, left as they were: {failed[:20]}"
                    )
            missing = [c for c in courses if c not in staged and c not in gone and c not in fetched]
            if missing:
                context.log.warning(
                    f"{len(missing)} course(s) have no {entity} staging yet and are left as they are: "
                    f"{missing[:20]}"
                )
            try:
                result = transformer(staged, profile.transform_options())
            except Exception as exc:
                raise TransformationError(
                    f"transformer for {entity} failed: {type(exc).__name__}: {exc}", stage="transform"
                ) from exc
            yield dg.Output(
                StagedTransform(result=result, course_ids=sorted(staged), seconds=time.monotonic() - t0)
            )

    @dg.op(name=f"load_{entity}", tags={"canvas/stage": "load"})
    def load_op(
        context: dg.OpExecutionContext, staged: StagedTransform, warehouse: WarehouseResource
    ) -> None:
        with dagster_failures("load"):
            wh = warehouse.get_warehouse()
            synced_at = datetime.now(timezone.utc)
            t0 = time.monotonic()
            stats = wh.load(
                staged.result, course_ids=staged.course_ids, run_id=context.run_id, synced_at=synced_at
            )
            if staged.result.rejected:
                wh.write_rejected(staged.result.rejected, run_id=context.run_id)
                context.log.warning(
                    f"{len(staged.result.rejected)} {entity} record(s) quarantined in canvas_rejected_records; "
                    f"first: {staged.result.rejected[0].reason}"
                )
            load_seconds = time.monotonic() - t0
            rows = sum(len(df) for df in staged.result.tables.values())
            context.add_output_metadata(
                {
                    "dagster/row_count": rows,
                    "courses": len(staged.course_ids),
                    "records_in": staged.result.records_in,
                    "rows_loaded": dg.MetadataValue.json(
                        {t: len(df) for t, df in staged.result.tables.items()}
                    ),
                    "rejected": len(staged.result.rejected),
                    "load_stats": dg.MetadataValue.json(stats.to_metadata()),
                    "transform_seconds": round(staged.seconds, 3),
                    "load_seconds": round(load_seconds, 3),
                    "rows_per_second": round(rows / load_seconds, 1) if load_seconds > 0 else None,
                }
            )

    @dg.graph_asset(
        name=entity,
        key_prefix="layer1",
        group_name="layer1",
        partitions_def=COURSES,
        backfill_policy=SINGLE_RUN,
        description=LAYER1_DESCRIPTIONS[entity],
        ins={"staged": dg.AssetIn(dg.AssetKey(["staging", entity]), dagster_type=dg.Nothing)},
        kinds={"sql"},
    )
    def layer1_asset(staged):  # type: ignore[no-untyped-def]
        return load_op(transform_op(staged))

    return layer1_asset


LAYER1_ASSETS = [build_layer1_asset(entity) for entity in STAGING_ENTITIES]
