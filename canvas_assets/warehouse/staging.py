"""Operational tables: raw staging, the course catalog, the sync log and the quarantine.

Each function takes a `Connection` inside the caller's transaction; `Warehouse` opens the transactions.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import chain
from typing import Any, NamedTuple

import psycopg2.extensions
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from canvas_assets.extract.records import Records, array_pieces, decode_whole, inflate
from canvas_assets.jsontext import encode_json, encode_json_bytes
from canvas_assets.transform.convert import to_id
from canvas_assets.transform.quarantine import Rejected
from canvas_assets.warehouse.models import COURSE_SCOPE_COLUMN, table
from canvas_assets.warehouse.pgcopy import BINARY_HEADER, BINARY_TRAILER, PG_EPOCH, uses_copy

IN_CHUNK = 1000  # ids per IN (...) list: far below SQLite's 32766 host-parameter limit
READ_CHUNK = 50  # courses per staging read


def upsert_statement(conn: sa.Connection, target: sa.Table) -> Any:
    """The dialect's `INSERT` (both SQLite and PostgreSQL support `ON CONFLICT DO UPDATE`)."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(target)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(target)
    raise NotImplementedError(f"upsert is not implemented for {conn.dialect.name}")


def distinct_sql(conn: sa.Connection, left: Sequence[str], right: Sequence[str]) -> str:
    """NULL-safe "some value differs" between two equally long lists of column expressions."""
    if conn.dialect.name == "postgresql":
        if len(left) == 1:
            return f"{left[0]} IS DISTINCT FROM {right[0]}"
        return f"({', '.join(left)}) IS DISTINCT FROM ({', '.join(right)})"
    return "(" + " OR ".join(f"{a} IS NOT {b}" for a, b in zip(left, right, strict=True)) + ")"


def chunks(values: Sequence[Any], size: int = IN_CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def utc(at: datetime) -> datetime:
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


# --- staging ----------------------------------------------------------------------------------------------
FULL, INCREMENTAL = "full", "incremental"


class StagingItem(NamedTuple):
    """One (entity, course)'s records to stage, with how they were fetched (a plain 3-tuple is a full fetch).

    `full_fetched_at` is kept from the previous fetch by an incremental one (None: this fetch's time);
    `watermark` is an incremental entity's latest Canvas change time among the records."""

    entity: str
    course_id: int
    records: Sequence[Any]
    mode: str = FULL
    watermark: datetime | None = None
    full_fetched_at: datetime | None = None


@dataclass(frozen=True)
class FetchState:
    """How a course's staged records of an entity were last fetched (`canvas_staging`)."""

    fetched_at: datetime
    mode: str | None
    full_fetched_at: datetime | None
    watermark: datetime | None
    record_count: int


# Staged texts per upsert statement where staging is not written by COPY (SQLite): a bound on what one
# statement holds at once, whatever the number of courses staged together.
STATEMENT_TEXT_BYTES = 8 << 20
_REPLACED = ("records", "record_count", "fetched_at", "run_id", "fetch_mode", "full_fetched_at", "watermark")


def replace_staging(
    conn: sa.Connection,
    items: Sequence[tuple[Any, ...]],
    *,
    run_id: str,
    fetched_at: datetime,
) -> None:
    """Stage each item's records (replacing what the course had of the entity). Each text is made from its
    records only when it is written, so one text at a time is held: on PostgreSQL (psycopg2) every row goes
    by one binary COPY (see `_copy_staging`), elsewhere by upserts of at most STATEMENT_TEXT_BYTES of text."""
    fetched_at = utc(fetched_at)
    staged = [_StagedRow(StagingItem(*raw), run_id, fetched_at) for raw in items]
    if not staged:
        return
    if uses_copy(conn):
        _copy_staging(conn, staged)
        return
    t = table("canvas_staging")
    stmt = upsert_statement(conn, t)
    stmt = stmt.on_conflict_do_update(
        index_elements=["entity", "course_id"], set_={c: stmt.excluded[c] for c in _REPLACED}
    )
    batch: list[dict[str, Any]] = []
    size = 0
    for row in staged:
        length, parts = json_text(row.item.records)
        batch.append({**row.values(), "records": b"".join(parts).decode("utf-8")})
        size += length
        if size >= STATEMENT_TEXT_BYTES:
            conn.execute(stmt, batch)
            batch, size = [], 0
    if batch:
        conn.execute(stmt, batch)


class _StagedRow:
    """One staging row to write: its item, and the values of every column but `records`."""

    __slots__ = ("fetched_at", "item", "run_id")

    def __init__(self, item: StagingItem, run_id: str, fetched_at: datetime) -> None:
        self.item, self.run_id, self.fetched_at = item, run_id, fetched_at

    def values(self) -> dict[str, Any]:
        item = self.item
        return {
            "entity": item.entity,
            "course_id": int(item.course_id),
            "record_count": len(item.records),
            "fetched_at": self.fetched_at,
            "run_id": self.run_id,
            "fetch_mode": item.mode,
            "full_fetched_at": self.fetched_at if item.full_fetched_at is None else utc(item.full_fetched_at),
            "watermark": None if item.watermark is None else utc(item.watermark),
        }


# The staging columns in the order the COPY stream writes them, with their binary encodings.
_COPY_COLUMNS = (
    ("entity", "text"),
    ("course_id", "bigint"),
    ("record_count", "integer"),
    ("fetched_at", "timestamptz"),
    ("run_id", "text"),
    ("fetch_mode", "text"),
    ("full_fetched_at", "timestamptz"),
    ("watermark", "timestamptz"),
    ("records", "text"),
)


def _copy_staging(conn: sa.Connection, staged: Sequence[_StagedRow]) -> None:
    """Every row by binary COPY into a temporary table (dropped at commit), then one upsert from it.

    As statement parameters, texts are copied whole several times over: a str, its UTF-8 bytes, psycopg2's
    escaped literal and the statement holding them all (a big course's 58 MB text cost 250 MB at the large
    benchmark's peak, and a re-sync that staged many merged courses at once 100 MB). The COPY stream makes
    each text from its records when it reaches it and hands it over a part at a time."""
    name = f"canvas_staging_in_{uuid.uuid4().hex[:12]}"
    columns = ", ".join(f"{c} {kind}" for c, kind in _COPY_COLUMNS)
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {name} ({columns}) ON COMMIT DROP")
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        names = ", ".join(c for c, _ in _COPY_COLUMNS)
        stream = _CopyStream(_copy_rows(staged))
        try:
            cursor.copy_expert(f"COPY {name} ({names}) FROM STDIN (FORMAT binary)", stream, size=1 << 20)
        except Exception:
            if stream.error is not None:  # a record that cannot be written: its own error, not the cancel
                raise stream.error from None
            raise
    finally:
        cursor.close()
    updates = ", ".join(f"{c} = excluded.{c}" for c in _REPLACED)
    conn.exec_driver_sql(
        f"INSERT INTO canvas_staging ({names}) SELECT {names} FROM {name} "
        f"ON CONFLICT (entity, course_id) DO UPDATE SET {updates}"
    )


def _copy_rows(staged: Sequence[_StagedRow]) -> Iterator[bytes]:
    """The binary COPY tuples of `staged` (see `_COPY_COLUMNS`), a text's parts as they come."""
    for row in staged:
        values = row.values()
        header = [struct.pack("!h", len(_COPY_COLUMNS))]
        for column, kind in _COPY_COLUMNS[:-1]:
            header.append(_binary_field(values[column], kind))
        length, parts = json_text(row.item.records)
        header.append(struct.pack("!i", length))
        yield b"".join(header)
        written = 0
        for part in parts:
            if part:  # an empty read ends the COPY
                written += len(part)
                yield part
        if written != length:
            raise ValueError(f"staged text of {written} bytes, {length} announced")


def _binary_field(value: Any, kind: str) -> bytes:
    """One field of a binary COPY tuple: its length and PostgreSQL's binary form (-1 for NULL)."""
    if value is None:
        return struct.pack("!i", -1)
    if kind == "text":
        data = str(value).encode("utf-8")
        return struct.pack("!i", len(data)) + data
    if kind == "bigint":
        return struct.pack("!iq", 8, value)
    if kind == "integer":
        return struct.pack("!ii", 4, value)
    if kind == "timestamptz":  # microseconds since 2000-01-01 UTC
        return struct.pack("!iq", 8, (value - PG_EPOCH) // timedelta(microseconds=1))
    raise ValueError(f"no binary COPY encoding for {kind}")


def json_text(records: Sequence[Any]) -> tuple[int, Iterable[bytes]]:
    """The staged text of `records` (`encode_json` of the list, as UTF-8): its length and its parts. A
    `Records` gives its text from its compressed pieces, without decoding them."""
    if isinstance(records, Records):
        text = records.json_text()
        if text is not None:
            return text
    encoded = encode_json_bytes(list(records))
    return len(encoded), (encoded,)


class _CopyStream:
    """A binary COPY stream (header, `tuples`, trailer) that psycopg2 reads a part at a time."""

    def __init__(self, tuples: Iterator[bytes]) -> None:
        self._parts = chain([BINARY_HEADER], tuples, [BINARY_TRAILER])
        self.error: Exception | None = None  # what making the stream raised (psycopg2 reports it as a cancel)

    def read(self, size: int = -1) -> bytes:
        try:
            return next(self._parts, b"")
        except Exception as exc:
            self.error = exc
            raise


def read_fetch_states(conn: sa.Connection, entity: str, course_ids: Iterable[int]) -> dict[int, FetchState]:
    """How each course's staged records of `entity` were fetched; courses with nothing staged are absent."""
    t = table("canvas_staging")
    out: dict[int, FetchState] = {}
    columns = (
        t.c.course_id,
        t.c.fetched_at,
        t.c.fetch_mode,
        t.c.full_fetched_at,
        t.c.watermark,
        t.c.record_count,
    )
    for chunk in chunks(sorted({int(c) for c in course_ids})):
        query = sa.select(*columns).where(t.c.entity == entity, t.c.course_id.in_(chunk))
        for course_id, fetched, mode, full, mark, count in conn.execute(query):
            out[int(course_id)] = FetchState(fetched, mode, full, mark, int(count))
    return out


class StagedRecords(Sequence[Any]):
    """One course's staged records, kept as compressed JSON and decoded each time they are read.

    A ranged run reads the staging of hundreds of courses at once; decoded, their records take many times
    the memory of the text (and the text, as a Python str with one CJK character, twice its UTF-8 size).
    Kept as zlib-compressed UTF-8 (a few times smaller than the text), they cost little until read; the
    transformers read course chunk by course chunk, so only one chunk's decoded records are alive at a time.
    Iterating decodes a piece of the text at a time (`records.array_pieces`), so a pass over a big course
    (an incremental merge, the duplicate checks) holds one piece's records, not the course's.
    Behaves as a read-only list (len, index, iterate, ==).
    """

    __slots__ = ("_count", "_data")

    def __init__(self, text: str | bytes, count: int | None = None) -> None:
        raw = text.encode("utf-8") if isinstance(text, str) else text
        self._data = zlib.compress(raw, 1)
        self._count = count

    @classmethod
    def compressed(cls, data: bytes, count: int | None = None) -> StagedRecords:
        """From the zlib-compressed UTF-8 text."""
        staged = cls.__new__(cls)
        staged._data, staged._count = data, count
        return staged

    def _decode(self) -> list[Any]:
        return decode_whole(inflate(self._data))

    def pieces(self) -> Iterator[tuple[list[Any], bool]]:
        """(records, exact) a piece of the text at a time (see `records.array_pieces`)."""
        return array_pieces(inflate(self._data))

    def __len__(self) -> int:
        if self._count is None:
            self._count = len(self._decode())
        return self._count

    def __iter__(self) -> Iterator[Any]:
        return chain.from_iterable(records for records, _ in self.pieces())

    def __getitem__(self, index: Any) -> Any:
        return self._decode()[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StagedRecords):
            return self._decode() == other._decode()
        return self._decode() == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StagedRecords({len(self)} records)"


# A staged text this long is read from PostgreSQL a record at a time (see `_long_text`).
LONG_TEXT_BYTES = 16 << 20
LONG_TEXT_BATCH = 5000  # records per fetch of such a text


def read_staging(conn: sa.Connection, entity: str, course_ids: Iterable[int]) -> dict[int, StagedRecords]:
    """Staged records per course (lazily decoded: see `StagedRecords`). From psycopg2 the texts come as
    UTF-8 bytes (its BYTES typecaster): no str of a big course's text (twice its size with one CJK
    character) and no re-encoding of it; a text of LONG_TEXT_BYTES or more comes a record at a time."""
    t = table("canvas_staging")
    ids = sorted({int(c) for c in course_ids})
    out: dict[int, StagedRecords] = {}
    if not uses_copy(conn):
        for chunk in chunks(ids, READ_CHUNK):  # a bounded result set: one chunk's text in memory at once
            query = sa.select(t.c.course_id, t.c.records, t.c.record_count).where(
                t.c.entity == entity, t.c.course_id.in_(chunk)
            )
            for course_id, records, count in conn.execute(query):
                out[int(course_id)] = StagedRecords(records, count)
        return out
    size = sa.func.octet_length(t.c.records)  # the stored length: nothing is decompressed for it
    for chunk in chunks(ids, READ_CHUNK):
        query = sa.select(
            t.c.course_id, sa.case((size < LONG_TEXT_BYTES, t.c.records)), t.c.record_count
        ).where(t.c.entity == entity, t.c.course_id.in_(chunk))
        for course_id, records, count in _bytes_rows(conn, query):
            out[int(course_id)] = (
                StagedRecords(records, count) if records is not None else _long_text(conn, entity, course_id)
            )
    return out


def _long_text(conn: sa.Connection, entity: str, course_id: int) -> StagedRecords:
    """A long staged text, read through a server-side cursor cut at each `},{` and joined again here.

    Read whole, a big course's text (58 MB for the large benchmark's 134k submissions) is held three times at
    once: in libpq's input buffer, in its result and as Python bytes. Cut by `string_to_array` on the server
    (one decompression of the value), it comes a few thousand records at a time, each batch compressed as it
    arrives. Joining the parts with the separator they were cut at gives the text back byte for byte, in
    whatever way the separator falls (inside strings too); the parts' ordinals and the total length are
    checked, so a text is never returned out of order or short."""
    cursor = conn.connection.dbapi_connection.cursor(name=f"canvas_long_text_{uuid.uuid4().hex[:12]}")  # type: ignore[union-attr]
    psycopg2.extensions.register_type(psycopg2.extensions.BYTES, cursor)
    compressor = zlib.compressobj(1)
    data: list[bytes] = []
    written, expected_part, length, count = 0, 1, -1, 0
    try:
        cursor.execute(
            "SELECT s.record_count, octet_length(s.records), p.part, p.n FROM canvas_staging s, "
            "unnest(string_to_array(s.records, '},{')) WITH ORDINALITY AS p(part, n) "
            "WHERE s.entity = %(entity)s AND s.course_id = %(course_id)s",
            {"entity": entity, "course_id": int(course_id)},
        )
        while rows := cursor.fetchmany(LONG_TEXT_BATCH):  # a server-side cursor: FETCH FORWARD n
            count, length = rows[0][0], rows[0][1]
            if rows[0][3] != expected_part or rows[-1][3] != expected_part + len(rows) - 1:
                raise RuntimeError(f"staged {entity} of course {course_id} came back out of order")
            text = b"},{".join(row[2] for row in rows)
            if expected_part > 1:
                text = b"},{" + text
            expected_part += len(rows)
            written += len(text)
            data.append(compressor.compress(text))
    finally:
        cursor.close()
    if length < 0:
        raise RuntimeError(f"staged {entity} of course {course_id} was removed while it was read")
    if written != length:
        raise RuntimeError(
            f"staged {entity} of course {course_id}: read {written} bytes of a {length}-byte text"
        )
    data.append(compressor.flush())
    return StagedRecords.compressed(b"".join(data), count)


def _bytes_rows(conn: sa.Connection, query: sa.Select[Any]) -> Iterator[tuple[Any, ...]]:
    """The rows of `query` with text columns as UTF-8 bytes (psycopg2), one row at a time."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        psycopg2.extensions.register_type(psycopg2.extensions.BYTES, cursor)
        cursor.execute(str(compiled), compiled.params)
        while (row := cursor.fetchone()) is not None:
            yield row
    finally:
        cursor.close()


def staged_courses(conn: sa.Connection, entity: str) -> dict[int, datetime]:
    t = table("canvas_staging")
    query = sa.select(t.c.course_id, t.c.fetched_at).where(t.c.entity == entity)
    return {int(c): at for c, at in conn.execute(query)}


# --- catalog ----------------------------------------------------------------------------------------------
@dataclass
class CatalogDiff:
    """What a course listing changed in the catalog."""

    new: list[int] = field(default_factory=list)  # never seen before
    returned: list[int] = field(default_factory=list)  # had gone, listed again
    vanished: list[int] = field(default_factory=list)  # known, absent from a full listing: now gone
    listed: list[int] = field(default_factory=list)  # every course id of this listing
    active: list[int] = field(default_factory=list)  # every course in the catalog that is not gone
    invalid: int = 0  # listing entries without a usable id (ignored)

    @property
    def total(self) -> int:
        return len(self.active)

    def to_metadata(self) -> dict[str, int]:
        return {
            "listed": len(self.listed),
            "new": len(self.new),
            "returned": len(self.returned),
            "vanished": len(self.vanished),
            "active": len(self.active),
        }


def upsert_catalog(
    conn: sa.Connection, courses: Sequence[Mapping[str, Any]], *, seen_at: datetime, full_listing: bool
) -> CatalogDiff:
    t = table("canvas_course_catalog")
    seen_at = utc(seen_at)
    diff = CatalogDiff()
    rows: dict[int, dict[str, Any]] = {}
    for course in courses:
        course_id = to_id(course.get("id")) if isinstance(course, Mapping) else None
        if not isinstance(course_id, int):
            diff.invalid += 1
            continue
        account_id = to_id(course.get("account_id"))
        term_id = to_id(course.get("enrollment_term_id"))
        rows[course_id] = {
            "course_id": course_id,
            "name": course.get("name"),
            "course_code": course.get("course_code"),
            "workflow_state": course.get("workflow_state"),
            "account_id": account_id if isinstance(account_id, int) else None,
            "enrollment_term_id": term_id if isinstance(term_id, int) else None,
            "first_seen_at": seen_at,
            "last_seen_at": seen_at,
            "gone_at": None,
            "gone_reason": None,
        }
    before = {int(c): gone for c, gone in conn.execute(sa.select(t.c.course_id, t.c.gone_at))}
    diff.listed = sorted(rows)
    diff.new = [c for c in diff.listed if c not in before]
    diff.returned = [c for c in diff.listed if c in before and before[c] is not None]
    if rows:
        stmt = upsert_statement(conn, t)
        update = ("name", "course_code", "workflow_state", "account_id", "enrollment_term_id")
        stmt = stmt.on_conflict_do_update(
            index_elements=["course_id"],
            set_={
                **{c: stmt.excluded[c] for c in update},
                "last_seen_at": stmt.excluded.last_seen_at,
                "gone_at": None,
                "gone_reason": None,
            },
        )
        conn.execute(stmt, list(rows.values()))
    if full_listing:
        diff.vanished = sorted(c for c, gone in before.items() if gone is None and c not in rows)
        for chunk in chunks(diff.vanished):
            conn.execute(
                sa.update(t)
                .where(t.c.course_id.in_(chunk))
                .values(gone_at=seen_at, gone_reason="not in the course listing")
            )
    diff.active = catalog_course_ids(conn, include_gone=False)
    return diff


def mark_course_gone(
    conn: sa.Connection, course_id: int, *, reason: str, at: datetime, soft_delete_rows: bool
) -> None:
    t = table("canvas_course_catalog")
    at = utc(at)
    stmt = upsert_statement(conn, t).values(
        course_id=int(course_id), first_seen_at=at, last_seen_at=None, gone_at=at, gone_reason=reason
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["course_id"], set_={"gone_at": at, "gone_reason": reason}
    )
    conn.execute(stmt)
    if not soft_delete_rows:
        return
    for name, scope in COURSE_SCOPE_COLUMN.items():
        target = table(name)
        if scope is None or "deleted_at" not in target.c:  # global rows, or an append-only log (audit events)
            continue
        conn.execute(
            sa.update(target)
            .where(target.c[scope] == int(course_id), target.c.deleted_at.is_(None))
            .values(deleted_at=at)
        )


def catalog_course_ids(conn: sa.Connection, *, include_gone: bool) -> list[int]:
    t = table("canvas_course_catalog")
    query = sa.select(t.c.course_id).order_by(t.c.course_id)
    if not include_gone:
        query = query.where(t.c.gone_at.is_(None))
    return [int(c) for c in conn.scalars(query)]


# --- sync log and quarantine ------------------------------------------------------------------------------
def write_sync_log(conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    t = table("canvas_sync_log")
    allowed = set(t.c.keys()) - {"id"}
    out = []
    for row in rows:
        unknown = set(row) - allowed
        if unknown:
            raise ValueError(f"unknown canvas_sync_log columns: {sorted(unknown)}; known: {sorted(allowed)}")
        values: dict[str, Any] = dict.fromkeys(allowed)
        values.update(row)
        started, finished = values["started_at"], values["finished_at"]
        if values["duration_s"] is None and started is not None and finished is not None:
            values["duration_s"] = (utc(finished) - utc(started)).total_seconds()
        if values["course_id"] is not None:
            values["course_id"] = int(values["course_id"])
        if values["message"] is not None:
            values["message"] = str(values["message"])[:4000]
        out.append(values)
    conn.execute(sa.insert(t), out)


def write_rejected(conn: sa.Connection, rejected: Sequence[Rejected], *, run_id: str) -> None:
    t = table("canvas_rejected_records")
    now = datetime.now(timezone.utc)
    rows = [
        {
            "run_id": run_id,
            "entity": r.entity,
            "course_id": r.course_id,
            "canvas_id": r.canvas_id,
            "reason": r.reason,
            "payload": encode_json(r.payload),
            "rejected_at": now,
        }
        for r in rejected
    ]
    for chunk in chunks(rows, 5000):
        conn.execute(sa.insert(t), list(chunk))
