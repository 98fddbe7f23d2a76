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

from canvas_assets.assets.common import (
    add_course_metadata,
    course_keys,
    course_metadata,
    dagster_failures,
    database_retries,
    extract_outcomes,
    gone_course_ids,
    record_run_figures,
)
from canvas_assets.assets.tables import table_metadata
from canvas_assets.entities import ENTITIES
from canvas_assets.errors import TransformationError
from canvas_assets.partitions import COURSES, SINGLE_RUN
from canvas_assets.profiles import STAGING_ENTITIES, SyncProfileResource
from canvas_assets.progress import report as report_progress
from canvas_assets.transform import TRANSFORMERS, TransformResult
from canvas_assets.warehouse.resource import WarehouseResource


@dataclasses.dataclass
class StagedTransform:
    """What the transform op hands to the load op."""

    result: TransformResult
    course_ids: list[int]  # the courses whose rows this load replaces (gone ones were soft-deleted already)
    seconds: float
    not_loaded: dict[int, str]  # course -> why its rows were left as they were (failed fetch, no staging)
    gone: list[int]
    entities_in_run: int  # how many Layer-1 entities this run loads (for progress)


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
        with database_retries(), dagster_failures("transform"):
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
            failed: list[int] = []
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
            not_loaded = {c: "not fetched in this run: its rows were left as they were" for c in failed}
            not_loaded.update({c: "no staging yet: its rows were left as they were" for c in missing})
            yield dg.Output(
                StagedTransform(
                    result=result,
                    course_ids=sorted(staged),
                    seconds=time.monotonic() - t0,
                    not_loaded=not_loaded,
                    gone=sorted(gone),
                    entities_in_run=len(profile.staging_entities),
                )
            )

    @dg.op(name=f"load_{entity}", tags={"canvas/stage": "load"})
    def load_op(
        context: dg.OpExecutionContext, staged: StagedTransform, warehouse: WarehouseResource
    ) -> None:
        with database_retries(), dagster_failures("load"):
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
            rows_of = _rows_per_course(staged.result)
            per_course: dict[int, dict] = {
                c: course_metadata(status="success", rows=rows_of.get(c, 0)) for c in staged.course_ids
            }
            per_course.update({c: course_metadata(status="gone", rows=0) for c in staged.gone})
            per_course.update(
                {
                    c: {**course_metadata(status="failed", rows=0), "canvas/error": why}
                    for c, why in staged.not_loaded.items()
                }
            )
            add_course_metadata(context, dg.AssetKey(["layer1", entity]), per_course)
            record_run_figures(
                context,
                {
                    f"canvas/rows.{entity}": str(rows),
                    f"canvas/rejected.{entity}": str(len(staged.result.rejected)),
                    f"canvas/transform_seconds.{entity}": f"{staged.seconds:.3f}",
                    f"canvas/load_seconds.{entity}": f"{load_seconds:.3f}",
                },
            )
            run = context.instance.get_run_by_id(context.run_id)
            loaded = sum(1 for k in (run.tags if run else {}) if k.startswith("canvas/rows."))
            report_progress("layer1", loaded, staged.entities_in_run, f"{entity}: {rows} rows")
            context.log.info(
                f"layer1/{entity}: {rows} rows of {len(staged.course_ids)} course(s) "
                f"({staged.result.records_in} records in, {len(staged.result.rejected)} rejected); "
                f"transform {staged.seconds:.2f}s, load {load_seconds:.2f}s; {stats.to_metadata()}"
            )
            # The frames are in the warehouse now. An in-process run's IO manager keeps every op output
            # until the run ends: release the rows, or a run of every entity holds all of them at once.
            staged.result.tables.clear()

    @dg.graph_asset(
        name=entity,
        key_prefix="layer1",
        group_name="layer1",
        partitions_def=COURSES,
        backfill_policy=SINGLE_RUN,
        description=ENTITIES[entity].layer1_description,
        ins={"staged": dg.AssetIn(dg.AssetKey(["staging", entity]), dagster_type=dg.Nothing)},
        kinds={"sql"},
        metadata=table_metadata(*transformer.tables, *ENTITIES[entity].extra_tables),
    )
    def layer1_asset(staged):  # type: ignore[no-untyped-def]
        return load_op(transform_op(staged))

    return layer1_asset


def _rows_per_course(result: TransformResult) -> dict[int, int]:
    """Rows per course over the result's tables that carry a course_id."""
    counts: dict[int, int] = {}
    for df in result.tables.values():
        if "course_id" in df.columns and len(df):
            for course_id, n in df["course_id"].value_counts().items():
                counts[int(course_id)] = counts.get(int(course_id), 0) + int(n)
    return counts


LAYER1_ASSETS = [build_layer1_asset(entity) for entity in STAGING_ENTITIES]
