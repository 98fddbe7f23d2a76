"""The warehouse: one object per database URL, with the few operations the pipeline needs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from functools import partial
from typing import Any

from canvas_assets.transform.base import TransformResult
from canvas_assets.transform.quarantine import Rejected
from canvas_assets.warehouse import catalog, migrate, staging
from canvas_assets.warehouse.account import AccountLoad, load_account_table
from canvas_assets.warehouse.catalog import CatalogDiff
from canvas_assets.warehouse.confirmations import read_confirmations
from canvas_assets.warehouse.engine import (
    display_url,
    get_engine,
    locked_transaction,
    normalize_url,
    write_transaction,
)
from canvas_assets.warehouse.indexes import deferring
from canvas_assets.warehouse.load import PG_WORK_MEM, load_result, refresh_statistics
from canvas_assets.warehouse.stats import LoadStats


class Warehouse:
    """The warehouse database: staging, catalog, sync log, quarantine and the Layer-1 loads."""

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)
        self.engine = get_engine(self.url)

    def __repr__(self) -> str:
        return f"Warehouse({self.url_for_display!r})"

    @property
    def url_for_display(self) -> str:
        return display_url(self.url)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # --- schema -------------------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create the schema in an empty database; refuse to run against an out-of-date one."""
        migrate.ensure_schema(self.url)

    # --- staging ------------------------------------------------------------------------------------
    def replace_staging(
        self, entity: str, course_id: int, records: list[dict[str, Any]], *, run_id: str, fetched_at: datetime
    ) -> None:
        """Stage the raw records of one (entity, course), fetched in full."""
        self.write_staging([(entity, course_id, records)], run_id=run_id, fetched_at=fetched_at)

    def write_staging(self, items: Sequence[tuple[Any, ...]], *, run_id: str, fetched_at: datetime) -> int:
        """Stage several (entity, course)'s records in one transaction: `(entity, course_id, records)` tuples
        (a full fetch) or `staging.StagingItem`s; the number of record rows written (`staging.write_staging`)."""
        with write_transaction(self.engine) as conn:
            return staging.write_staging(conn, items, run_id=run_id, fetched_at=fetched_at)

    def read_staging(self, entity: str, course_ids: Iterable[int]) -> dict[int, staging.StagedCourse]:
        """Raw records per course (`staging.StagedCourse`: read from the warehouse each time they are
        iterated); courses with nothing staged are absent."""
        return staging.read_staging(self.engine, entity, course_ids)

    def staged_batches(self, entity: str, course_ids: Iterable[int]) -> Iterator[dict[int, list[Any]]]:
        """The courses' staged records decoded, a batch of whole courses at a time (`staging.staged_batches`)."""
        with self.engine.connect() as conn:
            yield from staging.staged_batches(conn, entity, course_ids)

    def fetch_states(self, entity: str, course_ids: Iterable[int]) -> dict[int, staging.FetchState]:
        """How each course's staged records of `entity` were last fetched (mode, full fetch, watermark)."""
        with self.engine.connect() as conn:
            return staging.read_fetch_states(conn, entity, course_ids)

    def staged_courses(self, entity: str) -> dict[int, datetime]:
        """Course ids with staged records of `entity`, and when they were fetched."""
        with self.engine.connect() as conn:
            return staging.staged_courses(conn, entity)

    # --- catalog ------------------------------------------------------------------------------------
    def upsert_catalog(
        self, courses: list[dict[str, Any]], *, seen_at: datetime, full_listing: bool = True
    ) -> CatalogDiff:
        """Record the courses a listing returned; with a full listing, the missing ones are marked gone."""
        with write_transaction(self.engine) as conn:
            return catalog.upsert_catalog(conn, courses, seen_at=seen_at, full_listing=full_listing)

    def mark_course_gone(self, course_id: int, *, reason: str, at: datetime) -> None:
        """A course that 404s: mark it gone in the catalog and soft-delete its Layer-1 rows."""
        with write_transaction(self.engine) as conn:
            catalog.mark_course_gone(conn, course_id, reason=reason, at=at)

    def catalog_course_ids(self, *, include_gone: bool = False) -> list[int]:
        with self.engine.connect() as conn:
            return catalog.catalog_course_ids(conn, include_gone=include_gone)

    # --- logs ---------------------------------------------------------------------------------------
    def write_sync_log(self, rows: list[dict[str, Any]]) -> None:
        """Append sync-log rows (keys = canvas_sync_log columns; duration_s derived when absent)."""
        if not rows:
            return
        with write_transaction(self.engine) as conn:
            catalog.write_sync_log(conn, rows)

    def write_rejected(self, rejected: list[Rejected], *, run_id: str) -> None:
        """Quarantine records a transformer could not turn into rows."""
        if not rejected:
            return
        with write_transaction(self.engine) as conn:
            catalog.write_rejected(conn, rejected, run_id=run_id)

    # --- Layer 1 ------------------------------------------------------------------------------------
    def load(
        self,
        result: TransformResult,
        *,
        course_ids: list[int],
        run_id: str,
        synced_at: datetime,
        full_refresh: bool = True,
    ) -> LoadStats:
        """`load_chunks` of one result covering `course_ids` (the courses whose staging was transformed): only
        new or changed rows are written (docs/architecture.md, "The load, step by step")."""
        return self.load_chunks(
            [(result, course_ids)], run_id=run_id, synced_at=synced_at, full_refresh=full_refresh
        )

    def load_account(self, result: TransformResult, *, run_id: str, synced_at: datetime) -> AccountLoad:
        """Load an account-level table (terms) in ONE transaction, its quarantined records with it
        (`warehouse.account`: upsert, and soft delete only on a complete list)."""
        with locked_transaction(self.engine) as conn:
            done = load_account_table(conn, result, run_id=run_id, synced_at=synced_at)
            catalog.write_rejected(conn, result.rejected, run_id=run_id)
        return done

    def load_chunks(
        self,
        chunks: Iterable[tuple[TransformResult, Sequence[int]]],
        *,
        run_id: str,
        synced_at: datetime,
        full_refresh: bool = True,
    ) -> LoadStats:
        """`load` of a run whose courses were transformed in chunks: every `(result, course_ids)` chunk in
        ONE transaction, so a failure in any chunk (or in reading the next) leaves the warehouse as it was.
        Chunks must hold disjoint, whole courses (each one's soft delete covers exactly its own) and no key an
        earlier chunk had: the load is then that of one result of them all, its figures the chunks' sums.
        Chunks are read lazily and released once loaded: memory is bounded by a chunk. After the commit, the
        tables it changed by a tenth or more are analyzed (`stats.analyzed`)."""
        stats = LoadStats()
        with locked_transaction(self.engine) as conn:
            if conn.dialect.name == "postgresql":
                # The diff joins every incoming row with the table: keep its hash tables in memory.
                conn.exec_driver_sql(f"SET LOCAL work_mem = '{PG_WORK_MEM}'")
            load = partial(load_result, conn, run_id=run_id, synced_at=synced_at, full_refresh=full_refresh)
            with deferring(conn):  # an empty table's indexes are built once its rows are in
                for result, course_ids in chunks:
                    chunk_stats = load(result, course_ids=course_ids)
                    del result  # released before the next chunk is read
                    stats.add(chunk_stats)
        stats.analyzed = refresh_statistics(self.engine, stats)
        return stats

    def confirmations(
        self, entity: str | None = None, course_ids: Iterable[int] | None = None
    ) -> list[dict[str, Any]]:
        """When Canvas last confirmed each course's rows, per entity: the `canvas_course_sync` rows,
        which (not a per-row time) say how fresh a course's data is."""
        with self.engine.connect() as conn:
            return read_confirmations(conn, entity, course_ids)
