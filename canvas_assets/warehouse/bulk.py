"""Bulk encodings for the Layer-1 load: a transformer's frame made ready for a table, fingerprinted
(`row_hashes`), and copied into a table fast: column-wise numpy/pandas, no per-row Python work, binary COPY
on PostgreSQL (psycopg2), the driver's `executemany` over plain tuples on SQLite, SQLAlchemy Core elsewhere.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from contextlib import closing
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from canvas_assets.transform.convert import TS_DTYPE
from canvas_assets.warehouse.columns import UTCDateTime
from canvas_assets.warehouse.indexes import before_insert
from canvas_assets.warehouse.pgcopy import BINARY_HEADER, BINARY_TRAILER, PG_EPOCH_US, uses_copy
from canvas_assets.warehouse.sql import chunks

BATCH_ROWS = 5000  # rows per executemany batch into the temporary table, and per write batch (SQLite)
ROW_HASH = "row_hash"  # the fingerprint column of every Layer-1 table (see `row_hashes`)
# Columns the loader manages; a frame may not set them. `synced_at` is accepted (and ignored) for frames
# built before the per-row column was dropped.
MANAGED_COLUMNS = ("synced_at", "deleted_at", ROW_HASH)


def prepare_frame(frame: pd.DataFrame, target: sa.Table, key: list[str]) -> pd.DataFrame:
    """Validate columns, drop the ones the loader manages, bring timestamps to UTC, dedupe keys."""
    frame = frame.drop(columns=[c for c in MANAGED_COLUMNS if c in frame.columns])
    unknown = [c for c in frame.columns if c not in target.c]
    if unknown:
        raise ValueError(f"{target.name}: columns not in the table: {unknown}")
    if len(frame) == 0:
        return frame
    missing_key = [c for c in key if c not in frame.columns]
    if missing_key:
        raise ValueError(f"{target.name}: key columns missing from the frame: {missing_key}")
    for column in frame.columns:
        if isinstance(target.c[column].type, UTCDateTime) and frame[column].dtype != TS_DTYPE:
            frame[column] = _to_utc(frame[column])
    if frame.duplicated(subset=key).any():
        frame = frame.drop_duplicates(subset=key, keep="last")
    return frame.reset_index(drop=True)


def _to_utc(series: pd.Series) -> pd.Series:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return series.dt.tz_convert("UTC").astype(TS_DTYPE)
    if series.dtype.kind == "M":  # naive: taken as UTC
        return series.dt.tz_localize("UTC").astype(TS_DTYPE)
    return pd.to_datetime(series, utc=True, format="ISO8601").astype(TS_DTYPE)


# --- row fingerprints ------------------------------------------------------------------------------------
# Bump when the fingerprint changes, with a migration that sets `row_hash` to NULL (a NULL fingerprint is
# rewritten by the next load, see `load`): rows keep old fingerprints otherwise, and every later load would
# compare them column by column (correct, but the fast path is lost).
HASH_VERSION = 1
_NULL_HASH = np.uint64(0x5BD1E9955BD1E995)  # a NULL value, in any column
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over uint64 (wrapping): every input bit moves every output bit."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _column_hash(series: pd.Series, sql_type: Any) -> np.ndarray:
    """One uint64 per value, from the value as the table stores it (so the frame's dtype does not matter:
    80 as int64, as float64 beside a NaN, or as an object is one value). NULLs hash to `_NULL_HASH`."""
    mask = series.isna().to_numpy()
    dtype = series.dtype
    if isinstance(sql_type, sa.types.TypeDecorator):  # UTCDateTime: a DateTime
        sql_type = sql_type.impl_instance
    if isinstance(sql_type, (sa.Text, sa.String)) or not isinstance(
        sql_type, (sa.DateTime, sa.Boolean, sa.Float, sa.Integer)
    ):
        values = series.to_numpy(dtype=object)
        if not isinstance(dtype, pd.StringDtype):  # stored as its text, like `bulk` encodes it
            values = np.array(
                [
                    None if m else (v if isinstance(v, str) else str(v))
                    for v, m in zip(values, mask, strict=True)
                ],
                dtype=object,
            )
        elif mask.any():
            values = np.where(mask, None, values)
        hashed = pd.util.hash_array(values, categorize=False)
    else:
        if isinstance(sql_type, sa.DateTime) and not isinstance(dtype, pd.DatetimeTZDtype):
            series = _to_utc(series)
        elif dtype.kind == "O":
            series = pd.to_numeric(series.where(~mask, None), errors="coerce")
        numbers = _numbers(series, sql_type)
        # A float hashes by its bits (adding 0.0 makes -0.0 the 0.0 SQL takes it for); the rest as integers.
        raw = (numbers + 0.0).view("int64") if numbers.dtype.kind == "f" else numbers.astype("int64")
        hashed = _mix(np.ascontiguousarray(raw).view(np.uint64) + _GOLDEN)
    out = np.asarray(hashed, dtype=np.uint64)
    if mask.any():
        out = out.copy()
        out[mask] = _NULL_HASH
    return out


def row_hashes(frame: pd.DataFrame, target: sa.Table, key: Sequence[str]) -> np.ndarray:
    """A 64-bit fingerprint (int64) of each row's non-key values, as the table stores them, and of WHICH
    columns the frame carries (docs/architecture.md, "The load, step by step", step 3). Text is hashed by
    pandas' SipHash with its fixed default key (stable across runs and processes); numbers and timestamps
    by splitmix64."""
    columns = sorted(c for c in frame.columns if c not in key and c not in MANAGED_COLUMNS)
    seed = hashlib.blake2b(f"v{HASH_VERSION}:{target.name}:{','.join(columns)}".encode(), digest_size=8)
    h = np.full(len(frame), np.frombuffer(seed.digest(), dtype=np.uint64)[0], dtype=np.uint64)
    for c in columns:
        h = _mix((h ^ _column_hash(frame[c], target.c[c].type)) + _GOLDEN)
    return h.view(np.int64)


def _naive_us(series: pd.Series) -> np.ndarray:
    return np.asarray(series.dt.tz_localize(None).to_numpy(), dtype="datetime64[us]")


def python_values(series: pd.Series) -> list[Any]:
    """Plain Python values (None for NaN/NA/NaT; int, not numpy.int64). Timestamps: naive UTC datetimes."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        return list(_naive_us(series).astype(object).tolist())
    if isinstance(dtype, np.dtype) and dtype.kind in "iub":
        return list(series.tolist())
    if isinstance(dtype, np.dtype) and dtype.kind == "O":
        return [None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v for v in series]
    return list(series.to_numpy(dtype=object, na_value=None).tolist())


def sqlite_values(series: pd.Series) -> list[Any]:
    """Values as SQLite stores them; timestamps in SQLAlchemy's SQLite text format (UTC)."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        text = np.datetime_as_string(_naive_us(series), unit="us")
        mask = series.isna().to_numpy()
        return [
            None if m else s[:10] + " " + s[11:] for s, m in zip(text.tolist(), mask.tolist(), strict=False)
        ]
    return python_values(series)


# --- PostgreSQL binary COPY ---------------------------------------------------------------------------------


def _numbers(series: pd.Series, sql_type: Any) -> np.ndarray:
    """A non-text column's values as the table stores them, in native numpy form (a NULL's place holds 0,
    False or NaN): timestamps as int64 microseconds since the Unix epoch (UTC), booleans as bool, floats as
    float64, integers as int64 (from floats too, where a NaN made the column float)."""
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return np.asarray(_naive_us(series).view("int64"))
    if isinstance(sql_type, sa.Boolean):
        return np.asarray(series.to_numpy(dtype=bool, na_value=False))
    if isinstance(sql_type, sa.Float):
        return np.asarray(series.to_numpy(dtype="float64", na_value=np.nan))
    if series.dtype.kind == "f":
        return np.nan_to_num(series.to_numpy(dtype="float64")).astype("int64")
    return np.asarray(series.to_numpy(dtype="int64", na_value=0))


def _binary_column(series: pd.Series, sql_type: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """One column for binary COPY: (byte length per row, -1 for NULL; the fixed-width values as a (rows, width)
    uint8 array, or None for text; the concatenated UTF-8 payload of the non-null text values)."""
    mask = series.isna().to_numpy()
    dtype = series.dtype
    empty = np.zeros(0, dtype=np.uint8)
    if isinstance(sql_type, (sa.Text, sa.String)) or not (
        isinstance(dtype, pd.DatetimeTZDtype) or dtype.kind in "iufb"
    ):
        values = series.to_numpy(dtype=object)[~mask].tolist() if mask.any() else series.tolist()
        if not isinstance(dtype, pd.StringDtype):
            values = [v if isinstance(v, str) else str(v) for v in values]
        lengths = np.full(len(series), -1, dtype=np.int64)
        if not values:
            return lengths, None, empty
        joined = np.frombuffer("\x00".join(values).encode("utf-8"), dtype=np.uint8)
        separators = np.flatnonzero(joined == 0)
        if len(separators) != len(values) - 1:
            raise ValueError(f"{series.name}: text with a NUL character cannot be stored in PostgreSQL")
        ends = np.append(separators, len(joined))
        starts = np.concatenate(([0], separators + 1))
        lengths[~mask] = ends - starts
        payload = joined if len(separators) == 0 else np.delete(joined, separators)
        return lengths, None, payload
    numbers = _numbers(series, sql_type)
    if isinstance(dtype, pd.DatetimeTZDtype):
        fixed = (numbers - PG_EPOCH_US).astype(">i8")
    elif isinstance(sql_type, sa.Boolean):
        fixed = numbers.astype(np.uint8)
    elif isinstance(sql_type, sa.Float):
        fixed = numbers.astype(">f8")
    else:
        fixed = numbers.astype(">i8" if isinstance(sql_type, sa.BigInteger) else ">i4")
    size = fixed.dtype.itemsize
    lengths = np.where(mask, -1, size).astype(np.int64)
    return lengths, fixed.view(np.uint8).reshape(len(series), size), empty


def binary_copy_rows(frame: pd.DataFrame, types: Sequence[Any]) -> np.ndarray:
    """Encode the frame as PostgreSQL binary COPY rows: one uint8 buffer of every row, without header or
    trailer. Column-wise numpy: no per-value Python work but one `str.join` and one `encode` per text
    column."""
    n, ncol = len(frame), len(frame.columns)
    columns = [_binary_column(frame[c], t) for c, t in zip(frame.columns, types, strict=True)]
    lengths = np.stack([c[0] for c in columns], axis=1) if ncol else np.zeros((n, 0), np.int64)
    field_sizes = 4 + np.maximum(lengths, 0)
    row_sizes = 2 + field_sizes.sum(axis=1)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(row_sizes, out=offsets[1:])
    buf = np.zeros(int(offsets[-1]), dtype=np.uint8)
    row_start = offsets[:-1]
    counts = np.frombuffer(np.array([ncol], dtype=">i2").tobytes(), dtype=np.uint8)
    buf[row_start[:, None] + np.arange(2)] = counts
    field_start = row_start[:, None] + 2 + np.cumsum(field_sizes, axis=1) - field_sizes
    for j, (col_lengths, fixed, payload) in enumerate(columns):
        start = field_start[:, j]
        buf[start[:, None] + np.arange(4)] = col_lengths.astype(">i4").view(np.uint8).reshape(n, 4)
        present = col_lengths >= 0
        if fixed is not None:
            width = fixed.shape[1]
            buf[(start[present] + 4)[:, None] + np.arange(width)] = fixed[present]
        elif len(payload):
            _place_text(buf, start[present] + 4, col_lengths[present], payload)
    return buf


SCATTER_BYTES = 1 << 22  # text payload placed per vectorised step (bounds the index array: 8 bytes a byte)


def _place_text(buf: np.ndarray, starts: np.ndarray, sizes: np.ndarray, payload: np.ndarray) -> None:
    """Copy the concatenated text `payload` into `buf`, value i (`sizes[i]` bytes) at `starts[i]`.

    Vectorised over groups of values holding about SCATTER_BYTES, so that long text (HTML descriptions,
    syllabi) never needs an index array the size of the whole column."""
    ends = np.cumsum(sizes)
    first = 0
    while first < len(sizes):
        base = int(ends[first - 1]) if first else 0
        last = max(int(np.searchsorted(ends, base + SCATTER_BYTES, side="right")), first + 1)
        group = sizes[first:last]
        total = int(ends[last - 1]) - base
        if len(group) == 1:
            buf[int(starts[first]) : int(starts[first]) + total] = payload[base : base + total]
        else:
            within = np.cumsum(group) - group
            buf[np.arange(total) + np.repeat(starts[first:last] - within, group)] = payload[
                base : base + total
            ]
        first = last


COPY_CHUNK_ROWS = 16_384  # rows encoded at a time while the server takes in the previous ones


class _EncodedRows(io.RawIOBase):
    """The COPY stream of a frame (header, rows, trailer), encoded a chunk of rows at a time as the driver
    reads it: the client encodes the next chunk while the server parses and indexes the last one (two
    processes, two cores), and only one chunk's encoding is held in memory."""

    def __init__(self, frame: pd.DataFrame, types: Sequence[Any]) -> None:
        super().__init__()
        self._frame, self._types = frame, types
        self._next_row = 0
        self._pending = memoryview(BINARY_HEADER)
        self._ended = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        while not len(self._pending):
            if self._next_row < len(self._frame):
                chunk = self._frame.iloc[self._next_row : self._next_row + COPY_CHUNK_ROWS]
                self._next_row += COPY_CHUNK_ROWS
                self._pending = memoryview(binary_copy_rows(chunk, self._types).tobytes())
            elif not self._ended:
                self._ended = True
                self._pending = memoryview(BINARY_TRAILER)
            else:
                return b""
        n = len(self._pending) if size is None or size < 0 else min(size, len(self._pending))
        out, self._pending = bytes(self._pending[:n]), self._pending[n:]
        return out


def copy_frame(conn: sa.Connection, table_name: str, frame: pd.DataFrame, types: Sequence[Any]) -> None:
    """COPY ... FROM STDIN (FORMAT binary) of every row of the frame, into the columns its names name."""
    quote = conn.dialect.identifier_preparer.quote
    with closing(conn.connection.dbapi_connection.cursor()) as cursor:  # type: ignore[union-attr]
        cursor.copy_expert(
            f"COPY {quote(table_name)} ({', '.join(quote(c) for c in frame.columns)}) FROM STDIN (FORMAT binary)",
            _EncodedRows(frame, types),
            size=1 << 20,
        )


# --- staging the frame in a temporary table ---------------------------------------------------------------
def stage_frame(conn: sa.Connection, target: sa.Table, frame: pd.DataFrame, name: str | None = None) -> str:
    """Bulk-copy the frame, numbered by `_n` (0, 1, ...), into a temporary table (`name`, by default
    `_load_<table>`; gone at rollback, dropped after use) with the target's column types. PostgreSQL:
    binary COPY, `_n` an identity column. Returns the table's name."""
    columns = list(frame.columns)
    quote = conn.dialect.identifier_preparer.quote
    name = name or f"_load_{target.name}"
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(name)}")
    if uses_copy(conn):
        ddl = ", ".join(f"{quote(c)} {target.c[c].type.compile(dialect=conn.dialect)}" for c in columns)
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {quote(name)} ({ddl}, "
            "_n BIGINT GENERATED ALWAYS AS IDENTITY (START WITH 0 MINVALUE 0)) ON COMMIT DROP"
        )
        copy_frame(conn, name, frame, [target.c[c].type for c in columns])
        return name
    temp = sa.Table(
        name,
        sa.MetaData(),
        *(sa.Column(c, target.c[c].type) for c in columns),
        # The batch number ranges over `_n`: as the key (SQLite: the rowid) each batch reads only its rows.
        sa.Column(
            "_n", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=False
        ),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )
    temp.create(conn)
    insert_frame(conn, temp, frame.assign(_n=np.arange(len(frame), dtype="int64")))
    return name


def insert_frame(conn: sa.Connection, target: sa.Table, frame: pd.DataFrame) -> None:
    """Insert every row of the frame into `target` (its columns named by the frame's), the fastest way the
    driver offers: binary COPY on PostgreSQL, the driver's executemany of plain tuples on SQLite."""
    if not len(frame):
        return
    columns = list(frame.columns)
    if uses_copy(conn):
        before_insert(conn, target.name)  # a first load builds an empty table's indexes after (`indexes`)
        copy_frame(conn, target.name, frame, [target.c[c].type for c in columns])
    elif conn.dialect.name == "sqlite":
        compiled = (
            sa.insert(target).values({c: sa.bindparam(c) for c in columns}).compile(dialect=conn.dialect)
        )
        values = {c: sqlite_values(frame[c]) for c in columns}
        tuples = list(zip(*(values[c] for c in compiled.positiontup or ()), strict=True))
        for batch in chunks(tuples, BATCH_ROWS):
            conn.exec_driver_sql(compiled.string, list(batch))
    else:
        lists = [python_values(frame[c]) for c in columns]
        dicts = [dict(zip(columns, row, strict=True)) for row in zip(*lists, strict=True)]
        for batch in chunks(dicts, BATCH_ROWS):
            conn.execute(sa.insert(target), list(batch))
