"""Property-based tests of every transformer: hostile and malformed Canvas records, generated from the models.

The records are built from each table's columns (`fields_of`): every Canvas column gets, at its record path
(nested objects for dotted paths such as an enrollment's `grades.current_score`, each module's `items`
list for module items), either nothing, null, a valid value of its kind or a hostile one: the wrong type,
100k-character text, NUL bytes, lone surrogates, HTML and SQL, ids past 2^63, NaN, timestamps of every
form. The expected outcome of each record comes from a reference reading of the conversion rules
(`transform/base.py` docstring, docs/canvas-api.md §4) written here value by value, independently of the
transformers' column-wise code. A new entity in `TRANSFORMERS` is covered without touching this file
(unless it nests a child table in a list: then `CHILD_LISTS` must name the key).

Profiles (`CANVAS_ASSETS_HYPOTHESIS`): `ci`, the default, is derandomized and keeps no example database, so
CI is reproducible and leaves nothing in the tree; `shrink` runs the same examples and shrinks a failure;
`thorough` explores far more examples at random.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from canvas_assets.transform import TRANSFORMERS, TransformOptions
from canvas_assets.transform.schema import Field, fields_of, key_of, staging_course_column
from canvas_assets.warehouse.columns import PARENT_MODULE
from canvas_assets.warehouse.models import table

_HEALTH = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
    HealthCheck.function_scoped_fixture,  # the warehouses are reset by the test between examples
]
# ci: the same examples on every run (derandomized), no example database, no shrinking (a failure is
# reported as found: shrinking 100k-character records can take minutes). shrink: the same examples, a
# failure shrunk to a minimal one. thorough: many random examples, for exploring after a change.
settings.register_profile(
    "ci",
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=_HEALTH,
)
settings.register_profile("shrink", parent=settings.get_profile("ci"), phases=list(Phase))
settings.register_profile(
    "thorough", max_examples=1000, database=None, deadline=None, suppress_health_check=_HEALTH
)
settings.load_profile(os.environ.get("CANVAS_ASSETS_HYPOTHESIS", "ci"))
EXAMPLES = settings.default.max_examples
LOAD_EXAMPLES = max(15, EXAMPLES // 20)  # each one is a real load

# A table whose records sit in a list inside the parent table's records: the key of that list.
CHILD_LISTS = {"canvas_module_items": "items"}
SEQ = "test_seq"  # an extra key on every generated object record, to find it among the rejected ones
UTC = timezone.utc
INT_RANGE = {32: (-(2**31), 2**31 - 1), 64: (-(2**63), 2**63 - 1)}
ID_MAX = 2**63 - 1


# --- what the rules say a value becomes: the reference reading -----------------------------------------
class Bad:
    """A value the rules refuse (the record is quarantined, naming the field)."""


BAD = Bad()


def _bits(table_name: str, column: str) -> int:
    return 64 if isinstance(table(table_name).c[column].type, sa.BigInteger) else 32


def _storable_text(s: str) -> bool:
    """Text both databases store as it is: no NUL (PostgreSQL refuses it), no lone surrogate (not UTF-8)."""
    if "\x00" in s:
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _digits(s: str) -> int | None:
    """The integer an ASCII digit string spells (None for a number too long for any column)."""
    return int(s) if len(s.lstrip("0")) <= 20 else None


def expected_timestamp(text: str) -> Any:
    """An ISO 8601 date or date-time as Python reads it (`Z`, an offset or no zone, taken as UTC), as a UTC
    instant that a Python datetime can hold (years 1 to 9999), else BAD."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return BAD
    try:
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:  # the UTC instant falls outside years 1-9999
        return BAD


def expected_value(kind: str, bits: int, v: Any) -> Any:
    """What a column of `kind` (`bits` wide, for integers) holds for the record value `v`: None, a value, BAD."""
    if v is None:
        return None
    if kind == "id":
        if type(v) is int:
            return v if 0 <= v <= ID_MAX else BAD
        if type(v) is str and v.isascii() and v.isdigit():
            n = _digits(v)
            return n if n is not None and n <= ID_MAX else BAD
        return BAD
    if kind == "int":
        lo, hi = INT_RANGE[bits]
        n: Any = BAD
        if type(v) is int:
            n = v
        elif type(v) is float and v.is_integer():
            n = int(v)
        elif type(v) is str:
            s = v.strip()
            body = s[1:] if s.startswith("-") else s
            if body.isascii() and body.isdigit():
                n = _digits(body)
                n = BAD if n is None else (-n if s.startswith("-") else n)
        return n if n is not BAD and lo <= n <= hi else BAD
    if kind == "float":
        try:
            f = float(v) if type(v) in (float, int, str) else BAD
        except (ValueError, OverflowError):
            return BAD
        return f if f is not BAD and math.isfinite(f) else BAD
    if kind == "str":
        if type(v) is str:
            s = v
        elif type(v) is int:
            try:
                s = str(v)
            except ValueError:  # more digits than Python turns into text
                return BAD
        elif type(v) is float and math.isfinite(v):
            s = repr(v)
        else:
            return BAD
        return s if _storable_text(s) else BAD
    if kind == "bool":
        if type(v) is bool:
            return v
        if type(v) is str and v.lower() in ("true", "false"):
            return v.lower() == "true"
        return BAD
    if kind == "json":
        try:
            text = json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError):
            return BAD
        return text if _storable_text(text) else BAD
    if kind == "ts":
        return expected_timestamp(v) if type(v) is str else BAD
    raise AssertionError(f"unknown kind {kind}")


_ABSENT = object()


def _at(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


@dataclass
class Outcome:
    """The reference outcome of one object record for one table."""

    row: dict[str, Any] | None  # the row it becomes (None: quarantined)
    bad: list[str] = field(default_factory=list)  # the sources the reason must name


def expected_outcome(
    table_name: str, record: dict[str, Any], options: TransformOptions, course: int, parent: int | None = None
) -> Outcome:
    row: dict[str, Any] = {}
    bad: list[str] = []
    fields = [f for f in fields_of(table_name) if options.enabled(f.group)]
    for outer in sorted({f.path[0] for f in fields if len(f.path) > 1}):
        value = record.get(outer)
        if value is not None and type(value) is not dict:
            bad.append(outer)  # an object expected (e.g. `grades`): the fields under it cannot be read
    for f in fields:
        if f.path and f.path[0] in bad:
            continue
        raw = _at(record, f.path or (f.column,))
        value = expected_value(f.kind, _bits(table_name, f.column), raw)
        if value is BAD or (value is None and f.required):
            bad.append(f.source)
        row[f.column] = value
    course_column = staging_course_column(table_name)
    if course_column and row.get(course_column) is None:
        row[course_column] = course
    for column in table(table_name).columns:
        if column.info.get("source") == PARENT_MODULE:
            row[column.name] = parent
    return Outcome(None if bad else row, bad)


# --- the strategies: records built from the model's columns ------------------------------------------------
def _huge(unit: str) -> str:
    return unit * (100_000 // len(unit))


SURROGATES = st.sampled_from(["\ud800", "\udfff", "\udc80", "\ud83d"])
ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\ufeffBOM",
        "\u202eevil",
        "e\u0301",
        "\uffff",
        "\U0010ffff",
        "𝕳𝖊𝖑𝖑𝖔 🎓",
        "\u2028line\u2029",
        "<script>alert('x')</script>",
        '<img src=x onerror="alert(1)">',
        "Robert'); DROP TABLE canvas_students;--",
        "' OR '1'='1",
        "\\x00 not a NUL",
        "%s %(name)s {0} $1",
        "NULL",
        "null",
    ]
)
HUGE_TEXT = st.sampled_from(["a", "é", "🎓", "<p>x</p>", "x\n"]).map(_huge)
CANVAS_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)  # as Canvas sends
VALID_TEXT = st.one_of(CANVAS_TEXT, CANVAS_TEXT, CANVAS_TEXT, ODD_TEXT, HUGE_TEXT)  # huge: one in five
NUL_TEXT = st.builds(lambda a, b: f"{a}\x00{b}", st.text(max_size=5), st.text(max_size=5))
SURROGATE_TEXT = st.builds(lambda a, s, b: a + s + b, st.text(max_size=5), SURROGATES, st.text(max_size=5))
NUMERIC_TEXT = st.sampled_from(
    [
        "12",
        " 7 ",
        "007",
        "-3",
        "--5",
        "-",
        "+5",
        "1e5",
        "1.5",
        "1_000",
        "١٢",
        "0x10",
        "NaN",
        "inf",
        "-0",
        "99999999999999999999",
        "9223372036854775807",
        "9223372036854775808",
        "1" * 5000,
        "2147483648",
    ]
)
BOOL_TEXT = st.sampled_from(["true", "false", "True", "FALSE", "yes", "no", "1", "0", "t", ""])


@st.composite
def _iso(draw: st.DrawFn) -> str:
    """An ISO 8601 timestamp in one of the forms Canvas or a proxy may send."""
    naive = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    form = draw(
        st.sampled_from(["Z", "offset", "naive", "date", "space", "frac", "compact-offset", "lower-t"])
    )
    minutes = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    sign, mins = ("-" if minutes < 0 else "+"), abs(minutes)
    offset = f"{sign}{mins // 60:02d}:{mins % 60:02d}"
    base = f"{naive.year:04d}-{naive.month:02d}-{naive.day:02d}T{naive.hour:02d}:{naive.minute:02d}:{naive.second:02d}"
    if form == "Z":
        return base + "Z"
    if form == "offset":
        return base + offset
    if form == "naive":
        return base
    if form == "date":
        return base[:10]
    if form == "space":
        return base.replace("T", " ") + offset
    if form == "frac":
        return f"{base}.{naive.microsecond:06d}{draw(st.sampled_from(['', '789']))}Z"
    if form == "compact-offset":
        return base + offset.replace(":", "")
    return base.replace("T", "t") + "Z"


EDGE_TIMESTAMPS = st.sampled_from(
    [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        "0001-01-01T00:30:00+01:00",  # year 0 in UTC
        "9999-12-31T23:59:59-01:00",  # year 10000 in UTC
        "0000-01-01T00:00:00Z",
        "10000-01-01T00:00:00Z",
        "1677-09-21T00:12:43Z",
        "2262-04-11T23:47:17Z",
        "2300-01-01T00:00:00Z",
        "1500-06-01T12:00:00+01:00",
    ]
)
GARBAGE_TIMESTAMPS = st.sampled_from(
    [
        "",
        "soon",
        "2025-02-30T00:00:00Z",
        "2025-13-01T00:00:00Z",
        "2025-01-01T24:00:00Z",
        "2025-01-01T00:00:60Z",
        "2025-01-01T00:00:00+25:00",
        "2025-01-01T00:00:00Q",
        "01/02/2025",
        "2025-01-01T00:00:00ZZ",
        "1700000000",
        "1700000000.5",
        "T",
        "-",
    ]
)
EPOCHS = st.one_of(st.integers(0, 2**34), st.floats(0, 2e9), st.just(1_700_000_000))
ANY_TIMESTAMP = st.one_of(_iso(), EDGE_TIMESTAMPS, GARBAGE_TIMESTAMPS, EPOCHS, st.text(max_size=30))

_DEEP: Any = []  # as deep as json.loads reads (the client falls back to it past orjson's 1024 levels)
for _ in range(950):
    _DEEP = [_DEEP]
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False)
)
JSON_VALUES = st.recursive(
    st.one_of(JSON_SCALARS, st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
BIG_INTS = st.sampled_from(
    [2**63 - 1, 2**63, 2**64, -(2**63), -(2**63) - 1, 2**31, -(2**31) - 1, 10**30, 10**4000]
)

# Anything but null, an object or a list: what a field, a nested object or a list of children must survive.
SCALARS = st.one_of(
    st.booleans(),
    BOOL_TEXT,
    st.integers(),
    st.integers(max_value=-1),
    BIG_INTS,
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, 1e16, 3.0]),
    st.text(max_size=20),
    ODD_TEXT,
    HUGE_TEXT,
    NUL_TEXT,
    SURROGATE_TEXT,
    NUMERIC_TEXT,
    ANY_TIMESTAMP,
)
CONTAINERS = st.one_of(
    st.lists(JSON_SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=5), JSON_SCALARS, max_size=3),
    JSON_VALUES,
    st.just(_DEEP),
    st.dictionaries(SURROGATE_TEXT, JSON_SCALARS, min_size=1, max_size=1),
)
HOSTILE = st.one_of(st.none(), SCALARS, CONTAINERS)
NOT_AN_OBJECT = st.one_of(SCALARS, st.lists(JSON_SCALARS, max_size=3), st.just(_DEEP))
NOT_A_LIST = st.one_of(SCALARS, st.dictionaries(st.text(max_size=5), JSON_SCALARS, max_size=3))


def valid_values(table_name: str, f: Field) -> st.SearchStrategy[Any]:
    """Values Canvas itself may send for the field (as its API documents the kind)."""
    if f.kind == "id":
        ids = st.one_of(st.integers(1, 6), st.integers(0, ID_MAX), st.sampled_from([2**31 + 1, ID_MAX]))
        return st.one_of(ids, ids.map(str)) if f.required else ids
    if f.kind == "int":
        lo, hi = INT_RANGE[_bits(table_name, f.column)]
        return st.integers(lo, hi)
    if f.kind == "float":
        return st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53))
    if f.kind == "str":
        return VALID_TEXT
    if f.kind == "bool":
        return st.booleans()
    if f.kind == "ts":
        return st.one_of(_iso(), EDGE_TIMESTAMPS.filter(lambda t: expected_timestamp(t) is not BAD))
    if f.kind == "json":
        return JSON_VALUES
    raise AssertionError(f.kind)


def field_values(table_name: str, f: Field, hostile: bool) -> st.SearchStrategy[Any]:
    """A present value: valid (or null, when the field may be null) or, when hostile, anything at all."""
    valid = valid_values(table_name, f)
    if f.required and not hostile:
        return valid
    if not hostile:
        return st.one_of(st.none(), valid)
    return st.one_of(st.none(), valid, HOSTILE)


_seq = iter(range(1 << 62))


def _tagged(record: dict[str, Any]) -> dict[str, Any]:
    record[SEQ] = next(_seq)
    return record


@cache
def object_records(table_name: str, hostile: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Canvas-shaped objects for `table_name`: every field at its path (a dotted path is a nested object),
    any of them absent (a required one only when hostile), plus an unknown key now and then."""
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    nested: dict[str, dict[str, st.SearchStrategy[Any]]] = {}
    for f in fields_of(table_name):
        values = field_values(table_name, f, hostile)
        if len(f.path) > 1:
            nested.setdefault(f.path[0], {})[f.path[1]] = values
        elif f.required and not hostile:
            required[f.path[0] if f.path else f.column] = values
        else:
            optional[f.path[0] if f.path else f.column] = values
    for outer, inner in nested.items():
        obj = st.fixed_dictionaries({}, optional=inner)
        optional[outer] = st.one_of(st.none(), obj, NOT_AN_OBJECT) if hostile else st.one_of(st.none(), obj)
    optional["unexpected_key"] = HOSTILE if hostile else JSON_VALUES
    return st.fixed_dictionaries(required, optional=optional).map(_tagged)


NOT_OBJECTS = st.one_of(
    st.none(), st.integers(), st.text(max_size=10), SURROGATE_TEXT, st.lists(JSON_SCALARS, max_size=2)
)


@cache
def records(tables: tuple[str, ...], hostile: bool) -> st.SearchStrategy[Any]:
    """Records of the transformer's first table, their child tables' lists inside; when hostile, now and
    then a record that is not an object at all."""
    children: dict[str, st.SearchStrategy[Any]] = {}
    for child in tables[1:]:
        one = (
            st.one_of(object_records(child, hostile), NOT_OBJECTS)
            if hostile
            else object_records(child, False)
        )
        lists = st.lists(one, max_size=4)
        children[CHILD_LISTS[child]] = (
            st.one_of(st.none(), lists, NOT_A_LIST) if hostile else st.one_of(st.none(), lists)
        )
    objects = st.tuples(object_records(tables[0], hostile), st.fixed_dictionaries({}, optional=children)).map(
        lambda pair: {**pair[0], **pair[1]}
    )
    return st.one_of(objects, objects, objects, NOT_OBJECTS) if hostile else objects


COURSES = st.sampled_from([101, 102, 2**31 + 7, ID_MAX])


@st.composite
def batches(draw: st.DrawFn, entity: str, hostile: bool, max_records: int = 6) -> dict[int, list[Any]]:
    one = records(TRANSFORMERS[entity].tables, hostile)
    courses = draw(st.lists(COURSES, min_size=1, max_size=3, unique=True))
    return {c: draw(st.lists(one, max_size=max_records)) for c in courses}


OPTIONS = st.builds(
    TransformOptions, **{name: st.booleans() for name in TransformOptions.__dataclass_fields__}
)


# --- the reference outcome of a whole batch ----------------------------------------------------------------
@dataclass
class Expected:
    rows: dict[str, dict[tuple[Any, ...], dict[str, Any]]]  # table -> key -> row (first occurrence wins)
    rejected: dict[tuple[str, int], list[str]]  # (table, seq) -> the sources the reason must name
    not_objects: dict[tuple[str, int], int]  # (table, course) -> how many non-object records


def expected_batch(entity: str, batch: dict[int, list[Any]], options: TransformOptions) -> Expected:
    tables = TRANSFORMERS[entity].tables
    out = Expected({t: {} for t in tables}, {}, {})

    def count_not_object(t: str, course: int) -> None:
        out.not_objects[(t, course)] = out.not_objects.get((t, course), 0) + 1

    for course, course_records in batch.items():
        for record in course_records:
            if type(record) is not dict:
                count_not_object(tables[0], course)
                continue
            outcome = expected_outcome(tables[0], record, options, course)
            bad_children = [
                CHILD_LISTS[c]
                for c in tables[1:]
                if record.get(CHILD_LISTS[c]) is not None and type(record[CHILD_LISTS[c]]) is not list
            ]
            if bad_children:  # checked before the fields: the reason is the list alone
                outcome = Outcome(None, bad_children)
            if outcome.row is None:
                out.rejected[(tables[0], record[SEQ])] = outcome.bad
                continue
            key = tuple(outcome.row[k] for k in key_of(tables[0]))
            if key in out.rows[tables[0]]:
                continue  # a duplicate: the first occurrence (and its children) won
            out.rows[tables[0]][key] = outcome.row
            for child in tables[1:]:
                for item in record.get(CHILD_LISTS[child]) or ():
                    if type(item) is not dict:
                        count_not_object(child, course)
                        continue
                    item_outcome = expected_outcome(child, item, options, course, parent=outcome.row["id"])
                    if item_outcome.row is None:
                        out.rejected[(child, item[SEQ])] = item_outcome.bad
                        continue
                    item_key = tuple(item_outcome.row[k] for k in key_of(child))
                    out.rows[child].setdefault(item_key, item_outcome.row)
    return out


def _plain(value: Any) -> Any:
    """A frame or database value as a plain Python value (None for every kind of null)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):
        return pd.Timestamp(value)
    return value


def _same(actual: Any, expected: Any) -> bool:
    actual = _plain(actual)
    if isinstance(expected, datetime):
        return actual == pd.Timestamp(expected)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is bool and actual is expected
    return actual == expected and type(actual) is type(expected)


def assert_rows(
    table_name: str, rows: list[dict[str, Any]], expected: dict[tuple[Any, ...], dict[str, Any]]
) -> None:
    key = key_of(table_name)
    by_key = {}
    for row in rows:
        k = tuple(_plain(row[c]) for c in key)
        assert k not in by_key, f"{table_name}: key {k} twice"
        by_key[k] = row
    assert sorted(by_key, key=repr) == sorted(expected, key=repr), f"{table_name}: keys differ"
    for k, want in expected.items():
        got = by_key[k]
        for column, value in want.items():
            assert _same(got[column], value), (
                f"{table_name} {k}: {column} is {_plain(got[column])!r:.200}, expected {value!r:.200}"
            )


def check_result(entity: str, batch: dict[int, list[Any]], options: TransformOptions) -> Any:
    """Transform `batch` and check every property against the reference outcome; returns the result."""
    transformer = TRANSFORMERS[entity]
    result = transformer(batch, options)  # never raises
    expected = expected_batch(entity, batch, options)
    assert result.records_in == sum(len(r) for r in batch.values())
    assert set(result.tables) == set(transformer.tables)

    # Faithful rows: every accepted record's row, once per key, exactly the reference values.
    for name in transformer.tables:
        frame = result.tables[name]
        enabled = {f.column for f in fields_of(name) if not options.enabled(f.group)}
        assert not enabled & set(frame.columns), f"{name}: a column of a switched-off group was produced"
        assert_rows(name, frame.to_dict("records"), expected.rows[name])

    # Every other record is quarantined, with a reason naming each bad field.
    seen: dict[tuple[str, int], str] = {}
    not_objects: dict[tuple[str, int], int] = {}
    for r in result.rejected:
        assert r.entity == entity and r.reason and r.table in transformer.tables
        assert isinstance(r.payload, dict)
        json.dumps(r.payload, ensure_ascii=False, default=str).encode("utf-8")  # storable as it is
        if r.reason.startswith("record is not a JSON object"):
            not_objects[(r.table, r.course_id)] = not_objects.get((r.table, r.course_id), 0) + 1
            continue
        key = (r.table, r.payload[SEQ])
        assert key not in seen, f"rejected twice: {r}"
        seen[key] = r.reason
    assert not_objects == expected.not_objects
    assert sorted(seen, key=repr) == sorted(expected.rejected, key=repr), "quarantined records differ"
    for key, reason in seen.items():
        for source in expected.rejected[key]:
            assert f"{source}: " in reason, f"{key}: {reason!r:.300} does not name {source}"
    return result


# --- properties of the transformers ------------------------------------------------------------------------
ENTITIES = sorted(TRANSFORMERS)


def test_every_child_table_says_where_its_records_are():
    for t in TRANSFORMERS.values():
        for child in t.tables[1:]:
            assert child in CHILD_LISTS, f"{t.entity}: name the key of the {child} list in CHILD_LISTS"


@pytest.mark.parametrize("entity", ENTITIES)
@given(data=st.data())
def test_hostile_records_are_rows_faithful_to_them_or_quarantined_naming_the_field(entity, data):
    batch = data.draw(batches(entity, hostile=True), label="batch")
    options = data.draw(OPTIONS, label="options")
    check_result(entity, batch, options)


@pytest.mark.parametrize("entity", ENTITIES)
@given(data=st.data())
def test_a_valid_canvas_record_is_never_rejected(entity, data):
    batch = data.draw(batches(entity, hostile=False), label="batch")
    options = data.draw(OPTIONS, label="options")
    result = check_result(entity, batch, options)
    assert result.rejected == []


@pytest.mark.parametrize("entity", ENTITIES)
@settings(max_examples=max(12, EXAMPLES // 3))
@given(data=st.data())
def test_course_chunks_give_the_same_result_as_one_pass(entity, data):
    import canvas_assets.transform.base as base

    batch = data.draw(batches(entity, hostile=True, max_records=4), label="batch")
    whole = TRANSFORMERS[entity](batch, TransformOptions())
    with mock.patch.object(base, "CHUNK_RECORDS", 2):
        chunked = TRANSFORMERS[entity](batch, TransformOptions())
    for name in whole.tables:
        pd.testing.assert_frame_equal(chunked.tables[name], whole.tables[name], check_dtype=False)
    assert sorted(r.reason for r in chunked.rejected) == sorted(r.reason for r in whole.rejected)


# --- a few examples all the way into PostgreSQL and SQLite ---------------------------------------------------
@pytest.fixture(scope="module")
def warehouses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One migrated warehouse per backend for the whole module (each example empties it first)."""
    from canvas_assets.warehouse import Warehouse
    from canvas_assets.warehouse.engine import dispose_engines
    from canvas_assets_tests.conftest import fresh_pg_database

    with fresh_pg_database() as url:
        found = {
            "sqlite": Warehouse(f"sqlite:///{tmp_path_factory.mktemp('wh') / 'warehouse.db'}"),
            "postgresql": Warehouse(url),
        }
        for wh in found.values():
            wh.ensure_schema()
        try:
            yield found
        finally:
            dispose_engines()


def _empty(wh: Any, entity: str) -> None:
    with wh.engine.begin() as conn:
        for name in (
            *TRANSFORMERS[entity].tables,
            "canvas_rejected_records",
            "canvas_course_sync",
            "canvas_score_history",
        ):
            conn.execute(sa.delete(table(name)))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("entity", ENTITIES)
@settings(max_examples=LOAD_EXAMPLES)
@given(data=st.data())
def test_hostile_records_load_faithfully_and_the_rest_are_quarantined(warehouses, backend, entity, data):
    wh = warehouses[backend]
    _empty(wh, entity)
    batch = data.draw(batches(entity, hostile=True, max_records=4), label="batch")
    result = check_result(entity, batch, TransformOptions())
    expected = expected_batch(entity, batch, TransformOptions())
    synced_at = datetime(2025, 3, 1, tzinfo=UTC) + timedelta(microseconds=data.draw(st.integers(0, 10**6)))

    wh.load(result, course_ids=list(batch), run_id="props", synced_at=synced_at)  # no record fails the load
    wh.write_rejected(result.rejected, run_id="props")

    with wh.engine.connect() as conn:
        for name in TRANSFORMERS[entity].tables:
            rows = [dict(r._mapping) for r in conn.execute(sa.select(table(name)))]
            assert all(r["deleted_at"] is None for r in rows if "deleted_at" in r)
            assert_rows(name, rows, expected.rows[name])
        stored = conn.execute(sa.select(table("canvas_rejected_records"))).mappings().all()
    assert sorted(
        ((r["entity"], r["course_id"], r["canvas_id"], r["reason"]) for r in stored), key=repr
    ) == sorted(((r.entity, r.course_id, r.canvas_id, r.reason) for r in result.rejected), key=repr)
    for r in stored:
        assert r["run_id"] == "props"
        payload = json.loads(r["payload"])
        assert isinstance(payload, dict)
        if not r["reason"].startswith("record is not a JSON object"):
            assert (r["reason"], payload[SEQ]) in {(x.reason, x.payload.get(SEQ)) for x in result.rejected}
