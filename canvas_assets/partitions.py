"""The course partitions: one partition per Canvas course id, registered by `canvas_course_catalog`."""

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
