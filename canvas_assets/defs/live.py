"""Live events in Dagster: the live feed as an asset with a freshness policy in minutes, per-course lag
observations, and the reconciliation check that runs after each nightly sync.

The consumer (`canvas-assets live`) reports these without a run, once per interval; what each one means and
why: docs/operations.md, "Watch it in Dagster".
"""

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg

from canvas_assets.defs.assets.common import retry_on_lost_database
from canvas_assets.defs.checks import run_course_ids
from canvas_assets.defs.partitions import COURSE_PARTITIONS_NAME
from canvas_assets.defs.resources import WarehouseResource
from canvas_assets.live.apply import ApplyStats
from canvas_assets.live.reconcile import reconcile

LIVE_KEY = dg.AssetKey("canvas_live_events")
LIVE_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=15), warn_window=timedelta(minutes=5)
)
HEARTBEAT_S = 120.0
LIVE_FED = dg.AssetKey(["layer1", "submissions"])

LIVE_EVENTS = dg.AssetSpec(
    LIVE_KEY,
    group_name="live",
    kinds={"canvas", "sqs"},
    freshness_policy=LIVE_FRESHNESS,
    deps=[dg.AssetKey(["layer1", "submissions"]), dg.AssetKey(["layer1", "enrollments"])],
    description=(
        "Canvas Live Events applied to the Layer-1 tables (`canvas_submissions`, `canvas_enrollments` "
        "scores, their history, assignments, enrollment states) by `canvas-assets live`, within seconds of "
        "the change in Canvas. Materialized by the consumer once per reporting interval (and at least every "
        "2 minutes while it runs): stale means the consumer is down or stuck. The inbox is the warehouse "
        "table `canvas_live_events`."
    ),
)


def feed_metadata(stats: ApplyStats) -> dict[str, Any]:
    """The figures of one reporting interval, as materialization metadata (`live/lag_s`: the largest, over
    the interval's courses, of the lag from a course's newest event to the commit that applied it)."""
    newest = max(stats.last_event.values(), default=None)
    meta: dict[str, Any] = {
        "live/events": dg.MetadataValue.int(stats.events),
        "live/applied": dg.MetadataValue.int(stats.outcomes.get("applied", 0)),
        "live/unchanged": dg.MetadataValue.int(stats.outcomes.get("unchanged", 0)),
        "live/stale": dg.MetadataValue.int(stats.outcomes.get("stale", 0)),
        "live/unmatched": dg.MetadataValue.int(stats.outcomes.get("unmatched", 0)),
        "live/rows_written": dg.MetadataValue.int(stats.rows_written),
        "live/courses": dg.MetadataValue.int(len(stats.last_event)),
    }
    if newest is not None:
        meta["live/last_event_time"] = dg.MetadataValue.timestamp(newest)
        meta["live/lag_s"] = dg.MetadataValue.float(round(max(stats.last_lag_s.values(), default=0.0), 3))
    return meta


class DagsterReporter:
    """The consumer's reporter: one feed materialization per interval with events (or per heartbeat),
    one observation per course that changed. Courses not registered as partitions are left out."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.last_report = 0.0

    def __call__(self, stats: ApplyStats) -> None:
        now = datetime.now(timezone.utc)
        if not stats.events and now.timestamp() - self.last_report < HEARTBEAT_S:
            return
        self.instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=LIVE_KEY, metadata=feed_metadata(stats))
        )
        self.last_report = now.timestamp()
        if not stats.last_event:
            return
        known = set(self.instance.get_dynamic_partitions(COURSE_PARTITIONS_NAME))
        for course, newest in sorted(stats.last_event.items()):
            if str(course) not in known:
                continue
            self.instance.report_runless_asset_event(
                dg.AssetObservation(
                    asset_key=LIVE_FED,
                    partition=str(course),
                    metadata={
                        "live/last_event_time": dg.MetadataValue.timestamp(newest),
                        "live/lag_s": dg.MetadataValue.float(round(stats.last_lag_s.get(course, 0.0), 3)),
                    },
                )
            )


@dg.asset_check(
    asset=dg.AssetKey(["layer1", "enrollments"]),
    name="live_matches_rest",
    description=(
        "After the sync: values the live feed wrote that the REST sync then found different (REST wins; "
        "the count is the live feed's health). Live values newer than the REST fetch are kept (written back "
        "if the load overwrote them)."
    ),
    additional_deps=[dg.AssetKey(["layer1", "submissions"]), dg.AssetKey(["layer1", "assignments"])],
)
@retry_on_lost_database
def live_matches_rest(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    ids = run_course_ids(context)
    result = reconcile(warehouse.get_warehouse().engine, ids)
    return dg.AssetCheckResult(
        passed=result.disagreements == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "courses_checked": len(ids),
            "live_rows_checked": result.rows_checked,
            "values_checked": result.values_checked,
            "disagreements": result.disagreements,
            "reapplied": result.reapplied,
            "examples": dg.MetadataValue.json(result.examples),
        },
    )


LIVE_ASSETS: Sequence[dg.AssetSpec] = [LIVE_EVENTS]
LIVE_CHECKS = [live_matches_rest]
