"""Layer-1 tables: `layer1/<entity>` graph assets, each `load_<entity>(transform_<entity>(staging))`.

The transform op works in chunks of whole courses and hands them to the load op as files, which loads them
all in one transaction. See docs/architecture.md, "Data flow" (steps 3 and 4) and "The Layer-1 hand-over".
"""

import dataclasses
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import dagster as dg

from canvas_assets.defs.assets.common import (
    add_course_metadata,
    course_keys,
    course_metadata,
    dagster_failures,
    database_retries,
    extract_outcomes,
    gone_course_ids,
    report_run_figures,
    run_figures,
)
from canvas_assets.defs.assets.tables import table_metadata
from canvas_assets.defs.handover import HandOverStore
from canvas_assets.defs.partitions import COURSES, SINGLE_RUN
from canvas_assets.defs.resources import SyncProfileResource, WarehouseResource
from canvas_assets.entities import ENTITIES
from canvas_assets.profiles import STAGING_ENTITIES
from canvas_assets.progress import report as report_progress
from canvas_assets.transform import TRANSFORMERS
from canvas_assets.transform.chunks import Chunk, chunk_results, read_rejected, transform_to_chunks


@dataclasses.dataclass
class StagedTransform:
    """What the transform op hands to the load op: where the chunks are, and the run's own figures."""

    chunks: list[Chunk]
    directory: str  # the run's chunk files of this entity: removed after the load
    seconds: float
    not_loaded: dict[int, str]  # course -> why its rows were left as they were (failed fetch, no staging)
    gone: list[int]
    entities_in_run: int  # how many Layer-1 entities this run loads (for progress)
    manifest: str = ""  # where the hand-over stored this (set when the load op's input is read back)

    @property
    def course_ids(self) -> list[int]:
        """The courses whose rows this load replaces (gone ones were soft-deleted already)."""
        return [c for chunk in self.chunks for c in chunk.course_ids]


def build_layer1_asset(entity: str) -> dg.AssetsDefinition:
    transformer = TRANSFORMERS[entity]

    @dg.op(
        name=f"transform_{entity}",
        ins={"staged": dg.In(dg.Nothing)},
        out=dg.Out(StagedTransform, is_required=False, io_manager_key="layer1_handover"),
        tags={"canvas/stage": "transform"},
    )
    def transform_op(
        context: dg.OpExecutionContext,
        warehouse: WarehouseResource,
        sync_profile: SyncProfileResource,
        layer1_handover: dg.ResourceParam[HandOverStore],
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
            fetched = extract_outcomes(wh, context.run_id, entity)
            failed: list[int] = []
            wanted = [c for c in courses if c not in gone]
            if fetched:
                # The extract ran in this run: load what it fetched, and leave the rows of a course it could
                # not fetch as they are (its staging is an older fetch; loading it would pass as fresh).
                failed = sorted(
                    c for c, (status, _) in fetched.items() if status not in ("success", "skipped")
                )
                wanted = [c for c in wanted if c in fetched and c not in failed]
                if failed:
                    context.log.warning(
                        f"{entity} of {len(failed)} course(s) not fetched, left as they were: {failed[:20]}"
                    )
            directory = layer1_handover.scratch(context.run_id, entity)
            chunks = transform_to_chunks(wh, entity, wanted, profile.transform_options(), directory)
            staged = {c for chunk in chunks for c in chunk.course_ids}
            missing = [c for c in courses if c not in staged and c not in gone and c not in fetched]
            if missing:
                context.log.warning(
                    f"{len(missing)} course(s) have no {entity} staging yet and are left as they are: "
                    f"{missing[:20]}"
                )
            not_loaded = {c: "not fetched in this run: its rows were left as they were" for c in failed}
            not_loaded.update({c: "no staging yet: its rows were left as they were" for c in missing})
            yield dg.Output(
                StagedTransform(
                    chunks=chunks,
                    directory=str(directory),
                    seconds=time.monotonic() - t0,
                    not_loaded=not_loaded,
                    gone=sorted(gone),
                    entities_in_run=len(profile.staging_entities),
                )
            )

    @dg.op(name=f"load_{entity}", tags={"canvas/stage": "load"})
    def load_op(
        context: dg.OpExecutionContext,
        staged: StagedTransform,
        warehouse: WarehouseResource,
        layer1_handover: dg.ResourceParam[HandOverStore],
    ) -> None:
        with database_retries(), dagster_failures("load"):
            wh = warehouse.get_warehouse()
            synced_at = datetime.now(timezone.utc)
            t0 = time.monotonic()
            stats = wh.load_chunks(chunk_results(staged.chunks), run_id=context.run_id, synced_at=synced_at)
            rejected = read_rejected(staged.chunks)
            if rejected:
                wh.write_rejected(rejected, run_id=context.run_id)
                context.log.warning(
                    f"{len(rejected)} {entity} record(s) quarantined in canvas_rejected_records; "
                    f"first: {rejected[0].reason}"
                )
            load_seconds = time.monotonic() - t0
            rows = sum(chunk.rows for chunk in staged.chunks)
            records_in = sum(chunk.records_in for chunk in staged.chunks)
            per_course: dict[int, dict] = {
                c: course_metadata(status="success", rows=chunk.rows_of.get(c, 0))
                for chunk in staged.chunks
                for c in chunk.course_ids
            }
            kept = kept_for_incomplete_lists(staged.chunks)
            for c, why in kept.items():
                per_course[c]["canvas/soft_delete_skipped"] = why
            if kept:
                context.log.warning(
                    f"{entity}: nothing soft-deleted in {len(kept)} course(s) whose list was incomplete "
                    f"(records quarantined without their key), rows left live: {sorted(kept)[:20]}"
                )
            per_course.update({c: course_metadata(status="gone", rows=0) for c in staged.gone})
            per_course.update(
                {
                    c: {**course_metadata(status="failed", rows=0), "canvas/error": why}
                    for c, why in staged.not_loaded.items()
                }
            )
            add_course_metadata(context, dg.AssetKey(["layer1", entity]), per_course)
            report_run_figures(
                context,
                {
                    f"canvas/rows.{entity}": rows,
                    f"canvas/rejected.{entity}": len(rejected),
                    f"canvas/transform_seconds.{entity}": round(staged.seconds, 3),
                    f"canvas/load_seconds.{entity}": round(load_seconds, 3),
                },
            )
            figures = run_figures(context.instance, context.run_id)
            loaded = sum(1 for k in figures if k.startswith("canvas/rows."))
            report_progress("layer1", loaded, staged.entities_in_run, f"{entity}: {rows} rows")
            context.log.info(
                f"layer1/{entity}: {rows} rows of {len(staged.course_ids)} course(s) "
                f"({records_in} records in, {len(rejected)} rejected, {len(staged.chunks)} chunk(s)); "
                f"transform {staged.seconds:.2f}s, load {load_seconds:.2f}s; {stats.to_metadata()}"
                + (f"; planner statistics refreshed: {', '.join(stats.analyzed)}" if stats.analyzed else "")
            )
            # Last, so that a step retried after anything above failed still finds its chunks.
            layer1_handover.release(staged)

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


def kept_for_incomplete_lists(chunks: list[Chunk]) -> dict[int, str]:
    """Course -> why none of its rows of some table was soft-deleted: a record of its list was quarantined
    without its key, or a module with its items (the operator sees which in canvas_rejected_records)."""
    tables: dict[int, list[str]] = {}
    for chunk in chunks:
        for name, courses in chunk.incomplete.items():
            for c in courses:
                tables.setdefault(c, []).append(name)
    return {
        c: (
            f"{', '.join(sorted(names))}: a record was quarantined without its key (see "
            "canvas_rejected_records), so the list was not complete: no row was soft-deleted and the "
            "course was not confirmed"
        )
        for c, names in tables.items()
    }


LAYER1_ASSETS = [build_layer1_asset(entity) for entity in STAGING_ENTITIES]
