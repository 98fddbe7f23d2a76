"""JSON text in and out, fast and exact: orjson where it gives what the standard library gives, the
standard library where it does not (Canvas bodies in the client, staged records in the warehouse)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; without it the stdlib does all the work
    orjson = None  # type: ignore[assignment]

# Every digit byte -> "0", everything else -> " ": a run of 19 zeros marks a number of 19 or more digits.
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19  # 2**63 has 19 digits: no shorter integer lies outside orjson's 64-bit range
_LONG_NUMBER_TEXT = re.compile("[0-9]{19}")


def decode_json(content: bytes | str) -> Any:
    """The Python objects of a JSON body (or a staged record's text), exactly as `json.loads` makes them;
    ValueError if not JSON.

    orjson decodes a page 2-4 times faster and gives the same objects for what it accepts. Two gaps
    are closed here: it turns integers beyond 64 bits into floats (so a text with a run of 19 or more
    digits anywhere, even inside a string, goes to `json.loads`), and it refuses some JSON that
    `json.loads` reads (NaN and Infinity, lone surrogates, UTF-16/32 and BOMs, nesting over 1024):
    `json.loads` then decides, and raises for what is really not JSON.
    """
    if orjson is not None and not _long_number(content):
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
    # json.loads reads bytes directly (UTF-8, -16 or -32, as RFC 8259 allows).
    return json.loads(content)


def _long_number(content: bytes | str) -> bool:
    if isinstance(content, str):
        return _LONG_NUMBER_TEXT.search(content) is not None
    return content.translate(_DIGITS).find(_LONG_NUMBER) >= 0


def encode_json(value: Any) -> str:
    """Compact JSON text of raw records: orjson (several times faster on the extract's hot path), the
    standard library for what orjson refuses (integers beyond 64 bits, lone surrogates, which no database
    text can hold: written as `\\udXXX` escapes, so the record is kept and reads back as it came)."""
    if orjson is not None:
        try:
            return orjson.dumps(value, default=str).decode()
        except (orjson.JSONEncodeError, TypeError):
            pass
    return _stdlib_text(value)


def _stdlib_text(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True, default=str)
    return text


class EncodedLists(Sequence[Any]):
    """Lists of records held as their JSON text until they are read, one list at a time.

    A big course's submissions, fetched in slices, wait for the course's other entities before they are
    staged: decoded they take about 1.2 KB a record (the large benchmark's biggest course, 134k submissions:
    160 MB, which put the sync's peak at 558 MB), as text about a quarter of that. Iterating decodes one list
    at a time; indexing decodes the list that holds the item."""

    def __init__(self, encoded: Iterable[tuple[str, int]] = ()) -> None:
        self._texts: list[str] = []
        self._lengths: list[int] = []
        for text, length in encoded:
            self._texts.append(text)
            self._lengths.append(length)

    @staticmethod
    def encode(records: Sequence[Any]) -> tuple[str, int]:
        """One list as `EncodedLists` holds it: its JSON text and its length."""
        return encode_json(list(records)), len(records)

    def __len__(self) -> int:
        return sum(self._lengths)

    def __iter__(self) -> Iterator[Any]:
        for text in self._texts:
            yield from decode_json(text)

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += len(self)
        for text, length in zip(self._texts, self._lengths, strict=True):
            if 0 <= index < length:
                return decode_json(text)[index]
            index -= length
        raise IndexError("EncodedLists index out of range")
