"""Small pieces every asset module shares: turning our errors into Dagster failures, run metadata."""

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Optional, TypeVar, cast

import dagster as dg
import sqlalchemy as sa

from canvas_assets.canvas.redact import redact_known
from canvas_assets.errors import CanvasAssetsError
from canvas_assets.instance.step_metadata import merge_partition_metadata

# The instance storage stores a materialization whose course status is "failed" as a failure event.
from canvas_assets.instance.storage import COURSE_STATUS_KEY

T = TypeVar("T")


def failure_from(exc: CanvasAssetsError, *, stage: str) -> dg.Failure:
    """A Dagster Failure carrying the error taxonomy; only recoverable errors are retried."""
    exc.stage = exc.stage or stage
    exc.message = redact_known(exc.message)
    meta = exc.to_metadata()
    return dg.Failure(
        description=f"[{meta['error_category']}] {exc.message}",
        metadata={k: _metadata_value(v) for k, v in meta.items()},
        allow_retries=exc.recoverable,
    )


def _metadata_value(value: Any) -> Any:
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, int):
        return dg.MetadataValue.int(value)
    return dg.MetadataValue.text(str(value))


@contextmanager
def dagster_failures(stage: str) -> Iterator[None]:
    """Re-raise our own errors as typed Dagster failures; anything else propagates untouched."""
    try:
        yield
    except CanvasAssetsError as exc:
        raise failure_from(exc, stage=stage) from exc


DATABASE_RETRIES = 2  # a step that lost its warehouse connection is run again, this many times ...
DATABASE_RETRY_WAIT_S = 15  # ... after this long (a PostgreSQL restart or fail-over takes seconds)


@contextmanager
def database_retries() -> Iterator[None]:
    """A step that lost its warehouse connection (a restart, a fail-over) asks Dagster to run it again.

    Each load is one transaction, so a retry starts from the state before it. Other database errors
    (a constraint, a bad statement) fail the step at once."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        if isinstance(exc, sa.exc.OperationalError) or exc.connection_invalidated:
            raise dg.RetryRequested(
                max_retries=DATABASE_RETRIES, seconds_to_wait=DATABASE_RETRY_WAIT_S
            ) from exc
        raise


def retry_on_lost_database(fn: Callable[..., T]) -> Callable[..., T]:
    """`database_retries` around a whole op or check function (signature kept, for Dagster's injection)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with database_retries():
            return fn(*args, **kwargs)

    return wrapper


def course_keys(context: Any) -> list[int]:
    """The run's course ids: one in a single-partition run, many in a ranged (backfill) run."""
    return [int(k) for k in context.partition_keys]


# Recoverable failures (Canvas down for a while, connections dropped) get another go;
# `Failure(allow_retries=False)` opts the rest out.
CANVAS_RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL)


def gone_course_ids(warehouse: Any, course_ids: Iterable[int]) -> set[int]:
    """Courses of `course_ids` that the catalog knows to be gone from Canvas (404 or no longer listed)."""
    gone = set(warehouse.catalog_course_ids(include_gone=True)) - set(warehouse.catalog_course_ids())
    return gone & {int(c) for c in course_ids}


def extract_log(warehouse: Any, run_id: str, entity: str, *columns: str) -> dict[int, tuple[Any, ...]]:
    """{course id: its `columns` of `canvas_sync_log`} for this run's extract of `entity`, the latest attempt
    of each course winning (a retried step writes again). Empty when the run did not extract `entity`."""
    stmt = sa.text(
        f"SELECT course_id, {', '.join(columns)} FROM canvas_sync_log "
        "WHERE run_id = :run AND entity = :entity AND stage = 'extract' ORDER BY id"
    )
    with warehouse.engine.connect() as conn:
        return {int(r[0]): tuple(r[1:]) for r in conn.execute(stmt, {"run": run_id, "entity": entity})}


def extract_outcomes(warehouse: Any, run_id: str, entity: str) -> dict[int, tuple[str, Optional[str]]]:
    """{course id: (status, error type)} of this run's extract of `entity` (see `extract_log`)."""
    return cast(
        dict[int, tuple[str, Optional[str]]], extract_log(warehouse, run_id, entity, "status", "error_type")
    )


def course_metadata(
    *, status: str, rows: int, error: Optional[CanvasAssetsError] = None, **figures: Any
) -> dict[str, Any]:
    """Metadata of one course's materialization: that course's own facts, nothing run-wide.

    A course whose status is "failed" is stored by the canvas-assets instance as a failed
    materialization (ASSET_FAILED_TO_MATERIALIZE), so its partition keeps its last good materialization.
    """
    meta: dict[str, Any] = {COURSE_STATUS_KEY: status, "dagster/row_count": rows, **figures}
    if error is not None:
        meta["canvas/error"] = redact_known(f"{error.error_type}: {error.message}")[:500]
    return meta


def add_course_metadata(
    context: Any, asset_key: dg.AssetKey, per_course: Mapping[int, Mapping[str, Any]]
) -> None:
    """Attach each course's own metadata to that course's materialization of `asset_key`: what a public
    `context.add_asset_metadata` call per course does, in one pass (`instance.step_metadata` says why)."""
    targeted = set(context.partition_keys)
    unknown = sorted(str(c) for c in per_course if str(c) not in targeted)
    if unknown:
        raise dg.DagsterInvariantViolationError(f"courses {unknown[:10]} are not partitions of this run")
    merge_partition_metadata(context, asset_key, {str(c): meta for c, meta in per_course.items()})


# --- the run's own figures: the sync report ------------------------------------------------------------
# Run-wide figures (API calls, rows, seconds per stage...) are neither run tags (forty of them made one run
# fill a screen of the Runs list, issue 22) nor course metadata (a ranged run would copy them onto every
# course): each step that has any logs one observation of this asset (docs/architecture.md, "Run figures").
SYNC_REPORT_KEY = dg.AssetKey("canvas_sync_report")
SYNC_REPORT = dg.AssetSpec(
    SYNC_REPORT_KEY,
    group_name="reports",
    kinds={"canvas"},
    description=(
        "The figures of each sync run, one observation per step that has any: the extract's courses "
        "(ok, failed, gone), API calls, retries, throttled responses and seconds; each Layer-1 load's rows, "
        "rejected records and transform/load seconds. The course-by-course record is the warehouse's "
        "`canvas_sync_log`."
    ),
)


def report_run_figures(context: Any, figures: Mapping[str, int | float]) -> None:
    """Log this step's run-wide figures once, as an observation of the sync report (not as run tags)."""
    context.log_event(
        dg.AssetObservation(
            asset_key=SYNC_REPORT_KEY,
            metadata={
                k: dg.MetadataValue.int(v) if isinstance(v, int) else dg.MetadataValue.float(float(v))
                for k, v in figures.items()
            },
        )
    )


def run_figures(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """The figures the steps of run `run_id` reported (`report_run_figures`), merged; {} if none."""
    figures: dict[str, float] = {}
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_OBSERVATION, limit=10_000
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None or event.asset_key != SYNC_REPORT_KEY:
            continue
        observation = event.asset_observation_data.asset_observation
        figures.update({k: float(cast(Any, v.value)) for k, v in observation.metadata.items()})
    return figures
