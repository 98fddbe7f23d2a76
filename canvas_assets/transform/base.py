"""Shared machinery of the transformers: options, results, quarantine records and column conversion.

A transformer turns the raw Canvas records of some courses (exactly what staging holds) into typed
DataFrames, one per Layer-1 table. Each column is declared once, in the warehouse model
(`warehouse/models.py`): its `info` says where it comes from in the record, and `fields_of` turns that into
the transformer's `Field`s (what kind of value it is, which profile option switches it on); conversion is
column-wise so that 100k records take about a second. A record whose value cannot be converted is quarantined as a `Rejected`
naming the field and the value; the rest of its course loads.

Conversion rules (canvas-api.md §4): ids are 64-bit integers, given as ints or digit strings; other integers
must fit their column (32 bits for an INTEGER); timestamps are ISO 8601 (`Z`, an offset or no zone, taken as
UTC; a date alone is midnight) as `datetime.fromisoformat` reads them, turned into UTC instants within years
1-9999; scores are finite floats; lists and objects become JSON text with sorted keys; an absent field and
a null field are both NULL; booleans stay booleans. A nested object (`grades`, `term`) that is present but
not an object quarantines the record, naming it.

Text is stored exactly or not at all: a value with a NUL character (which PostgreSQL text cannot hold, and
which Canvas, itself on PostgreSQL, never sends) or a lone surrogate (not Unicode; only a broken JSON escape
gives one) quarantines its record, naming the field; in JSON text a NUL is the escape `\\u0000`, which is
stored. The quarantine keeps the raw record, lone surrogates written as `\\udXXX` escape text
(`storable_payload`).
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from itertools import repeat
from typing import Any, Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa

from canvas_assets.errors import TransformationError

Kind = Literal["id", "int", "float", "str", "bool", "ts", "json"]
INT64_MAX = 2**63 - 1
INT_BITS_DEFAULT = 64

_DTYPES: dict[str, Any] = {
    "id": "Int64",
    "int": "Int64",
    "float": "float64",
    "str": "string",
    "bool": "boolean",
    "json": "string",
}
TS_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
TS_MIN = pd.Timestamp(datetime.min.replace(tzinfo=timezone.utc))  # what a Python datetime can hold
TS_MAX = pd.Timestamp(datetime.max.replace(tzinfo=timezone.utc))


@dataclass(frozen=True)
class TransformOptions:
    """Which optional column groups to produce (from the sync profile's `fields`).

    A group that is off is DROPPED from the frame, so the loader leaves those columns untouched in the
    database (a LIGHTWEIGHT sync does not wipe the syllabus a FULL sync stored).
    """

    course_public_info: bool = True  # is_public, public_description
    course_extended_info: bool = True  # syllabus_body, term_start_at, term_end_at
    course_settings: bool = True  # settings (JSON)
    student_basic_info: bool = True  # email, login_id, sis_user_id
    student_scores: bool = True  # enrollment scores and grades (+ score history)
    student_enrollment_details: bool = True  # last_activity_at, total_activity_time, last_attended_at

    def enabled(self, group: str | None) -> bool:
        return group is None or bool(getattr(self, group))

    @classmethod
    def from_profile(cls, profile: Any) -> TransformOptions:
        """The options of a sync profile: each is its `fields.<entity>.<group>` switch (`PROFILE_SWITCHES`)."""
        return cls(**{option: bool(profile.field_on(*switch)) for option, switch in PROFILE_SWITCHES.items()})


# The profile switch (`fields.<entity>.<group>`) behind each option, e.g. `courses.public_info`.
PROFILE_SWITCHES: dict[str, tuple[str, str]] = {
    "course_public_info": ("courses", "public_info"),
    "course_extended_info": ("courses", "extended_info"),
    "course_settings": ("courses", "settings"),
    "student_basic_info": ("students", "basic_info"),
    "student_scores": ("students", "scores"),
    "student_enrollment_details": ("students", "enrollment_details"),
}


@dataclass
class Rejected:
    """A record that could not be transformed: quarantined with a precise reason and the raw payload."""

    entity: str
    course_id: int | None
    canvas_id: int | None
    reason: str
    payload: dict[str, Any]
    # The Layer-1 table the record would have gone to (modules yield modules and module items). The loader
    # does not soft-delete a row whose record was quarantined: a malformed record is not a deletion.
    table: str | None = None


@dataclass
class TransformResult:
    entity: str
    tables: dict[str, pd.DataFrame]
    rejected: list[Rejected]
    records_in: int

    @property
    def rows_out(self) -> int:
        return sum(len(frame) for frame in self.tables.values())


@dataclass(frozen=True)
class Field:
    """One output column: `path` into the raw record, the kind of value, the option group that enables it."""

    column: str
    kind: Kind
    path: tuple[str, ...] = ()
    group: str | None = None
    required: bool = False
    bits: int = INT_BITS_DEFAULT  # width of an integer column: a value must fit it

    @property
    def source(self) -> str:
        return ".".join(self.path) if self.path else self.column

    def extract(
        self, records: Sequence[Mapping[str, Any]], cache: dict[str, list[Any]] | None = None
    ) -> list[Any]:
        """The raw values of this field, one per record (None when absent). `cache` shares the nested
        objects (e.g. an enrollment's `grades`) between the fields that read from them."""
        path = self.path or (self.column,)
        plain = cache.get(_PLAIN) if cache is not None else None
        if plain is None:
            plain = [_only(records, dict)]
            if cache is not None:
                cache[_PLAIN] = plain
        if len(path) == 1:
            return _get_all(records, path[0], plain[0])
        objects = nested_objects(records, path[0], cache, plain[0])
        values = list(map(dict.get, objects, repeat(path[1])))
        for key in path[2:]:
            values = [v.get(key) if v.__class__ is dict else None for v in values]
        return values


# --- the columns of a table, from the warehouse model ----------------------------------------------------
def _table(table_name: str) -> sa.Table:
    # Imported here: the warehouse package imports this module (Rejected, TransformResult).
    from canvas_assets.warehouse.models import table

    return table(table_name)


def kind_of(column: sa.Column[Any]) -> Kind:
    """The converter of a column read from Canvas: `info["kind"]`, else what its type says (a BIGINT is an id)."""
    kind = column.info.get("kind")
    if kind is not None:
        return kind  # type: ignore[no-any-return]
    t = column.type
    if isinstance(t, sa.BigInteger):
        return "id"
    if isinstance(t, sa.Integer):
        return "int"
    if isinstance(t, sa.Float):
        return "float"
    if isinstance(t, sa.Boolean):
        return "bool"
    if isinstance(t, sa.DateTime) or isinstance(getattr(t, "impl", None), sa.DateTime):
        return "ts"
    if isinstance(t, sa.String):
        return "str"
    raise TypeError(f"{column.table.name}.{column.name}: no converter for type {t!r}; give info['kind']")


@cache
def fields_of(table_name: str) -> tuple[Field, ...]:
    """The `Field`s of a Layer-1 table: its model's columns that are read from the Canvas record (`info["path"]`),
    in table order."""
    fields = []
    for column in _table(table_name).columns:
        info = column.info
        if "path" not in info:
            continue
        path = tuple(info["path"].split("."))
        fields.append(
            Field(
                column.name,
                kind_of(column),
                () if path == (column.name,) else path,
                info.get("group"),
                bool(info.get("required", False)),
                _bits(column.type),
            )
        )
    return tuple(fields)


def _bits(column_type: Any) -> int:
    """The width of an integer column (what a value must fit); 64 for the others."""
    if isinstance(column_type, sa.SmallInteger):
        return 16
    if isinstance(column_type, sa.Integer) and not isinstance(column_type, sa.BigInteger):
        return 32
    return INT_BITS_DEFAULT


@cache
def key_of(table_name: str) -> tuple[str, ...]:
    """The primary key of a table: rows are deduplicated on it (first occurrence wins)."""
    return tuple(c.name for c in _table(table_name).primary_key.columns)


@cache
def columns_of(table_name: str) -> tuple[str, ...]:
    return tuple(c.name for c in _table(table_name).columns)


@cache
def staging_course_column(table_name: str) -> str | None:
    """The column the staging course fills: always (`info["source"]`) or where the record has none
    (`info["fallback"]`). None when the table has no such column."""
    from canvas_assets.warehouse.models import STAGING_COURSE

    for column in _table(table_name).columns:
        if STAGING_COURSE in (column.info.get("source"), column.info.get("fallback")):
            return column.name
    return None


def in_table_order(frame: pd.DataFrame, table_name: str) -> pd.DataFrame:
    """The frame's columns in the order of the table's."""
    order = [c for c in columns_of(table_name) if c in frame.columns]
    if len(order) != len(frame.columns):
        raise TransformationError(
            f"{table_name}: columns not in the model: {sorted(set(frame.columns) - set(order))}",
            stage="transform",
        )
    return frame if order == list(frame.columns) else frame[order]


_PLAIN = "\x00plain"  # cache entry: are the records all plain dicts


def _get_all(records: Sequence[Mapping[str, Any]], key: str, plain: bool) -> list[Any]:
    """`record.get(key)` for every record, the loop in C when the records are plain dicts."""
    if plain:
        return list(map(dict.get, records, repeat(key)))  # type: ignore[arg-type]
    return [r.get(key) for r in records]


def _only(values: Sequence[Any], *types: type) -> bool:
    """Whether every value is exactly one of `types` (None allowed when NoneType is given). One C-level pass."""
    return set(map(type, values)) <= set(types)


_EMPTY: dict[str, Any] = {}
NONE = type(None)


def nested_objects(
    records: Sequence[Mapping[str, Any]], outer: str, cache: dict[str, list[Any]] | None, plain: bool
) -> list[dict[str, Any]]:
    """The object under `outer` of every record, an empty one where it is absent or not an object (that
    record is quarantined by `not_objects_under`)."""
    objects = cache.get(outer) if cache is not None else None
    if objects is None:
        objects = _get_all(records, outer, plain)
        if not _only(objects, dict):
            objects = [v if v.__class__ is dict else _EMPTY for v in objects]
        if cache is not None:
            cache[outer] = objects
    return objects


def not_objects_under(records: Sequence[Mapping[str, Any]], outer: str) -> dict[int, str]:
    """Reasons for the records whose `outer` is present but not an object (the fields under it cannot be
    read, so reading them as NULL would hide that the record is malformed)."""
    values = _get_all(records, outer, _only(records, dict))
    if _only(values, dict, NONE):
        return {}
    return {
        i: f"{outer}: not an object: {_short(v)}"
        for i, v in enumerate(values)
        if v is not None and v.__class__ is not dict
    }


# --- scalar converters: return (value, error) -------------------------------------------------------------
_BAD = object()


def _digit_string(s: str) -> int | None:
    """The integer an ASCII digit string spells; None when it is no such string or too long for any column
    (int() refuses strings of over 4300 digits, and no column holds 20)."""
    if s.isascii() and s.isdigit() and len(s.lstrip("0")) <= 20:
        return int(s)
    return None


def to_id(value: Any) -> Any:
    """A Canvas id as int, or `_BAD`. Accepts ints and digit strings (Canvas string-id mode)."""
    if type(value) is int:
        return value if 0 <= value <= INT64_MAX else _BAD
    if isinstance(value, str):
        n = _digit_string(value)
        return n if n is not None and n <= INT64_MAX else _BAD
    return _BAD


def int_range(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _to_int(value: Any, bits: int = INT_BITS_DEFAULT) -> Any:
    """An integer that fits a `bits`-wide column: an int, an integral float or a (signed) digit string."""
    n: int | None = None
    if type(value) is int:
        n = value
    elif type(value) is float and value.is_integer():
        n = int(value)
    elif isinstance(value, str):
        s = value.strip()
        negative = s.startswith("-")
        n = _digit_string(s[1:] if negative else s)
        if n is not None and negative:
            n = -n
    low, high = int_range(bits)
    return n if n is not None and low <= n <= high else _BAD


def _to_float(value: Any) -> Any:
    if type(value) is float:
        return value if math.isfinite(value) else _BAD
    if type(value) is int or isinstance(value, str):
        try:
            f = float(value)
        except (ValueError, OverflowError):  # not a number; an int past the float range
            return _BAD
        return f if math.isfinite(f) else _BAD
    return _BAD


def _to_str(value: Any) -> Any:
    """Text; a number becomes its decimal text (a finite one: `nan` is not what the record said)."""
    if isinstance(value, str):
        return value
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        try:
            return str(value)
        except ValueError:  # an int of more digits than Python turns into text
            return _BAD
    return _BAD


def _to_bool(value: Any) -> Any:
    if type(value) is bool:
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return _BAD


def to_json_text(value: Any) -> str:
    """Stable JSON text: sorted keys, compact, unicode kept; NaN and infinities refused (not JSON)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str, allow_nan=False
    )


def _to_json(value: Any) -> Any:
    try:
        return to_json_text(value)
    except (TypeError, ValueError, RecursionError):  # RecursionError: nested deeper than json writes
        return _BAD


def storable_text(text: str) -> bool:
    """Whether both databases store `text` as it is: no NUL, no lone surrogate (which is not UTF-8)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unstorable(values: Sequence[Any]) -> list[int]:
    """Positions of the text values that `storable_text` refuses. One pass over the joined text in C; the
    positions are looked for only when there is one."""
    texts = [v for v in values if v.__class__ is str]
    if not texts or storable_text("".join(texts)):
        return []
    return [i for i, v in enumerate(values) if v.__class__ is str and not storable_text(v)]


def parse_iso(text: str) -> datetime | None:
    """An ISO 8601 timestamp as `datetime.fromisoformat` reads it, as a UTC instant (no zone: UTC); None when
    it is not one or its UTC instant falls outside years 1-9999 (what a datetime holds)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    try:
        return (
            parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
        )
    except OverflowError:
        return None


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "id": to_id,
    "int": _to_int,
    "float": _to_float,
    "str": _to_str,
    "bool": _to_bool,
    "json": _to_json,
}

_KIND_WORDS = {
    "id": "not a valid Canvas id",
    "int": "not an integer",
    "float": "not a number",
    "str": "not a string",
    "bool": "not a boolean",
    "json": "not JSON-serialisable",
    "ts": "not an ISO 8601 timestamp",
}


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 200
_REPR.maxlevel = 3


def _short(value: Any, limit: int = 80) -> str:
    """A short repr for a reason (non-printable characters escaped, deep nesting and long text cut)."""
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # an int of too many digits to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def storable_payload(value: Any) -> Any:
    """`value` as the quarantine can store it (JSON text): itself, unless some text in it (a key or a value)
    has a lone surrogate, which is not UTF-8: then a copy with each one written as its `\\udXXX` escape."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
        return value
    except UnicodeEncodeError:
        return _escape_surrogates(value)
    except (TypeError, ValueError, RecursionError):
        return value  # not storable for another reason: the writer's JSON fallback decides


def _escape_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_escape_surrogates(k): _escape_surrogates(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escape_surrogates(v) for v in value]
    return value


def convert_column(f: Field, raw: list[Any]) -> tuple[pd.Series, np.ndarray]:
    """Convert one column; returns the typed series and a boolean mask of values that failed.

    Hot path: values that already have the right type pass through without a function call, and the
    (rare) failures are located only when a scan says there is one.
    """
    n = len(raw)
    if f.kind == "ts":
        return _timestamp_column(raw)
    fast = _fast_column(f.kind, raw, f.bits)
    if fast is not None:
        bad = np.zeros(n, dtype=bool)
        if f.kind == "str":
            unstorable = _unstorable(raw)
            if unstorable:
                bad[unstorable] = True
                fast[unstorable] = None
        return fast, bad
    if f.kind == "str":
        values = [v if v.__class__ is str or v is None else _to_str(v) for v in raw]
    elif f.kind == "bool":
        values = [v if v.__class__ is bool or v is None else _to_bool(v) for v in raw]
    elif f.kind == "id":
        values = [
            v if v.__class__ is int and 0 <= v <= INT64_MAX else (None if v is None else to_id(v))
            for v in raw
        ]
    elif f.kind == "float":  # finite floats pass (v - v is NaN for inf and NaN)
        values = [
            v if v.__class__ is float and v - v == 0.0 else (None if v is None else _to_float(v)) for v in raw
        ]
    elif f.kind == "int":
        values = [None if v is None else _to_int(v, f.bits) for v in raw]
    else:
        conv = _CONVERTERS[f.kind]
        values = [None if v is None else conv(v) for v in raw]
    bad = np.zeros(n, dtype=bool)
    positions = [i for i, v in enumerate(values) if v is _BAD] if _BAD in values else []
    if f.kind in ("str", "json"):
        positions += _unstorable(values)
    if positions:  # a C-level scan found one; the positions are looked for only then
        bad[positions] = True
        for i in positions:
            values[i] = None
    if f.kind == "float":
        series = pd.Series(np.array([np.nan if v is None else v for v in values], dtype="float64"))
    else:
        series = pd.Series(values, dtype=_DTYPES[f.kind])
    return series, bad


def _timestamp_column(raw: list[Any]) -> tuple[pd.Series, np.ndarray]:
    """ISO 8601 text -> UTC instants: pandas' parser for the column, `parse_iso` for what it refuses (years
    outside its nanosecond range, forms such as a lower-case `t`), so that what is accepted is exactly what
    `datetime.fromisoformat` reads."""
    obj = pd.Series(raw, dtype=object)
    present = obj.notna().to_numpy()
    not_str = (
        []
        if _only(raw, str, NONE)
        else [i for i, v in enumerate(raw) if v is not None and v.__class__ is not str]
    )
    if not_str:
        obj[not_str] = None
    parsed = pd.to_datetime(obj, utc=True, format="ISO8601", errors="coerce").astype(TS_DTYPE)
    # pandas may parse at a resolution that reaches past what a datetime (and the databases' drivers)
    # hold: an instant outside years 1-9999 in UTC is refused (`parse_iso` refuses it too).
    outside = ((parsed < TS_MIN) | (parsed > TS_MAX)).to_numpy(dtype=bool, na_value=False)
    if outside.any():
        parsed[outside] = pd.NaT
    bad = present & parsed.isna().to_numpy()
    if not_str:
        bad[not_str] = True
    if bad.any():
        for i in np.flatnonzero(bad).tolist():
            instant = parse_iso(raw[i]) if raw[i].__class__ is str else None
            if instant is not None:
                parsed.iloc[i] = pd.Timestamp(instant)
                bad[i] = False
    return parsed, bad


def _fast_column(kind: str, raw: list[Any], bits: int = INT_BITS_DEFAULT) -> pd.Series | None:
    """The whole column at C speed when every value already has the right type and range (the usual case);
    None when some value needs the per-value converter (or may be bad)."""
    types = set(map(type, raw))
    types.discard(NONE)
    try:
        if kind == "str" and types <= {str}:
            return pd.Series(raw, dtype="string")
        if kind == "bool" and types <= {bool}:
            return pd.Series(raw, dtype="boolean")
        if kind in ("id", "int") and types <= {int}:
            with np.errstate(all="raise"):  # out of int64 range: the slow path rejects it by name
                series = pd.Series(pd.array(raw, dtype="Int64"))
            low, high = (0, INT64_MAX) if kind == "id" else int_range(bits)
            lowest, highest = series.min(), series.max()
            if lowest is not pd.NA and (lowest < low or highest > high):
                return None
            return series
        if kind == "float" and types <= {float, int}:
            values = np.array(raw, dtype="float64")
            # None became NaN; a NaN or infinity of the record itself is bad (slow path finds it).
            if int(np.count_nonzero(~np.isfinite(values))) != raw.count(None):
                return None
            return pd.Series(values)
    except (OverflowError, TypeError, ValueError, FloatingPointError):
        return None
    return None


def reason_for(f: Field, value: Any) -> str:
    if value is None:
        return f"{f.source}: missing (required)"
    if f.kind in ("str", "json"):
        text = _to_json(value) if f.kind == "json" else value if isinstance(value, str) else None
        if isinstance(text, str) and not storable_text(text):
            problem = (
                "contains a NUL character (no text column can hold it as it is)"
                if "\x00" in text
                else "not valid Unicode (a lone surrogate)"
            )
            return f"{f.source}: {problem}: {_short(value)}"
    return f"{f.source}: {_KIND_WORDS[f.kind]}: {_short(value)}"


@dataclass
class Frame:
    """The outcome of converting records with a list of fields: typed frame plus per-row rejection reasons."""

    frame: pd.DataFrame
    reasons: dict[int, str] = field(default_factory=dict)  # row position -> reason


def build_frame(
    records: Sequence[Mapping[str, Any]],
    fields: Sequence[Field],
    options: TransformOptions,
    *,
    extra: Mapping[str, list[Any] | np.ndarray] | None = None,
) -> Frame:
    """Convert `records` column by column; rows with a bad (or missing required) value get a reason."""
    data: dict[str, Any] = {}
    bad_rows: dict[int, str] = {}
    cache: dict[str, list[Any]] = {}

    def add(pos: int, reason: str) -> None:
        bad_rows[pos] = f"{bad_rows[pos]}; {reason}" if pos in bad_rows else reason

    enabled = [f for f in fields if options.enabled(f.group)]
    for outer in dict.fromkeys(f.path[0] for f in enabled if len(f.path) > 1):
        for pos, reason in not_objects_under(records, outer).items():
            add(pos, reason)
    for f in enabled:
        raw = f.extract(records, cache)
        series, bad = convert_column(f, raw)
        if f.required and None in raw:
            bad = bad | np.array([v is None for v in raw], dtype=bool)
        if bad.any():
            for pos in np.flatnonzero(bad).tolist():
                add(pos, reason_for(f, raw[pos]))
        data[f.column] = series
    if extra:
        for column, values in extra.items():
            data[column] = values
    frame = pd.DataFrame(data, index=pd.RangeIndex(len(records)))
    return Frame(frame, bad_rows)


def finish(frame: pd.DataFrame, drop_rows: Sequence[int], key: Sequence[str]) -> pd.DataFrame:
    """Drop rejected rows, deduplicate on the table key (first occurrence wins), reset the index."""
    return surviving(frame, drop_rows, key).reset_index(drop=True)


def surviving(frame: pd.DataFrame, drop_rows: Sequence[int], key: Sequence[str]) -> pd.DataFrame:
    """The rows that are kept, under their record positions: rejected rows dropped, the first of each key."""
    if len(drop_rows):
        frame = frame.drop(index=list(drop_rows))
    if len(frame):
        frame = frame.drop_duplicates(subset=list(key), keep="first")
    return frame


def canvas_id_of(record: Any, key: str = "id") -> int | None:
    if not isinstance(record, Mapping):
        return None
    value = to_id(record.get(key))
    return None if value is _BAD else int(value)


def flatten(
    records_by_course: Mapping[int, list[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], np.ndarray, list[tuple[int, Any]]]:
    """All records of all courses in one list, the staging course of each, and the non-object records."""
    records: list[dict[str, Any]] = []
    courses: list[int] = []
    not_objects: list[tuple[int, Any]] = []
    for course_id, course_records in records_by_course.items():
        cid = int(course_id)
        for record in course_records or ():
            if isinstance(record, dict):
                records.append(record)
                courses.append(cid)
            else:
                not_objects.append((cid, record))
    return records, np.asarray(courses, dtype="int64"), not_objects


def not_object_rejections(entity: str, table: str, items: list[tuple[int, Any]]) -> list[Rejected]:
    return [
        Rejected(
            entity=entity,
            course_id=cid,
            canvas_id=None,
            reason=f"record is not a JSON object: {_short(rec)}",
            payload=storable_payload({"value": rec}),
            table=table,
        )
        for cid, rec in items
    ]


class Transformer:
    """One staging entity's transformer: raw records per course in, typed frames per table out."""

    def __init__(
        self,
        entity: str,
        tables: tuple[str, ...],
        build: Callable[[Mapping[int, list[dict[str, Any]]], TransformOptions], TransformResult],
        description: str = "",
    ) -> None:
        self.entity = entity
        self.tables = tables
        self._build = build
        self.description = description

    def __call__(
        self, records_by_course: Mapping[int, Sequence[Any]], options: TransformOptions | None = None
    ) -> TransformResult:
        """Transform raw records per course (lists, or staging's lazily decoded `StagedRecords`), in course
        chunks of at most CHUNK_RECORDS records so that only one chunk's decoded records are alive."""
        try:
            return transform_in_chunks(self._build, records_by_course, options or TransformOptions())
        except TransformationError:
            raise
        except Exception as exc:  # a bug or an unforeseen shape: fail the step, not one record
            raise TransformationError(
                f"{self.entity} transformer failed: {type(exc).__name__}: {exc}", stage="transform"
            ) from exc

    def __repr__(self) -> str:
        return f"Transformer(entity={self.entity!r}, tables={self.tables!r})"


def transform_records(
    entity: str,
    table: str,
    fields: Sequence[Field],
    records_by_course: Mapping[int, list[dict[str, Any]]],
    options: TransformOptions,
    *,
    id_key: str = "id",
) -> tuple[pd.DataFrame, list[Rejected], int]:
    """The common path: records of all courses -> one frame for `table`, rejected records, records in.

    The table's model gives the key (rows are deduplicated on it), the column order and the column the staging
    course fills (`staging_course_column`): always, or, when a field of that name exists (the record carries
    its own `course_id`), only where the record has none.
    """
    t = transform_table(entity, table, fields, records_by_course, options, id_key=id_key)
    return t.frame, t.rejected, t.records_in


@dataclass
class TableTransform:
    """`transform_records` with what a parent table's transformer needs to find its children: the records
    (all courses, flattened), the staging course of each and the positions of those whose row was kept."""

    frame: pd.DataFrame
    rejected: list[Rejected]
    records_in: int
    records: list[dict[str, Any]]
    courses: np.ndarray
    kept: list[int]


def transform_table(
    entity: str,
    table: str,
    fields: Sequence[Field],
    records_by_course: Mapping[int, list[dict[str, Any]]],
    options: TransformOptions,
    *,
    id_key: str = "id",
) -> TableTransform:
    """See `transform_records`."""
    key = key_of(table)
    course_column = staging_course_column(table)
    records, courses, not_objects = flatten(records_by_course)
    rejected = not_object_rejections(entity, table, not_objects)
    has_course_field = any(f.column == course_column for f in fields)
    extra = None
    if course_column and not has_course_field:
        extra = {course_column: courses}
    built = build_frame(records, fields, options, extra=extra)
    frame = built.frame
    if course_column and has_course_field:
        column = frame[course_column]
        frame[course_column] = column.fillna(pd.Series(courses, dtype="Int64"))
    frame = in_table_order(frame, table)
    for pos, reason in sorted(built.reasons.items()):
        record = records[pos]
        rejected.append(
            Rejected(
                entity=entity,
                course_id=int(courses[pos]),
                canvas_id=canvas_id_of(record, id_key),
                reason=reason,
                payload=storable_payload(record),
                table=table,
            )
        )
    frame = surviving(frame, list(built.reasons), key)
    kept = frame.index.tolist()
    frame = frame.reset_index(drop=True)
    non_null = [*key, *(f.column for f in fields if f.required)]
    if course_column:
        non_null.append(course_column)
    frame = as_int64(frame, non_null)
    return TableTransform(frame, rejected, len(records) + len(not_objects), records, courses, kept)


def as_int64(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Nullable `Int64` columns that cannot hold NULL any more become plain `int64`."""
    for column in columns:
        if column in frame and frame[column].dtype == "Int64" and not frame[column].isna().any():
            frame[column] = frame[column].astype("int64")
    return frame


# Records per transformation chunk. Staging hands records over lazily (JSON text per course, decoded when
# iterated), so transforming a ranged run course chunk by course chunk keeps only one chunk's decoded
# records in memory at a time, not the whole range's.
CHUNK_RECORDS = 10_000


def _course_chunks(records_by_course: Mapping[int, Any], limit: int) -> list[dict[int, Any]]:
    chunks: list[dict[int, Any]] = []
    current: dict[int, Any] = {}
    size = 0
    for course_id, records in records_by_course.items():
        n = len(records) if records is not None else 0
        if current and size + n > limit:
            chunks.append(current)
            current, size = {}, 0
        current[course_id] = records
        size += n
    if current or not chunks:
        chunks.append(current)
    return chunks


def transform_in_chunks(
    build: Callable[[Mapping[int, list[dict[str, Any]]], TransformOptions], TransformResult],
    records_by_course: Mapping[int, Any],
    options: TransformOptions,
) -> TransformResult:
    """Run `build` over course chunks of at most CHUNK_RECORDS records and concatenate the results."""
    chunks = _course_chunks(records_by_course, CHUNK_RECORDS)
    if len(chunks) == 1:
        return build(chunks[0], options)
    parts = [build(chunk, options) for chunk in chunks]
    tables: dict[str, pd.DataFrame] = {}
    for name in parts[0].tables:
        frames = [p.tables[name] for p in parts if len(p.tables[name])] or [parts[0].tables[name]]
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        key = list(key_of(name))  # first occurrence wins across chunks, as within one
        if len(frames) > 1 and all(k in frame.columns for k in key):
            frame = frame.drop_duplicates(subset=key, keep="first").reset_index(drop=True)
        tables[name] = frame
    return TransformResult(
        parts[0].entity,
        tables,
        [r for p in parts for r in p.rejected],
        sum(p.records_in for p in parts),
    )
