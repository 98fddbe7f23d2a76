"""The course partitions: one partition per Canvas course id, registered by `canvas_course_catalog`."""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

COURSE_PARTITIONS_NAME = "canvas_course"
COURSES = dg.DynamicPartitionsDefinition(name=COURSE_PARTITIONS_NAME)

# Every course-partitioned asset runs a backfill of any number of courses as one run per contiguous
# range of keys: the run's own concurrency, not Dagster's per-run overhead, then sets the pace.
SINGLE_RUN = dg.BackfillPolicy.single_run()

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def range_tags(first: str, last: str) -> dict[str, str]:
    """Run tags that make one run cover the course keys first..last (in partition order)."""
    return {RANGE_START_TAG: first, RANGE_END_TAG: last}


PARTITION_TAG = "dagster/partition"


def course_keys_of_run(instance: Any, tags: Mapping[str, str]) -> list[str]:
    """The course keys a run covers, from its partition tags (for checks and sensors, which have no
    partition of their own); [] when the tags name no known course range."""
    if PARTITION_TAG in tags:
        return [tags[PARTITION_TAG]]
    first, last = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if not first or not last:
        return []
    keys = instance.get_dynamic_partitions(COURSE_PARTITIONS_NAME)
    if first not in keys or last not in keys:
        return []
    return list(keys[keys.index(first) : keys.index(last) + 1])


def plan_course_runs(all_keys: Sequence[str], wanted: Sequence[str]) -> list[list[str]]:
    """The runs that sync `wanted`: one per contiguous range of course keys, in partition order.

    This is exactly how Dagster splits a backfill of single-run assets, so a backfill launched from the
    UI, the nightly schedule, the new-courses sensor and `canvas-assets sync` all make the same runs.
    Every caller plans with this one function.
    """
    wanted_set = set(wanted)
    runs: list[list[str]] = []
    current: list[str] = []
    for key in all_keys:
        if key in wanted_set:
            current.append(key)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs
