"""Small pieces every asset module shares: turning our errors into Dagster failures, run metadata."""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Optional

import dagster as dg
import sqlalchemy as sa

from canvas_assets.canvas.redact import redact_known
from canvas_assets.errors import CanvasAssetsError


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


def course_keys(context: Any) -> list[int]:
    """The run's course ids: one in a single-partition run, many in a ranged (backfill) run."""
    return [int(k) for k in context.partition_keys]


# Recoverable failures (Canvas down for a while, a course past its time budget) get another go;
# `Failure(allow_retries=False)` opts the rest out.
CANVAS_RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL)


def gone_course_ids(warehouse: Any, course_ids: Iterable[int]) -> set[int]:
    """Courses of `course_ids` that the catalog knows to be gone from Canvas (404 or no longer listed)."""
    gone = set(warehouse.catalog_course_ids(include_gone=True)) - set(warehouse.catalog_course_ids())
    return gone & {int(c) for c in course_ids}


def extract_outcomes(warehouse: Any, run_id: str, entity: str) -> dict[int, tuple[str, Optional[str]]]:
    """{course id: (status, error type)} of this run's extract of `entity`, the latest attempt of each
    course winning (a retried step writes again). Empty when the run did not extract `entity`."""
    stmt = sa.text(
        "SELECT course_id, status, error_type FROM canvas_sync_log "
        "WHERE run_id = :run AND entity = :entity AND stage = 'extract' ORDER BY id"
    )
    with warehouse.engine.connect() as conn:
        return {int(r[0]): (r[1], r[2]) for r in conn.execute(stmt, {"run": run_id, "entity": entity})}
