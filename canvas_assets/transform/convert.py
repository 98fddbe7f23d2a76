"""Value conversion: the raw values of one column of Canvas records -> a typed pandas column, and which failed.

Conversion rules (canvas-api.md §4): ids are 64-bit integers, given as ints or digit strings; other integers
must fit their column (32 bits for an INTEGER); timestamps are ISO 8601 (`Z`, an offset or no zone, taken as
UTC; a date alone is midnight) as `datetime.fromisoformat` reads them, turned into UTC instants within years
1-9999; scores are finite floats; lists and objects become JSON text with sorted keys; an absent field and
a null field are both NULL; booleans stay booleans.

Text is stored exactly or not at all: a value with a NUL character (which PostgreSQL text cannot hold, and
which Canvas, itself on PostgreSQL, never sends) or a lone surrogate (not Unicode; only a broken JSON escape
gives one) fails, and its record is quarantined naming the field; in JSON text a NUL is the escape
`\\u0000`, which is stored.

Conversion is column-wise (values of the right type pass at C speed; failures are located only when a scan
says there is one), so that 100k records take about a second.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from canvas_assets.transform.quarantine import short_repr
from canvas_assets.transform.schema import INT_BITS_DEFAULT, NONE, Field, only_types

INT64_MAX = 2**63 - 1

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


# --- scalar converters: the value, or BAD -------------------------------------------------------------------
BAD = object()


def _digit_string(s: str) -> int | None:
    """The integer an ASCII digit string spells; None when it is no such string or too long for any column
    (int() refuses strings of over 4300 digits, and no column holds 21)."""
    if s.isascii() and s.isdigit() and len(s.lstrip("0")) <= 20:
        return int(s)
    return None


def to_id(value: Any) -> Any:
    """A Canvas id as int, or `BAD`. Accepts ints and digit strings (Canvas string-id mode)."""
    if type(value) is int:
        return value if 0 <= value <= INT64_MAX else BAD
    if isinstance(value, str):
        n = _digit_string(value)
        return n if n is not None and n <= INT64_MAX else BAD
    return BAD


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
    return n if n is not None and low <= n <= high else BAD


def _to_float(value: Any) -> Any:
    if type(value) is float:
        return value if math.isfinite(value) else BAD
    if type(value) is int or isinstance(value, str):
        try:
            f = float(value)
        except (ValueError, OverflowError):  # not a number; an int past the float range
            return BAD
        return f if math.isfinite(f) else BAD
    return BAD


def _to_str(value: Any) -> Any:
    """Text; a number becomes its decimal text (a finite one: `nan` is not what the record said)."""
    if isinstance(value, str):
        return value
    if type(value) is int or (type(value) is float and math.isfinite(value)):
        try:
            return str(value)
        except ValueError:  # an int of more digits than Python turns into text
            return BAD
    return BAD


def _to_bool(value: Any) -> Any:
    if type(value) is bool:
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return BAD


def to_json_text(value: Any) -> str:
    """Stable JSON text: sorted keys, compact, unicode kept; NaN and infinities refused (not JSON)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str, allow_nan=False
    )


def _to_json(value: Any) -> Any:
    try:
        return to_json_text(value)
    except (TypeError, ValueError, RecursionError):  # RecursionError: nested deeper than json writes
        return BAD


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
    positions = [i for i, v in enumerate(values) if v is BAD] if BAD in values else []
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
        if only_types(raw, str, NONE)
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
            return f"{f.source}: {problem}: {short_repr(value)}"
    return f"{f.source}: {_KIND_WORDS[f.kind]}: {short_repr(value)}"
