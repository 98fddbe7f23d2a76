"""The client's JSON decoding (orjson with the stdlib as referee) gives exactly what `json.loads` gives."""

import json
import math
import random
import struct
import sys

import pytest

from canvas_assets.jsontext import decode_json


def _same(a, b) -> bool:
    """Equal values of equal types all the way down (1 == 1.0 and nan != nan would hide differences)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return repr(a) == repr(b)
    return a == b


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"{}",
        b"null",
        b" \t\r\n[1, 2]\n",
        b'[{"id": 2200000001, "user_id": 170000000005007, "score": 87.25, "grade": "B+"}]',
        b'{"a": 1, "a": 2}',  # the last duplicate wins
        b"[9223372036854775807, -9223372036854775808]",
        b"[18446744073709551615]",
        b"[18446744073709551616]",  # beyond 64 bits: orjson would make it a float
        b"[-9223372036854775809]",
        b"[123456789012345678901234567890]",
        b'{"big": 340282366920938463463374607431768211456, "s": "x"}',
        b'["1234567890123456789012"]',  # a long digit run inside a string: decoded the same
        b"[1.0, -0.0, 1e2, 1E-7, 0.1, 2.5e-324, 1.7976931348623157e308, 0.1e-400]",
        b'["Zo\xc3\xab", "\xe6\x95\xb0\xe5\xad\xa6", "\xf0\x9f\xa6\x84", "\\u00e9\\u2713", "\\ud83e\\udd84"]',
        b'["a\\u0000b", "\\u0000", "nul \\\\u0000 text"]',
        b'{"k\\u0000": "v"}',
        b'["\\ud800", "\\udc00x"]',  # lone surrogates: json.loads keeps them
        b"\xef\xbb\xbf[1]",  # UTF-8 BOM
        '[1, "é"]'.encode("utf-16"),
        '[1, "é"]'.encode("utf-32-le"),
        b'"\\/\\b\\f\\n\\r\\t\\"\\\\"',
        b'{"html": "<p>Bienvenue \xe2\x80\x94 \\"Art & Design <Studio>\\" \xe2\x9c\x93</p>"}',
    ],
)
def test_decoding_gives_the_objects_json_loads_gives(body):
    assert _same(decode_json(body), json.loads(body))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[1,]",
        b"[01]",
        b"{'a': 1}",
        b"<html>login</html>",
        b'"\xff"',
        b'"a\x01b"',
        b"[1] x",
        b"[.5]",
        b"nul",
    ],
)
def test_what_json_loads_refuses_is_refused_with_a_value_error(body):
    with pytest.raises(ValueError):
        json.loads(body)
    with pytest.raises(ValueError):
        decode_json(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1, NaN]", "NaN is not a JSON number"),
        (b'{"x": Infinity}', "Infinity is not a JSON number"),
        (b"[-Infinity]", "-Infinity is not a JSON number"),
        (b"[1e400]", "1e400 is beyond what a double holds"),
        (b'{"id": 1, "s": "12345678901234567890", "f": -1e400}', "-1e400 is beyond what a double holds"),
    ],
)
def test_nan_infinity_and_numbers_beyond_a_double_are_refused_with_a_clear_error(body, message):
    """`json.loads` reads them, but no staged text would keep them as they came (they would come back null)."""
    with pytest.raises(ValueError, match=message):
        decode_json(body)


def test_random_floats_decode_to_the_same_float():
    rng = random.Random(20251103)
    texts = []
    for _ in range(5000):
        x = struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0]
        if math.isfinite(x):
            texts += [repr(x), f"{x:.17g}", f"{x:.6e}", f"{x % 1000:.3f}"]
    body = ("[" + ",".join(texts) + "]").encode()
    assert _same(decode_json(body), json.loads(body))


def test_nesting_deeper_than_orjson_goes_is_decoded_by_the_stdlib():
    body = b"[" * 1100 + b"]" * 1100  # orjson stops at 1024 levels
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:
        assert _same(decode_json(body), json.loads(body))
    finally:
        sys.setrecursionlimit(limit)
