"""Lists of raw records kept compact: JSON text in zlib-compressed pieces, decoded a piece at a time.

A course's decoded submissions take about 2.7 times their JSON text (1.2 KB a record); the large benchmark's
biggest course, 134k submissions, is a 58 MB text and 160 MB of dicts. Held as compressed pieces of a few
thousand records, the same list takes a few MB, and whoever reads it holds one piece's dicts at a time.

Two things give pieces:

- `Records`, a read-only list built piece by piece (`RecordsBuilder`): what an incremental merge of a big
  course and a big course's sliced fetch make. Its pieces' texts join into exactly the text
  `jsontext.encode_json` makes of the whole list (`Records.json_text`), so staging writes it without
  decoding it.
- `array_pieces`, which cuts the text of a JSON array (a staged list) into pieces of whole records and
  decodes them one at a time, exactly as decoding the whole text would (see its docstring).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from typing import Any

import orjson

from canvas_assets.jsontext import decode_json, decode_json_exact

PIECE_RECORDS = 2_000  # records per piece of a `Records` (about 1 MB of submissions' text)
PIECE_BYTES = 1 << 20  # text per piece that `array_pieces` cuts


class Records(Sequence[Any]):
    """A read-only list of records held as pieces: compressed JSON array texts (decoded when read) or, for
    records `orjson` cannot write back exactly, the decoded records themselves. Behaves as a list (len,
    index, iterate, ==); build it with `RecordsBuilder`."""

    __slots__ = ("_counts", "_pieces", "_sizes")

    def __init__(self, pieces: list[bytes | list[Any]], counts: list[int], sizes: list[int]) -> None:
        self._pieces = pieces
        self._counts = counts
        self._sizes = sizes  # each compressed piece's text length

    @classmethod
    def concat(cls, parts: Iterable[Records]) -> Records:
        """One list of the records of `parts`, one after another (their pieces, not copied)."""
        pieces: list[bytes | list[Any]] = []
        counts: list[int] = []
        sizes: list[int] = []
        for part in parts:
            pieces += part._pieces
            counts += part._counts
            sizes += part._sizes
        return cls(pieces, counts, sizes)

    def pieces(self) -> Iterator[tuple[list[Any], bool]]:
        """(records, exact) a piece at a time; `exact`: `orjson` writes the records back exactly."""
        for piece in self._pieces:
            if isinstance(piece, bytes):
                yield orjson.loads(zlib.decompress(piece)), True
            else:
                yield piece, False

    def json_text(self) -> tuple[int, Iterator[bytes]] | None:
        """The UTF-8 text of the whole list, `jsontext.encode_json(list(self))` exactly: its length, and its
        parts to be concatenated (decompressed one at a time); None when a piece holds records that only
        the standard library writes (the whole list's text is then the standard library's)."""
        if not all(isinstance(p, bytes) for p in self._pieces):
            return None
        inner = [size - 2 for size in self._sizes if size > 2]
        length = 2 + sum(inner) + max(0, len(inner) - 1)

        def parts() -> Iterator[bytes]:
            yield b"["
            first = True
            for piece in self._pieces:
                assert isinstance(piece, bytes)
                text = zlib.decompress(piece)
                if len(text) > 2:
                    yield text[1:-1] if first else b"," + text[1:-1]
                    first = False
            yield b"]"

        return length, parts()

    def __len__(self) -> int:
        return sum(self._counts)

    def __iter__(self) -> Iterator[Any]:
        return chain.from_iterable(records for records, _ in self.pieces())

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return list(self)[index]
        n = len(self)
        if not -n <= index < n:
            raise IndexError("Records index out of range")
        index %= n
        for piece, count in zip(self._pieces, self._counts, strict=True):
            if index < count:
                return (orjson.loads(zlib.decompress(piece)) if isinstance(piece, bytes) else piece)[index]
            index -= count
        raise AssertionError("unreachable")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Records({len(self)} records in {len(self._pieces)} pieces)"


class RecordsBuilder:
    """Collects records (or their `orjson` texts) into a `Records`, compressing each full piece as it goes."""

    def __init__(self, piece_records: int = PIECE_RECORDS) -> None:
        self._piece_records = piece_records
        self._pieces: list[bytes | list[Any]] = []
        self._counts: list[int] = []
        self._sizes: list[int] = []
        self._pending: list[Any] = []
        self._pending_exact = True
        self._texts: list[bytes] = []  # records given as their texts, in order after `_pending`

    def add(self, records: Sequence[Any], exact: bool) -> None:
        """Append records; `exact`: `orjson` writes them back exactly (`jsontext.decode_json_exact`)."""
        if records and self._texts:
            self._flush()
        done = 0
        while done < len(records):
            room = self._piece_records - len(self._pending)
            self._pending.extend(records[done : done + room])
            done += room
            self._pending_exact = self._pending_exact and exact
            if len(self._pending) >= self._piece_records:
                self._flush()

    def add_text(self, text: bytes) -> None:
        """Append one record given as `orjson.dumps` of a record that `orjson` writes back exactly."""
        if self._pending:
            self._flush()
        self._texts.append(text)
        if len(self._texts) >= self._piece_records:
            self._flush()

    def _flush(self) -> None:
        if self._texts:
            text = b"[" + b",".join(self._texts) + b"]"
            self._pieces.append(zlib.compress(text, 1))
            self._counts.append(len(self._texts))
            self._sizes.append(len(text))
            self._texts = []
        if not self._pending:
            return
        piece: bytes | list[Any] = self._pending
        size = 0
        if self._pending_exact:
            try:
                text = orjson.dumps(self._pending)
            except (orjson.JSONEncodeError, TypeError):  # nesting beyond what orjson writes
                pass
            else:
                piece, size = zlib.compress(text, 1), len(text)
        self._pieces.append(piece)
        self._counts.append(len(self._pending))
        self._sizes.append(size)
        self._pending = []
        self._pending_exact = True

    def build(self) -> Records:
        self._flush()
        return Records(self._pieces, self._counts, self._sizes)


def roundtrips(record: Any) -> bool:
    """Whether `orjson` writes `record` and reads it back to an equal record (no NaN or Infinity, no integer
    beyond 64 bits, no lone surrogate): for the few records of a merge that did not come from a piece."""
    try:
        return bool(orjson.loads(orjson.dumps(record)) == record)
    except (orjson.JSONEncodeError, orjson.JSONDecodeError, TypeError):
        return False


def inflate(data: bytes, size: int = PIECE_BYTES) -> Iterator[bytes]:
    """zlib-compressed `data`, decompressed `size` bytes at a time."""
    stream = zlib.decompressobj()
    block = stream.decompress(data, size)
    while block:
        yield block
        block = stream.decompress(stream.unconsumed_tail, size)
    tail = stream.flush()
    if tail:
        yield tail


_CUT = b"},{"


def array_pieces(blocks: Iterable[bytes], piece_bytes: int = PIECE_BYTES) -> Iterator[tuple[list[Any], bool]]:
    """The records of one JSON array's text (given as consecutive `blocks`), decoded a piece of about
    `piece_bytes` at a time: (records, exact) per piece, `exact` as `jsontext.decode_json_exact` says.

    A piece ends at a `},{` whose text from the piece's start has as many `{` as `}` and `[` as `]`, and
    that decodes: a piece that starts at a record and decodes as `[` + piece + `]` ends at the end of a
    record (a prefix of an object that ends inside it is not JSON), so the pieces give exactly the records,
    and each record exactly as decoding the whole text gives it. A brace inside a string can make every
    later cut of a piece look unbalanced: that piece then runs to the end of the text (more memory, same
    records). A text that does not start with `[` (not what staging writes) is decoded whole, a value that
    is not a list as a one-record list.
    """
    source = iter(blocks)
    buf = bytearray()
    ended = False

    def fill(size: int) -> None:
        nonlocal ended
        while len(buf) < size and not ended:
            block = next(source, None)
            if block is None:
                ended = True
            else:
                buf.extend(block)

    def next_piece() -> tuple[list[Any], bool] | None:
        """The piece at the start of `buf` (removed from it), None when the rest is the last piece."""
        search, counted = piece_bytes, 0
        braces = brackets = 0
        while True:
            fill(search + piece_bytes)
            cut = buf.find(_CUT, search)
            if cut < 0:
                if ended:
                    return None
                search = max(search, len(buf) - len(_CUT) + 1)
                fill(len(buf) + piece_bytes)
                continue
            braces += buf.count(b"{", counted, cut + 1) - buf.count(b"}", counted, cut + 1)
            brackets += buf.count(b"[", counted, cut + 1) - buf.count(b"]", counted, cut + 1)
            counted = search = cut + 1
            if braces == 0 and brackets == 0:
                try:
                    piece = decode_json_exact(b"[" + buf[: cut + 1] + b"]")
                except ValueError:
                    continue
                del buf[: cut + 2]
                return piece

    fill(1)
    if buf[:1] != b"[":
        fill(1 << 62)
        value, exact = decode_json_exact(bytes(buf))
        yield (value if isinstance(value, list) else [value]), exact
        return
    del buf[:1]
    while (piece := next_piece()) is not None:
        yield piece
    records, exact = decode_json_exact(b"[" + buf)  # the last piece, with the closing bracket
    if records:
        yield records, exact


def decode_whole(blocks: Iterable[bytes]) -> list[Any]:
    """Every record of one JSON array's text at once (a value that is not a list as a one-record list)."""
    value = decode_json(b"".join(blocks))
    return value if isinstance(value, list) else [value]
