"""Staging keeps every record exactly: odd values round-trip through the record rows, each record has a key
(`jsontext.record_id`, `staging.record_keys`), and the digest of a fetch does not depend on its order."""

import hashlib
import random
from datetime import datetime, timezone

import pytest

from canvas_assets.extract import incremental
from canvas_assets.jsontext import RecordTexts, encode_json_bytes, record_id
from canvas_assets.warehouse.staging import record_keys, records_digest
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
    {"id": "0b6e8f8a-uuid-of-an-audit-event", "v": 1},
]


def test_odd_records_come_back_from_staging_exactly(wh):
    wh.write_staging([("students", 1, ODD)], run_id="r", fetched_at=datetime(2025, 3, 1, tzinfo=timezone.utc))
    staged = list(wh.read_staging("students", [1])[1])
    keys = dict(record_keys(ODD))
    expected = [keys[k] for k in sorted(keys, key=lambda k: (len(k), k))]
    assert _same(staged, expected)
    assert len(staged) == len(ODD)


def test_record_texts_give_back_exactly_the_records_they_were_given():
    rng = random.Random(3)
    pages = [[rng.choice(ODD) for _ in range(rng.randint(0, 30))] for _ in range(20)]
    texts = RecordTexts()
    for page in pages:
        texts.add(page)
    whole = [r for page in pages for r in page]
    assert len(texts) == len(whole) and _same(list(texts), whole)
    joined = RecordTexts([texts, texts])
    assert _same(list(joined), whole + whole) and joined == whole + whole and joined[-1] == whole[-1]


@pytest.mark.parametrize(
    ("record", "key"),
    [
        ({"id": 5}, "5"),
        ({"id": "0042"}, "42"),
        ({"id": 9223372036854775807}, "9223372036854775807"),
        ({"id": 9223372036854775808}, None),
        ({"id": "9223372036854775808"}, None),
        ({"id": -1}, None),
        ({"id": True}, None),
        ({"id": 1.0}, None),
        ({"id": ""}, None),
        ({"id": "x" * 64}, "x" * 64),
        ({"id": "x" * 65}, None),
        ({"id": "a#1"}, None),  # would pass for a repeated id's key
        ({"id": "0b6e-uuid"}, "0b6e-uuid"),
        ({"no": "id"}, None),
        ([{"id": 1}], None),
        (None, None),
    ],
)
def test_a_records_key_is_its_canvas_id_or_a_short_string_id(record, key):
    assert record_id(record) == key


def test_repeated_ids_and_records_without_one_are_keyed_by_position():
    records = [{"id": 3}, {"x": 1}, {"id": "3"}, {"id": 4}, {"id": 3}]
    assert [k for k, _ in record_keys(records)] == ["3", "#1", "3#000000002", "4", "3#000000004"]


def test_the_digest_is_that_of_the_keys_and_texts_whatever_the_order():
    rng = random.Random(7)
    records = [{"id": rng.randint(1, 10**12), "v": rng.random()} for _ in range(200)]
    hashes = [(k, hashlib.sha256(encode_json_bytes(r)).digest()) for k, r in record_keys(records)]
    digest = records_digest(hashes)
    assert records_digest(reversed(hashes)) == digest
    changed = [*records[:-1], {**records[-1], "v": "changed"}]
    again = [(k, hashlib.sha256(encode_json_bytes(r)).digest()) for k, r in record_keys(changed)]
    assert records_digest(again) != digest


@pytest.mark.parametrize("seed", range(5))
def test_merge_lays_changes_over_the_previous_records_by_key(seed):
    rng = random.Random(seed)
    previous = [{"id": i, "v": "old"} for i in rng.sample(range(1, 300), 100)] + [{"no": "id"}]
    changes = [{"id": rng.randint(1, 400), "v": "new"} for _ in range(30)] + [{"still": "none"}]
    keep = lambda r: r["id"] % 7 != 0  # noqa: E731
    merged = incremental.merge(previous, changes, keep)
    expected = {r["id"]: r for r in previous if "id" in r}
    expected.update({r["id"]: r for r in changes if "id" in r})
    assert merged == [expected[i] for i in sorted(expected) if i % 7 != 0] + [{"still": "none"}]
