"""JSON text in and out, fast and exact: orjson where it gives what the standard library gives, the
standard library where it does not (Canvas bodies in the client, staged records in the warehouse); the key
a record is staged under (`record_id`); records kept as compressed text until read (`RecordTexts`, a
`LazySequence`)."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; without it the stdlib does all the work
    orjson = None  # type: ignore[assignment]

# Every digit byte -> "0", everything else -> " ": a run of 19 zeros marks a number of 19 or more digits.
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19  # 2**63 has 19 digits: no shorter integer lies outside orjson's 64-bit range


def decode_json(content: bytes | str) -> Any:
    """The Python objects of a JSON body, exactly as `json.loads` makes them; ValueError if not JSON, and
    for NaN, Infinity and numbers beyond a double (no database text or JSON writer keeps them as they came).

    orjson decodes a page 2-4 times faster and gives the same objects for what it accepts. Two gaps are
    closed here: it turns integers beyond 64 bits into floats (so a body with a run of 19 or more digits
    anywhere, even inside a string, goes to `json.loads`), and it refuses some JSON that `json.loads` reads
    (lone surrogates, UTF-16/32 and BOMs, nesting over 1024): `json.loads` then decides.
    """
    if isinstance(content, str):  # a staged record's text
        content = content.encode("utf-8")
    if orjson is not None and content.translate(_DIGITS).find(_LONG_NUMBER) < 0:
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
    # json.loads reads bytes directly (UTF-8, -16 or -32, as RFC 8259 allows).
    return json.loads(content, parse_constant=_not_a_number, parse_float=_finite)


class UnstorableNumber(ValueError):
    """JSON that `json.loads` reads but whose numbers no staged text keeps: NaN, Infinity, beyond a double."""


def _not_a_number(name: str) -> Any:
    raise UnstorableNumber(f"{name} is not a JSON number: records holding it are refused")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise UnstorableNumber(
            f"the number {text[:40]} is beyond what a double holds: records holding it are refused"
        )
    return value


def record_id(record: Any) -> str | None:
    """A record's staging key: its Canvas `id` as digits (an int, or a digit string that fits 64 bits), or
    another string id of at most 64 characters (the audit log's uuids); None when it has no usable one."""
    value = record.get("id") if isinstance(record, dict) else None
    if type(value) is int:
        return str(value) if 0 <= value < 1 << 63 else None
    if not isinstance(value, str) or not 0 < len(value) <= 64 or "#" in value:
        return None
    if value.isascii() and value.isdigit():
        return str(int(value)) if int(value) < 1 << 63 else None
    return value


def encode_json(value: Any) -> str:
    """Compact JSON text of raw records: orjson (several times faster on the extract's hot path), the
    standard library for what orjson refuses (integers beyond 64 bits, lone surrogates, which no database
    text can hold: written as `\\udXXX` escapes, so the record is kept and reads back as it came)."""
    return encode_json_bytes(value).decode()


def encode_json_bytes(value: Any) -> bytes:
    """`encode_json` as UTF-8 bytes, without the str in between (a big course's text is tens of MB, and a
    str of it with one CJK character twice that)."""
    if orjson is not None:
        try:
            return orjson.dumps(value, default=str)
        except (orjson.JSONEncodeError, TypeError):
            pass
    return _stdlib_text(value).encode("utf-8")


def _stdlib_text(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True, default=str)
    return text


class LazySequence(Sequence[Any]):
    """A read-only list whose items are made again each time it is iterated (subclasses give `__iter__` and
    `__len__`): indexing and == go through `list(self)`; unhashable, like a list."""

    __slots__ = ()

    def __getitem__(self, index: Any) -> Any:
        return list(self)[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


class RecordTexts(LazySequence):
    """A read-only list of records kept as their JSON texts (`encode_json`), zlib-compressed a page at a time
    and decoded a page at a time when read: what a big course's sliced fetch holds until it is staged (the
    large benchmark's 134k submissions take 160 MB decoded, a few MB so)."""

    __slots__ = ("_counts", "_pages")

    def __init__(self, parts: Sequence[RecordTexts] = ()) -> None:
        self._pages: list[bytes] = [p for part in parts for p in part._pages]
        self._counts: list[int] = [n for part in parts for n in part._counts]

    def add(self, records: Sequence[Any]) -> None:
        """Append a page of records."""
        if records:
            self._pages.append(
                zlib.compress(b"[" + b",".join(encode_json_bytes(r) for r in records) + b"]", 1)
            )
            self._counts.append(len(records))

    def __iter__(self) -> Iterator[Any]:
        return chain.from_iterable(decode_json(zlib.decompress(page)) for page in self._pages)

    def __len__(self) -> int:
        return sum(self._counts)
