"""A step's per-partition materialization metadata, merged in one go: the adapter to Dagster's step
metadata accumulator (dagster 1.13.27, pinned in setup.cfg; README "Dagster release").

`merge_partition_metadata` does in one pass what one public `context.add_asset_metadata` call per course
does in quadratic time (docs/architecture.md, "Per-course metadata"); the caller checks the keys once.

What it relies on, each checked by canvas_assets_tests/test_dagster_adapters.py:

- `OpExecutionContext.get_step_execution_context()` answering a step context with the attribute
  `_metadata_accumulator`, an `OutputMetadataAccumulator` whose `per_output_metadata` maps an
  `AssetMetadataHandle(asset_key=, partition_key=)` to that partition's metadata (a mapping), and which
  the step reads when it builds each partition's materialization;
- `dagster._core.execution.context.metadata_logging`: `AssetMetadataHandle(asset_key=, partition_key=)`
  and `OutputMetadataAccumulator(per_output_metadata=)`.
"""

from collections.abc import Mapping
from typing import Any

import dagster as dg
from dagster._core.execution.context.metadata_logging import (
    AssetMetadataHandle,
    OutputMetadataAccumulator,
)


def merge_partition_metadata(
    context: Any, asset_key: dg.AssetKey, per_partition: Mapping[str, Mapping[str, Any]]
) -> None:
    """Add each partition's metadata to that partition's materialization of `asset_key` in this step,
    as `context.add_asset_metadata(meta, asset_key=asset_key, partition_key=key)` per partition would.
    The keys must be partitions of the run (the caller checks them: this does not)."""
    step = context.get_step_execution_context()
    merged = dict(step._metadata_accumulator.per_output_metadata)
    for partition_key, meta in per_partition.items():
        handle = AssetMetadataHandle(asset_key=asset_key, partition_key=partition_key)
        merged[handle] = {**merged.get(handle, {}), **meta}
    step._metadata_accumulator = OutputMetadataAccumulator(per_output_metadata=merged)
