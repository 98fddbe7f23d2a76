"""Dagster instance storage for canvas-assets: PostgreSQL (embedded locally, a server in production)
with the event-log behaviour that makes a ranged run of thousands of courses cheap and truthful.

Referenced from `dagster.yaml` as `storage: custom: {module: canvas_assets.instance.storage, class:
CanvasStorage, config: ...}`, so every process that opens the instance (CLI, webserver, daemon, run
workers) gets the same behaviour with no environment variable to remember. What it changes, and why:
docs/architecture.md, "The instance storage".

Dagster release: this module is the adapter to Dagster's instance storage internals (dagster 1.13.27,
dagster-postgres 0.29.27, pinned in setup.cfg; README "Dagster release"). What it relies on, each
checked by canvas_assets_tests/test_dagster_adapters.py:

- base classes and config: `dagster._core.storage.base_storage.DagsterStorage`,
  `dagster._core.storage.{event_log,runs,schedules}.base.*Storage`, `dagster._serdes.ConfigurableClass`
  / `ConfigurableClassData`, `dagster._config.Field` / `StringSource`,
  `dagster._core.storage.config.pg_config`, `dagster._check`;
- event-log storage hooks: the properties `supports_partition_subset_in_asset_materialization_planned_
  events` and `can_store_asset_failure_events`, the methods `fetch_failed_materializations`,
  `store_event`, `store_event_batch`, `get_asset_status_cache_values`, and dagster-postgres's private
  helpers `_get_event_records_result`, `_event_to_row`, `_store_asset_event_tags`, `_store_asset_event`,
  `_connect`, `index_transaction`, `prepare_insert_event_batch`, the `_engine` attribute and
  `dagster._core.storage.event_log.schema.SqlEventLogStorageTable`;
- event types: `dagster._core.definitions.events.AssetMaterializationFailure` (+ `...Reason`, `...Type`),
  `dagster._core.events.AssetMaterializationPlannedData`, `DagsterEvent.build_asset_*_event`,
  `dagster._core.storage.partition_status_cache.AssetStatusCacheValue`.
"""

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import dagster._check as check
import sqlalchemy as sa
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterEvent,
    DagsterEventType,
    EventLogEntry,
    EventRecordsFilter,
    PartitionsDefinition,
    partition_loading_context,
)
from dagster._config import Field, StringSource
from dagster._core.definitions.events import (
    AssetMaterializationFailure,
    AssetMaterializationFailureReason,
    AssetMaterializationFailureType,
)
from dagster._core.event_api import EventRecordsResult
from dagster._core.events import AssetMaterializationPlannedData
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.config import pg_config
from dagster._core.storage.event_log.base import EventLogStorage
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._core.storage.partition_status_cache import AssetStatusCacheValue
from dagster._core.storage.runs.base import RunStorage
from dagster._core.storage.schedules.base import ScheduleStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import pg_url_from_config

from canvas_assets.progress import report as report_progress

# Materializations of one step are stored in batches of this many events (one INSERT each).
EVENT_BATCH_SIZE = "1000"
COURSE_STATUS_KEY = "canvas/course_status"
FAILED = "failed"


def storage_config_schema() -> dict[str, Any]:
    """Either a PostgreSQL server (dagster-postgres's `postgres_url` / `postgres_db` fields) or, with
    neither given, the embedded local server (optionally `embedded_data_dir`)."""
    return {**cast(dict, pg_config()), "embedded_data_dir": Field(StringSource, is_required=False)}


def postgres_url_from_config(config: Mapping[str, Any]) -> str:
    if config.get("postgres_url") or config.get("postgres_db"):
        url = pg_url_from_config(config)
        # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, which dagster-postgres does not depend on.
        return "postgresql+psycopg2://" + url.split("://", 1)[1] if url.startswith("postgresql://") else url
    from pathlib import Path

    from canvas_assets.instance.local_store import DAGSTER_DB, embedded_server

    data_dir = config.get("embedded_data_dir")
    return embedded_server(Path(data_dir) if data_dir else None).url(DAGSTER_DB)


class _FromStorageConfig:
    """Every storage class here reads the same config (`storage_config_schema`), so that subprocesses
    rebuild each one from the instance's own config (environment-variable references, not values)."""

    @classmethod
    def config_type(cls) -> Any:
        return storage_config_schema()

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Mapping[str, Any]) -> Any:
        return cls(  # type: ignore[call-arg]
            postgres_url_from_config(config_value),
            config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
        )


class _Pooled:
    """A dagster-postgres storage whose engine is `pooled_engine` instead of its NullPool one."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data: Any = None):
        super().__init__(postgres_url, should_autocreate_tables, inst_data=inst_data)  # type: ignore[call-arg]
        self._engine = pooled_engine(postgres_url)


class CanvasEventLogStorage(_FromStorageConfig, _Pooled, PostgresEventLogStorage):
    """PostgreSQL event log with subset planned events, batched writes and per-course failures."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data: Any = None):
        os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)
        super().__init__(postgres_url, should_autocreate_tables, inst_data=inst_data)
        self._events_stored = 0

    @property
    def supports_partition_subset_in_asset_materialization_planned_events(self) -> bool:
        return True

    @property
    def can_store_asset_failure_events(self) -> bool:
        return True

    def fetch_failed_materializations(
        self,
        records_filter: AssetKey | AssetRecordsFilter,
        limit: int,
        cursor: str | None = None,
        ascending: bool = False,
    ) -> EventRecordsResult:
        """The failure events of an asset (OSS storage answers none): the UI's event history of a course
        partition lists them beside its materializations."""
        if isinstance(records_filter, AssetRecordsFilter):
            event_filter = records_filter.to_event_records_filter(
                event_type=DagsterEventType.ASSET_FAILED_TO_MATERIALIZE, cursor=cursor, ascending=ascending
            )
        else:
            before, after = EventRecordsFilter.get_cursor_params(cursor, ascending)
            event_filter = EventRecordsFilter(
                event_type=DagsterEventType.ASSET_FAILED_TO_MATERIALIZE,
                asset_key=records_filter,
                before_cursor=before,
                after_cursor=after,
            )
        return self._get_event_records_result(event_filter, limit, cursor, ascending)

    def get_asset_status_cache_values(
        self, partitions_defs_by_key: Iterable[tuple[AssetKey, PartitionsDefinition | None]], context: Any
    ) -> Sequence[AssetStatusCacheValue | None]:
        """Dagster's partition status of each asset, with the courses whose last outcome was a failure
        event added to its failed subset (Dagster 1.13 ignores those events: docs/architecture.md, "The
        instance storage")."""
        keys = list(partitions_defs_by_key)
        values = super().get_asset_status_cache_values(keys, context)
        return [
            self._with_failed_courses(asset_key, partitions_def, value)
            for (asset_key, partitions_def), value in zip(keys, values, strict=True)
        ]

    def _with_failed_courses(
        self,
        asset_key: AssetKey,
        partitions_def: PartitionsDefinition | None,
        value: AssetStatusCacheValue | None,
    ) -> AssetStatusCacheValue | None:
        if partitions_def is None:
            return value
        failed_at = self.get_latest_storage_id_by_partition(
            asset_key, DagsterEventType.ASSET_FAILED_TO_MATERIALIZE
        )
        if not failed_at:
            return value
        materialized_at = self.get_latest_storage_id_by_partition(
            asset_key, DagsterEventType.ASSET_MATERIALIZATION, partitions=set(failed_at)
        )
        failed = {p for p, event_id in failed_at.items() if event_id > materialized_at.get(p, 0)}
        with partition_loading_context(dynamic_partitions_store=self._instance):
            # A course removed from the partitions since is no partition to show.
            failed = set(partitions_def.filter_valid_partition_keys(failed))
            if value is None:  # nothing ever materialized or planned: only failures
                empty = partitions_def.empty_subset().serialize()
                value = AssetStatusCacheValue(
                    latest_storage_id=max(failed_at.values()),
                    partitions_def_id=partitions_def.get_serializable_unique_identifier(),
                    serialized_materialized_partition_subset=empty,
                    serialized_failed_partition_subset=empty,
                    serialized_in_progress_partition_subset=empty,
                )
            failed -= set(
                value.deserialize_in_progress_partition_subsets(partitions_def).get_partition_keys()
            )
            if not failed:
                return value
            subset = value.deserialize_failed_partition_subsets(partitions_def).with_partition_keys(failed)
        return value._replace(serialized_failed_partition_subset=subset.serialize())

    def store_event(self, event: EventLogEntry) -> None:
        super().store_event(_as_failure_if_failed(event))
        if _is_run_failure(event):
            self._record_unmaterialized_courses(event)

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        converted = [_as_failure_if_failed(e) for e in events]
        # dagster-postgres drops failure events from batches: store those one by one (few per run).
        materializations = [e for e in converted if not _is_failure(e)]
        if materializations:
            self._store_materialization_batch(materializations)
            self._events_stored += len(materializations)
            report_progress("events", 0, 0, f"{self._events_stored} events stored")
        for event in converted:
            if _is_failure(event):
                super().store_event(event)
        for event in events:
            if _is_run_failure(event):
                self._record_unmaterialized_courses(event)

    def _store_materialization_batch(self, events: list[EventLogEntry]) -> None:
        """What dagster-postgres's store_event_batch does for a step's materializations, with the rows
        sent as one executemany (compiled once, sent in pages) instead of one INSERT statement that
        SQLAlchemy compiles with every row's parameters inlined: a third of the cost per event."""
        if {e.get_dagster_event().event_type for e in events} != {DagsterEventType.ASSET_MATERIALIZATION}:
            super().store_event_batch(events)
            return
        rows = [self._event_to_row(e) for e in events]
        insert = SqlEventLogStorageTable.insert().returning(
            SqlEventLogStorageTable.c.id, sort_by_parameter_order=True
        )
        with self._connect() as conn:
            event_ids = [int(row[0]) for row in conn.execute(insert, rows)]
        with self.index_transaction() as conn:
            self._store_asset_event_tags(conn, events, event_ids)
            # As dagster-postgres does: the asset's record follows the step's last event.
            self._store_asset_event(conn, events[-1], event_ids[-1])

    def _record_unmaterialized_courses(self, run_failure: EventLogEntry) -> None:
        """Per-partition planned + failure events for what a failed run planned but did not store."""
        run_id = run_failure.run_id
        planned: dict[AssetKey, set[str]] = {}
        step_of: dict[AssetKey, str | None] = {}
        for record in self.get_records_for_run(
            run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED, limit=100_000
        ).records:
            event = record.event_log_entry.get_dagster_event()
            data = event.event_specific_data
            if not isinstance(data, AssetMaterializationPlannedData) or data.partitions_subset is None:
                continue  # per-partition planned events already give Dagster what it needs
            planned.setdefault(data.asset_key, set()).update(data.partitions_subset.get_partition_keys())
            step_of[data.asset_key] = event.step_key
        if not planned:
            return
        done: set[tuple[AssetKey, str]] = set()
        for kind in (DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_FAILED_TO_MATERIALIZE):
            for record in self.get_records_for_run(run_id, of_type=kind, limit=1_000_000).records:
                event = record.event_log_entry.get_dagster_event()
                if event.asset_key is not None and event.partition is not None:
                    done.add((event.asset_key, event.partition))
        entries: list[EventLogEntry] = []
        for asset_key, partitions in planned.items():
            for partition in sorted(partitions):
                if (asset_key, partition) in done:
                    continue
                planned_event = DagsterEvent.build_asset_materialization_planned_event(
                    run_failure.job_name or "",
                    step_of[asset_key] or "",
                    AssetMaterializationPlannedData(asset_key, partition=partition),
                )
                failure_event = DagsterEvent.build_asset_failed_to_materialize_event(
                    run_failure.job_name or "",
                    step_of[asset_key],
                    AssetMaterializationFailure(
                        asset_key=asset_key,
                        partition=partition,
                        description="the run failed before this course was stored",
                        failure_type=AssetMaterializationFailureType.FAILED,
                        reason=AssetMaterializationFailureReason.FAILED_TO_MATERIALIZE,
                    ),
                )
                entries += [_entry_like(run_failure, e) for e in (planned_event, failure_event)]
        # Plain rows in the event log are all Dagster's partition status and event history read.
        for start in range(0, len(entries), 1000):
            with self._connect() as conn:
                conn.execute(self.prepare_insert_event_batch(entries[start : start + 1000]))


def _is_failure(event: EventLogEntry) -> bool:
    return event.dagster_event is not None and event.dagster_event.is_asset_failed_to_materialize


def _is_run_failure(event: EventLogEntry) -> bool:
    return event.dagster_event is not None and event.dagster_event.event_type == DagsterEventType.RUN_FAILURE


def _entry_like(template: EventLogEntry, dagster_event: DagsterEvent) -> EventLogEntry:
    return EventLogEntry(
        error_info=None,
        level=template.level,
        user_message=dagster_event.message or "",
        run_id=template.run_id,
        timestamp=template.timestamp,
        step_key=dagster_event.step_key,
        job_name=template.job_name,
        dagster_event=dagster_event,
    )


def _as_failure_if_failed(event: EventLogEntry) -> EventLogEntry:
    """A materialization whose partition metadata says the course failed becomes a failure event."""
    dagster_event = event.dagster_event
    if dagster_event is None or dagster_event.event_type != DagsterEventType.ASSET_MATERIALIZATION:
        return event
    materialization = dagster_event.step_materialization_data.materialization
    status = materialization.metadata.get(COURSE_STATUS_KEY)
    if getattr(status, "value", status) != FAILED:
        return event
    error = materialization.metadata.get("canvas/error")
    failure = AssetMaterializationFailure(
        asset_key=materialization.asset_key,
        partition=materialization.partition,
        description=str(getattr(error, "value", error) or "this course failed in the run"),
        metadata=materialization.metadata,
        tags=materialization.tags or {},
        failure_type=AssetMaterializationFailureType.FAILED,
        reason=AssetMaterializationFailureReason.FAILED_TO_MATERIALIZE,
    )
    return event._replace(
        dagster_event=DagsterEvent.build_asset_failed_to_materialize_event(
            dagster_event.job_name, dagster_event.step_key, failure
        ),
        user_message=f"course {materialization.partition} failed: {failure.description}",
    )


def pooled_engine(postgres_url: str) -> sa.Engine:
    """A small connection pool instead of dagster-postgres's NullPool, which opens two or three
    connections per stored event (docs/architecture.md, "Pooled connections")."""
    return sa.create_engine(
        postgres_url,
        isolation_level="AUTOCOMMIT",
        pool_size=2,
        max_overflow=8,
        pool_recycle=1800,
        pool_pre_ping=True,
    )


class CanvasRunStorage(_FromStorageConfig, _Pooled, PostgresRunStorage):
    pass


class CanvasScheduleStorage(_FromStorageConfig, _Pooled, PostgresScheduleStorage):
    pass


class CanvasStorage(_FromStorageConfig, DagsterStorage, ConfigurableClass):
    """Runs, events and schedules in one PostgreSQL database (embedded when no server is configured)."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True, inst_data: Any = None):
        self._inst_data = check.opt_inst_param(inst_data, "inst_data", ConfigurableClassData)
        self._run_storage = CanvasRunStorage(postgres_url, should_autocreate_tables)
        self._event_log_storage = CanvasEventLogStorage(postgres_url, should_autocreate_tables)
        self._schedule_storage = CanvasScheduleStorage(postgres_url, should_autocreate_tables)
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @property
    def event_log_storage(self) -> EventLogStorage:
        return self._event_log_storage

    @property
    def run_storage(self) -> RunStorage:
        return self._run_storage

    @property
    def schedule_storage(self) -> ScheduleStorage:
        return self._schedule_storage

    # Subprocesses (run workers) rebuild each storage from these: the same config (environment-variable
    # references, never resolved secrets), our classes.
    def _data(self, cls: type) -> ConfigurableClassData | None:
        if self.inst_data is None:
            return None
        return ConfigurableClassData(__name__, cls.__name__, self.inst_data.config_yaml)

    @property
    def event_storage_data(self) -> ConfigurableClassData | None:
        return self._data(CanvasEventLogStorage)

    @property
    def run_storage_data(self) -> ConfigurableClassData | None:
        return self._data(CanvasRunStorage)

    @property
    def schedule_storage_data(self) -> ConfigurableClassData | None:
        return self._data(CanvasScheduleStorage)
