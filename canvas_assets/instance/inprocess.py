"""The in-process run: a job executed in this process through the instance, its events streamed, not kept.

The adapter to Dagster's run-execution internals (dagster 1.13.27, pinned in setup.cfg; README
"Dagster release"). `start_run` builds the run the way `JobDefinition.execute_in_process` does
(dagster/_core/execution/execute_in_process.py) but hands back its event stream instead of keeping every
event and output; why: docs/architecture.md, "The in-process run".

What it relies on, each checked by canvas_assets_tests/test_dagster_adapters.py:

- `dagster._core.execution.execute_in_process`: `type_check_and_normalize_args(run_config=...,
  asset_selection=...)` answering a 6-tuple (run config, op selection, asset selection, resource defs,
  partition key, input values) and `merge_run_tags(job_def=, partition_key=, tags=, asset_selection=,
  instance=, run_config=)`;
- `JobDefinition.as_ephemeral_job(resource_defs=, input_values=, asset_selection=)`;
- `dagster._core.definitions.job_base.InMemoryJob(job_def=)`;
- `dagster._core.execution.api`: `create_execution_plan(job, run_config=, instance_ref=)`,
  `ExecuteRunWithPlanIterable(execution_plan=, iterator=, execution_context_manager=)` and
  `job_execution_iterator`;
- `dagster._core.execution.context_creation_job`: `PlanOrchestrationContextManager(context_event_
  generator=, job=, execution_plan=, dagster_run=, instance=, run_config=, executor_defs=,
  output_capture=, raise_on_error=)` and `orchestration_context_event_generator`;
- `DagsterInstance.create_run_for_job(job_def=, run_config=, tags=, asset_selection=, execution_plan=)`.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.execution.api import (
    ExecuteRunWithPlanIterable,
    create_execution_plan,
    job_execution_iterator,
)
from dagster._core.execution.context_creation_job import (
    PlanOrchestrationContextManager,
    orchestration_context_event_generator,
)
from dagster._core.execution.execute_in_process import merge_run_tags, type_check_and_normalize_args


def start_run(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    *,
    run_config: Mapping[str, Any],
    tags: Mapping[str, str],
    asset_selection: Sequence[dg.AssetKey] = (),
) -> tuple[dg.DagsterRun, Iterable[dg.DagsterEvent]]:
    """Create the run of `job` in `instance` (as `job.execute_in_process(..., raise_on_error=False)` would:
    same tags, run config and asset selection, steps run one after another by the in-process executor,
    outputs handed between ops in memory) and return it with its event stream, which executes the run
    as it is iterated. Nothing of the run is kept here: the caller keeps what it needs."""
    run_config, _, selection, resource_defs, _, input_values = type_check_and_normalize_args(
        run_config=run_config, asset_selection=asset_selection
    )
    ephemeral = job.as_ephemeral_job(
        resource_defs=resource_defs, input_values=input_values, asset_selection=selection
    )
    run_tags = merge_run_tags(
        job_def=job,
        partition_key=None,
        tags=tags,
        asset_selection=selection,
        instance=instance,
        run_config=run_config,
    )
    in_memory = InMemoryJob(job_def=ephemeral)
    plan = create_execution_plan(
        in_memory, run_config=run_config, instance_ref=instance.get_ref() if instance.is_persistent else None
    )
    run = instance.create_run_for_job(
        job_def=ephemeral,
        run_config=run_config,
        tags={**ephemeral.run_tags, **run_tags},
        asset_selection=frozenset(selection),
        execution_plan=plan,
    )
    events = ExecuteRunWithPlanIterable(
        execution_plan=plan,
        iterator=job_execution_iterator,
        execution_context_manager=PlanOrchestrationContextManager(
            context_event_generator=orchestration_context_event_generator,
            job=in_memory,
            execution_plan=plan,
            dagster_run=run,
            instance=instance,
            run_config=run_config,
            executor_defs=None,
            output_capture=None,
            raise_on_error=False,
        ),
    )
    return run, events
