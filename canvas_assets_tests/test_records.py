"""Compact record lists (canvas_assets.extract.records) and the streamed incremental merge behave exactly like the
plain lists they stand for: the same records, the same staged text, the same merge."""

import json
import math
import random
import zlib

import orjson
import pytest

from canvas_assets.extract import incremental
from canvas_assets.extract.records import RecordsBuilder, array_pieces, inflate
from canvas_assets.jsontext import decode_json, decode_json_exact, encode_json, encode_json_bytes
from canvas_assets.warehouse.staging import StagedRecords, json_text
from canvas_assets_tests.test_canvas_json import _same

# Records as Canvas might send them, and the odd ones staging must keep exactly.
ODD = [
    {"id": 1, "body": '},{"id":2}', "nested": [{"id": 3}, {"id": 4, "x": [{"id": 5}, {}]}]},
    {"id": 6, "text": "an unbalanced { brace", "list": [[], [[]], {"a": "]"}]},
    {"id": 7, "big": 123456789012345678901234567890, "s": "12345678901234567890123"},
    {"id": 8, "lone": "\ud800 surrogate", "cjk": "数学 🦄", "esc": '"\\/\n\t\u0000'},
    {"id": 9, "f": [0.1, -0.0, 1e300, 2.5e-324, 1.7976931348623157e308]},
    {"id": 10, "uint64": 18446744073709551615, "neg": -9223372036854775808},
    [1, 2, {"id": 11}],
    "a string record",
    None,
    {"id": "12", "workflow_state": "graded"},
]


def random_record(rng: random.Random, i: int) -> object:
    if rng.random() < 0.1:
        return rng.choice(ODD)
    record = {"id": i, "user_id": rng.randint(1, 50), "assignment_id": rng.randint(1, 20)}
    if rng.random() < 0.3:
        record["attachments"] = [{"id": rng.randint(1, 9), "name": "a},{b"} for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.2:
        record["score"] = rng.choice([None, 1.5, 10, -0.0, 1e-9])
    return record


def identified(rng: random.Random, i: int) -> dict:
    """A record with id `i` (odd values inside it)."""
    record = random_record(rng, i)
    return record if isinstance(record, dict) and record.get("id") == i else {"id": i, "odd": record}


def blocks_of(text: bytes, rng: random.Random) -> list[bytes]:
    out, at = [], 0
    while at < len(text):
        size = rng.randint(1, 400)
        out.append(text[at : at + size])
        at += size
    return out


def pieces_records(pieces) -> list:
    return [r for records, _ in pieces for r in records]


@pytest.mark.parametrize("seed", range(30))
def test_array_pieces_give_exactly_what_decoding_the_whole_text_gives(seed):
    rng = random.Random(seed)
    records = [random_record(rng, i) for i in range(rng.randint(0, 300))]
    for text in (encode_json_bytes(records), json.dumps(records).encode()):
        pieces = list(array_pieces(blocks_of(text, rng), piece_bytes=rng.choice([1, 50, 500, 5000])))
        assert _same(pieces_records(pieces), decode_json(text))
        for piece, exact in pieces:  # an exact piece is one orjson writes back and reads back the same
            assert not exact or _same(orjson.loads(orjson.dumps(piece)), piece)


def test_array_pieces_cut_a_long_text_into_many_pieces():
    records = [{"id": i, "items": [{"id": 1}, {"id": 2}]} for i in range(5000)]
    pieces = list(array_pieces([encode_json_bytes(records)], piece_bytes=1000))
    assert len(pieces) > 100 and all(exact for _, exact in pieces)
    assert pieces_records(pieces) == records


@pytest.mark.parametrize(
    "text",
    [b"[]", b"[ ]", b" [1]", b"{}", b'{"id": 1}', b"null", b"[1,2,3]", b"[NaN]", b'[{"a":1},{"b":2}]\n'],
)
def test_texts_staging_does_not_write_decode_as_the_whole_text_does(text):
    value = decode_json(text)
    expected = value if isinstance(value, list) else [value]
    assert _same(pieces_records(array_pieces([text], piece_bytes=1)), expected)
    assert _same(list(StagedRecords(text)), expected)


def test_array_pieces_raise_for_what_is_not_json():
    with pytest.raises(ValueError):
        list(array_pieces([b'[{"id":1},{"id":'], piece_bytes=1))


@pytest.mark.parametrize("seed", range(20))
def test_records_behave_as_the_list_and_write_the_same_staged_text(seed):
    rng = random.Random(seed)
    plain = [random_record(rng, i) for i in range(rng.randint(0, 400))]
    builder = RecordsBuilder(piece_records=rng.randint(1, 50))
    at = 0
    while at < len(plain):
        size = rng.randint(0, 70)
        chunk = plain[at : at + size]
        builder.add(chunk, exact=decode_json_exact(encode_json_bytes(chunk))[1])
        at += size
    records = builder.build()
    assert _same(list(records), plain)
    assert records == plain and len(records) == len(plain)
    assert records == builder.build() or not plain  # equal to another Records of the same records
    for index in [0, len(plain) - 1, -1, -len(plain), len(plain) // 2] if plain else []:
        assert _same(records[index], plain[index])
    assert _same(records[3:40:2], plain[3:40:2])
    with pytest.raises(IndexError):
        records[len(plain)]
    length, parts = json_text(records)
    text = b"".join(parts)
    assert text == encode_json(plain).encode("utf-8") and length == len(text)


def test_records_that_orjson_cannot_write_back_are_kept_decoded():
    builder = RecordsBuilder(piece_records=2)
    builder.add([{"id": 1}, {"id": 2}, {"id": 3}], exact=True)
    builder.add([{"id": 4, "nan": float("nan")}], exact=False)
    records = builder.build()
    assert records.json_text() is None
    _, parts = json_text(records)
    assert b"".join(parts) == encode_json(list(records)).encode()
    assert math.isnan(records[3]["nan"])  # a compressed piece would read back null


def test_staged_records_read_a_piece_at_a_time_equal_the_whole_list():
    records = [{"id": i, "body": "},{" * (i % 2), "pad": "x" * 40} for i in range(40_000)]
    staged = StagedRecords(encode_json(records), len(records))
    assert sum(1 for _ in staged.pieces()) > 1
    assert list(staged) == records and staged == records and staged[-1] == records[-1]
    assert list(inflate(zlib.compress(b"x" * 3_000_000), 1 << 20)) == [b"x" * (1 << 20)] * 2 + [
        b"x" * (3_000_000 - (2 << 20))
    ]


def _keep(record):
    return record.get("user_id") != 3


@pytest.mark.parametrize("seed", range(40))
def test_the_streamed_merge_equals_the_whole_merge(seed):
    rng = random.Random(seed)
    ids = sorted(rng.sample(range(1, 10_000), rng.randint(0, 500)))
    previous = [identified(rng, i) for i in ids]
    if rng.random() < 0.5:  # records without a usable id are dropped from the previous list
        previous.insert(rng.randint(0, len(previous)), rng.choice([{"id": None}, "x", {"id": "abc"}]))
    changes = [random_record(rng, rng.choice([*ids, *range(10_000, 10_050)] or [1])) for _ in range(40)]
    changes += [{"id": None, "user_id": 1}, {"id": -5}]  # unidentified: appended as they came
    for keep in (None, _keep):
        text = encode_json_bytes(previous)
        pieces = array_pieces(blocks_of(text, rng), piece_bytes=rng.choice([1, 200, 4000]))
        merged = incremental.merge_in_order(pieces, changes, keep)
        whole = incremental.merge(decode_json(text), changes, keep)
        assert merged is not None
        assert _same(list(merged), whole)
        assert b"".join(json_text(merged)[1]) == encode_json(whole).encode("utf-8")


@pytest.mark.parametrize("previous", [[{"id": 2}, {"id": 1}], [{"id": 1}, {"id": 1, "x": 1}]])
def test_the_streamed_merge_refuses_previous_records_out_of_id_order(previous):
    assert incremental.merge_in_order([(previous, True)], [{"id": 5}]) is None


@pytest.mark.parametrize("seed", range(40))
def test_the_merge_of_previous_records_in_any_order_equals_the_whole_merge(seed):
    rng = random.Random(seed)
    ids = rng.sample(range(1, 10_000), rng.randint(0, 500))
    previous = [identified(rng, i) for i in ids]
    previous += [identified(rng, i) for i in rng.sample(ids, min(len(ids), 20))]  # repeated: the last wins
    previous.insert(rng.randint(0, len(previous)), rng.choice([{"id": None}, "x", {"id": "abc"}]))
    changes = [random_record(rng, rng.choice([*ids, *range(10_000, 10_050)] or [1])) for _ in range(40)]
    changes += [{"id": None, "user_id": 1}, {"id": 5, "f": float("nan")}]
    for keep in (None, _keep):
        text = json.dumps(previous).encode() if seed % 2 else encode_json_bytes(previous)
        pieces = array_pieces(blocks_of(text, rng), piece_bytes=rng.choice([1, 200, 4000]))
        merged = incremental.merge_unordered(pieces, changes, keep)
        whole = incremental.merge(decode_json(text), changes, keep)
        assert _same(list(merged), whole)
        assert b"".join(json_text(merged)[1]) == encode_json(whole).encode("utf-8")
