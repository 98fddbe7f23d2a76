"""The adapters to Dagster's private API still find what they rely on (README "Dagster release").

Everything canvas_assets takes from `dagster._...` lives in three modules, one per concern:
`canvas_assets/instance/storage.py` (the instance storage), `canvas_assets/instance/inprocess.py` (the
in-process run) and `canvas_assets/instance/step_metadata.py` (a step's per-course metadata). A Dagster
upgrade that moves, renames or changes one of the names they use fails here first, with a message that
says which adapter to look at, instead of somewhere deep in a sync.
"""

import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from canvas_assets_tests.harness import ROOT

STORAGE = "canvas_assets/instance/storage.py"
INPROCESS = "canvas_assets/instance/inprocess.py"
STEP_METADATA = "canvas_assets/instance/step_metadata.py"
ADAPTERS = (STORAGE, INPROCESS, STEP_METADATA)


def changed(adapter: str, what: str) -> str:
    return (
        f"Dagster {dg.__version__} changed {what}: {adapter} relies on it; see README 'Dagster release' "
        "(the adapter must follow the new release, or Dagster stay pinned)"
    )


def name_in(adapter: str, dotted: str) -> Any:
    """`module.attr` of Dagster, or a failure naming the adapter that needs it."""
    module, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        pytest.fail(changed(adapter, f"{dotted} (gone)"))


def takes(adapter: str, fn: Callable[..., Any], label: str, *params: str) -> None:
    """`fn` still accepts each keyword of `params`."""
    accepted = inspect.signature(fn).parameters
    missing = [p for p in params if p not in accepted]
    assert not missing, changed(adapter, f"the parameters of {label} (no {', '.join(missing)})")


# --- no private import anywhere else --------------------------------------------------------------------
def test_only_the_adapters_import_dagster_private_modules():
    private = re.compile(r"^\s*(from|import)\s+dagster\._", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "canvas_assets").rglob("*.py"))
        if str(path.relative_to(ROOT)) not in ADAPTERS and private.search(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, f"dagster._ imported outside the adapters ({', '.join(ADAPTERS)}): {offenders}"


def test_the_readme_names_the_pinned_dagster_release_and_setup_cfg_pins_it():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    assert "## Dagster release" in readme
    for pin in ("dagster==1.13.27", "dagster-postgres==0.29.27", "dagster-dg-cli==1.13.27"):
        assert pin in setup.replace(" ", ""), f"setup.cfg does not pin {pin}"
        assert pin.split("==")[1] in readme, f"README 'Dagster release' does not name {pin}"
    assert dg.__version__ == "1.13.27", changed(STORAGE, "its release (the adapters were checked on 1.13.27)")


# --- the instance storage -------------------------------------------------------------------------------
def test_the_storage_adapter_finds_the_storage_internals_it_extends():
    for dotted in (
        "dagster._core.storage.base_storage.DagsterStorage",
        "dagster._core.storage.event_log.base.EventLogStorage",
        "dagster._core.storage.runs.base.RunStorage",
        "dagster._core.storage.schedules.base.ScheduleStorage",
        "dagster._core.storage.config.pg_config",
        "dagster._core.storage.event_log.schema.SqlEventLogStorageTable",
        "dagster._serdes.ConfigurableClass",
        "dagster._serdes.ConfigurableClassData",
        "dagster._config.Field",
        "dagster._config.StringSource",
        "dagster._core.event_api.EventRecordsResult",
        "dagster._core.events.AssetMaterializationPlannedData",
        "dagster._core.definitions.events.AssetMaterializationFailure",
        "dagster._core.definitions.events.AssetMaterializationFailureReason",
        "dagster._core.definitions.events.AssetMaterializationFailureType",
    ):
        name_in(STORAGE, dotted)
    from dagster_postgres.event_log import PostgresEventLogStorage

    for method in (
        "_get_event_records_result",
        "_event_to_row",
        "_store_asset_event_tags",
        "_store_asset_event",
        "_connect",
        "index_transaction",
        "prepare_insert_event_batch",
        "get_records_for_run",
        "get_latest_storage_id_by_partition",
        "get_asset_status_cache_values",
        "fetch_failed_materializations",
        "store_event_batch",
        "supports_partition_subset_in_asset_materialization_planned_events",
        "can_store_asset_failure_events",
    ):
        assert hasattr(PostgresEventLogStorage, method), changed(
            STORAGE, f"PostgresEventLogStorage.{method} (gone)"
        )
    takes(
        STORAGE,
        PostgresEventLogStorage.get_latest_storage_id_by_partition,
        "get_latest_storage_id_by_partition",
        "asset_key",
        "event_type",
        "partitions",
    )
    takes(
        STORAGE,
        PostgresEventLogStorage.get_asset_status_cache_values,
        "get_asset_status_cache_values",
        "partitions_defs_by_key",
        "context",
    )
    for builder in ("build_asset_failed_to_materialize_event", "build_asset_materialization_planned_event"):
        assert hasattr(dg.DagsterEvent, builder), changed(STORAGE, f"DagsterEvent.{builder} (gone)")


def test_the_ui_reads_partition_status_through_the_storage_method_the_adapter_extends():
    """Failed courses show as Failed because the storage adds them in `get_asset_status_cache_values`: the
    partition status the UI asks for must still be loaded through it, and still be this cache value."""
    cache = name_in(STORAGE, "dagster._core.storage.partition_status_cache.AssetStatusCacheValue")
    loader = inspect.getsource(cache._blocking_batch_load)
    assert "get_asset_status_cache_values" in loader, changed(
        STORAGE, "how the partition status is loaded (AssetStatusCacheValue no longer asks the storage)"
    )
    assert {
        "latest_storage_id",
        "partitions_def_id",
        "serialized_materialized_partition_subset",
        "serialized_failed_partition_subset",
        "serialized_in_progress_partition_subset",
    } <= set(cache._fields), changed(STORAGE, "the fields of AssetStatusCacheValue")
    subsets = name_in(STORAGE, "dagster_graphql.implementation.fetch_partition_subsets.get_partition_subsets")
    assert subsets is not None


def test_the_failure_event_the_storage_builds_is_still_a_failure_of_that_partition():
    failure = name_in(STORAGE, "dagster._core.definitions.events.AssetMaterializationFailure")
    failure_type = name_in(STORAGE, "dagster._core.definitions.events.AssetMaterializationFailureType")
    reason = name_in(STORAGE, "dagster._core.definitions.events.AssetMaterializationFailureReason")
    event = dg.DagsterEvent.build_asset_failed_to_materialize_event(
        "job",
        "step",
        failure(
            asset_key=dg.AssetKey(["staging", "courses"]),
            partition="1000",
            description="a test failure",
            failure_type=failure_type.FAILED,
            reason=reason.FAILED_TO_MATERIALIZE,
        ),
    )
    assert event.is_asset_failed_to_materialize, changed(STORAGE, "the failure event's type")
    assert (event.asset_key, event.partition) == (dg.AssetKey(["staging", "courses"]), "1000"), changed(
        STORAGE, "where a failure event keeps its asset and partition"
    )


# --- the in-process run ---------------------------------------------------------------------------------
def test_the_in_process_run_adapter_finds_the_execution_internals_it_rebuilds():
    normalize = name_in(INPROCESS, "dagster._core.execution.execute_in_process.type_check_and_normalize_args")
    takes(INPROCESS, normalize, "type_check_and_normalize_args", "run_config", "asset_selection")
    assert len(normalize(run_config={}, asset_selection=[])) == 6, changed(
        INPROCESS, "what type_check_and_normalize_args answers (not 6 values)"
    )
    takes(
        INPROCESS,
        name_in(INPROCESS, "dagster._core.execution.execute_in_process.merge_run_tags"),
        "merge_run_tags",
        "job_def",
        "partition_key",
        "tags",
        "asset_selection",
        "instance",
        "run_config",
    )
    takes(
        INPROCESS,
        name_in(INPROCESS, "dagster._core.definitions.job_base.InMemoryJob"),
        "InMemoryJob",
        "job_def",
    )
    takes(
        INPROCESS,
        name_in(INPROCESS, "dagster._core.execution.api.create_execution_plan"),
        "create_execution_plan",
        "run_config",
        "instance_ref",
    )
    takes(
        INPROCESS,
        name_in(INPROCESS, "dagster._core.execution.api.ExecuteRunWithPlanIterable"),
        "ExecuteRunWithPlanIterable",
        "execution_plan",
        "iterator",
        "execution_context_manager",
    )
    name_in(INPROCESS, "dagster._core.execution.api.job_execution_iterator")
    name_in(INPROCESS, "dagster._core.execution.context_creation_job.orchestration_context_event_generator")
    takes(
        INPROCESS,
        name_in(INPROCESS, "dagster._core.execution.context_creation_job.PlanOrchestrationContextManager"),
        "PlanOrchestrationContextManager",
        "context_event_generator",
        "job",
        "execution_plan",
        "dagster_run",
        "instance",
        "run_config",
        "executor_defs",
        "output_capture",
        "raise_on_error",
    )
    takes(
        INPROCESS,
        dg.JobDefinition.as_ephemeral_job,
        "JobDefinition.as_ephemeral_job",
        "resource_defs",
        "input_values",
        "asset_selection",
    )
    takes(
        INPROCESS,
        dg.DagsterInstance.create_run_for_job,
        "DagsterInstance.create_run_for_job",
        "job_def",
        "run_config",
        "tags",
        "asset_selection",
        "execution_plan",
    )


@dg.asset
def adapter_upstream() -> int:
    return 1


@dg.asset
def adapter_downstream(adapter_upstream: int) -> int:
    return adapter_upstream + 1


def test_an_in_process_run_stores_its_run_and_events_in_the_instance_as_it_streams():
    from canvas_assets.instance.inprocess import start_run

    defs = dg.Definitions(
        assets=[adapter_upstream, adapter_downstream],
        jobs=[dg.define_asset_job("adapter_job", tags={"from": "job"})],
    )
    job = defs.resolve_job_def("adapter_job")
    with dg.instance_for_test() as instance:
        run, events = start_run(
            job,
            instance,
            run_config={},
            tags={"canvas/profile": "TEST"},
            asset_selection=[dg.AssetKey("adapter_downstream"), dg.AssetKey("adapter_upstream")],
        )
        assert instance.get_run_by_id(run.run_id) is not None, changed(INPROCESS, "when the run is created")
        types = [event.event_type for event in events]
        stored = instance.get_run_by_id(run.run_id)
        assert stored is not None and stored.is_success, changed(INPROCESS, f"how a run executes: {types}")
        assert {"from": "job", "canvas/profile": "TEST"}.items() <= stored.tags.items(), changed(
            INPROCESS, "the run's tags"
        )
        materialized = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        assert len(materialized) == 2, changed(INPROCESS, "what the run stores in the instance")
        assert dg.DagsterEventType.RUN_SUCCESS in types, changed(INPROCESS, "the events the run streams")


# --- a step's per-course metadata ------------------------------------------------------------------------
def test_the_step_metadata_adapter_finds_the_accumulator_it_replaces():
    handle = name_in(STEP_METADATA, "dagster._core.execution.context.metadata_logging.AssetMetadataHandle")
    accumulator = name_in(
        STEP_METADATA, "dagster._core.execution.context.metadata_logging.OutputMetadataAccumulator"
    )
    key = handle(asset_key=dg.AssetKey("a"), partition_key="1")
    assert key == handle(asset_key=dg.AssetKey("a"), partition_key="1"), changed(
        STEP_METADATA, "AssetMetadataHandle (no longer a value that keys a mapping)"
    )
    merged = accumulator(per_output_metadata={key: {"x": 1}})
    assert merged.get_asset_metadata(dg.AssetKey("a"), "1") == {"x": 1}, changed(
        STEP_METADATA, "OutputMetadataAccumulator(per_output_metadata=...)"
    )
    system = Path(
        inspect.getfile(name_in(STEP_METADATA, "dagster._core.execution.context.system.StepExecutionContext"))
    )
    assert "self._metadata_accumulator" in system.read_text(encoding="utf-8"), changed(
        STEP_METADATA, "StepExecutionContext._metadata_accumulator (gone)"
    )


COURSES = dg.StaticPartitionsDefinition(["1", "2", "3"])


@dg.asset(partitions_def=COURSES, backfill_policy=dg.BackfillPolicy.single_run())
def adapter_courses(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    from canvas_assets.instance.step_metadata import merge_partition_metadata

    merge_partition_metadata(
        context,
        context.assets_def.key,
        {k: {"course": int(k), "status": "ok"} for k in context.partition_keys},
    )
    merge_partition_metadata(context, context.assets_def.key, {"2": {"status": "failed"}})
    return dg.MaterializeResult()


def test_each_partition_of_a_ranged_run_gets_the_metadata_merged_for_it():
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [adapter_courses],
            instance=instance,
            tags={"dagster/asset_partition_range_start": "1", "dagster/asset_partition_range_end": "3"},
        )
        assert result.success
        meta = {
            e.materialization.partition: {k: v.value for k, v in e.materialization.metadata.items()}
            for e in (ev.event_specific_data for ev in result.get_asset_materialization_events())
        }
    assert meta == {
        "1": {"course": 1, "status": "ok"},
        "2": {"course": 2, "status": "failed"},
        "3": {"course": 3, "status": "ok"},
    }, changed(
        STEP_METADATA, "how a step's accumulated asset metadata reaches each partition's materialization"
    )
