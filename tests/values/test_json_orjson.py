"""orjson where it gives the standard library's bytes, the standard library everywhere else.

``dumps_json`` and the op codec's canonical encoding (``oplog/codec.py``) must write exactly what
``json.dumps`` wrote before orjson (the documented canonical form), and refuse exactly what it
refused, with the same error. ``loads_json`` must return the same value (types included: an
integer stays an integer) or the same error as the exact decoder (``exact_loads``).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import struct
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statebus.errors import InvalidOp, InvalidValue
from statebus.oplog import codec
from statebus.values.json import dumps_json, fast_dumps, loads_json
from tests.values.test_json_fast_duplicates import exact_loads


def old_dumps_json(value: Any) -> bytes:
    """``dumps_json`` before orjson."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        raise InvalidValue(f"value cannot be encoded as JSON: {type(exc).__name__}") from None


OLD_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def old_canonical(obj: Any) -> bytes:
    """``oplog/codec.py``'s ``_dumps`` before orjson."""
    try:
        return OLD_ENCODER.encode(obj).encode()
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        raise InvalidOp(f"op body is not canonical JSON: {type(exc).__name__}") from None


def outcome(fn: Any, value: Any) -> tuple[str, Any]:
    try:
        return ("ok", fn(value))
    except (InvalidValue, InvalidOp) as exc:
        return (type(exc).__name__, str(exc))


class Colour(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int


class Count(int):
    pass


class Name(str):
    pass


# Strings with every escape, raw control and separator characters, astral characters, lone surrogates.
chars = st.characters(codec="utf-8") | st.sampled_from(
    ["\x00", "\x08", "\x0c", "\x1f", "\x7f", "\u2028", '"', "\\", "/", "\ud800", "\U0001f600", "é"]
)
texts = st.text(chars, max_size=6)
numbers = (
    st.integers(-(2**53) + 1, 2**53 - 1)
    | st.integers()  # beyond 64 bits too: the standard encoder writes them, orjson refuses
    | st.floats()  # NaN and infinities included: refused
    | st.sampled_from([1e16, 1e-7, 1e22, 5e-324, -0.0, 1e15, 0.1, 123456789012345680.0])
)
odd = st.sampled_from([Colour.RED, Point(1), uuid.UUID(int=7), Count(3), Name("n"), b"x", {1, 2}, ()])
leaves = st.none() | st.booleans() | numbers | texts | odd
values = st.recursive(
    leaves,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.lists(kids, max_size=3).map(tuple)
        | st.dictionaries(texts, kids, max_size=4)
        | st.dictionaries(st.integers(0, 3) | st.booleans(), kids, max_size=2)
    ),
    max_leaves=16,
)


@settings(max_examples=500)
@given(values)
def test_values_encode_to_the_same_bytes_or_the_same_refusal(value: Any) -> None:
    assert outcome(dumps_json, value) == outcome(old_dumps_json, value)


@settings(max_examples=500)
@given(values)
def test_canonical_op_encoding_is_the_same_bytes_or_the_same_refusal(value: Any) -> None:
    fields = {"k": "/k", "v": "1-a", "p": [], "a": "a", "c": 1, "m": "lww", "t": "set", "b": value}
    assert outcome(codec._dumps, fields) == outcome(old_canonical, fields)
    assert outcome(codec._dumps, value) == outcome(old_canonical, value)


def test_orjson_is_used_for_plain_values_only() -> None:
    plain = {"z": [1, "é\u2028\x00", None, True, (2, 3)], "a": {"": -(2**53)}}
    assert fast_dumps(plain) == old_dumps_json(plain)
    assert fast_dumps(plain, sort_keys=True) == old_canonical(plain)
    assert fast_dumps([1.5, -0.0, 1e16, 1e-4, 1e300]) == b"[1.5,-0.0,1e+16,0.0001,1e+300]"
    for other in [
        [1e-7],
        5e-324,
        {"a": math.nan},
        -math.inf,
        Colour.RED,
        Point(1),
        uuid.UUID(int=7),
        Count(3),
        {1: 2},
    ]:
        assert fast_dumps({"x": other}) is None
    assert fast_dumps(2**64) is None  # orjson refuses it; the standard encoder writes it
    assert fast_dumps("\ud800") is None  # a lone surrogate: the standard encoder's error


@settings(max_examples=1000)
@given(st.integers(0, 2**64 - 1))
def test_floats_from_random_bits_encode_as_python_writes_them(bits: int) -> None:
    number = struct.unpack("<d", struct.pack("<Q", bits))[0]
    assert outcome(dumps_json, [number, {"f": number}]) == outcome(old_dumps_json, [number, {"f": number}])
    assert outcome(codec._dumps, {"f": number}) == outcome(old_canonical, {"f": number})


def test_deep_nesting_takes_the_standard_encoder() -> None:
    deep: Any = 1
    for _ in range(300):  # orjson stops at 254 levels
        deep = [deep]
    assert dumps_json(deep) == old_dumps_json(deep)


digits = st.text("0123456789", min_size=1, max_size=30)


@st.composite
def number_texts(draw: st.DrawFn) -> str:
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(digits)
    fraction = draw(st.none() | digits)
    exponent = draw(st.none() | st.tuples(st.sampled_from("eE"), st.sampled_from(["", "+", "-"]), digits))
    text = sign + whole + ("" if fraction is None else "." + fraction)
    if exponent is not None:
        text += "".join(exponent)
    return text


def same(data: bytes) -> None:
    try:
        got: tuple[str, Any] = ("ok", loads_json(data).value)
    except InvalidValue as exc:
        got = ("InvalidValue", str(exc))
    try:
        want: tuple[str, Any] = ("ok", exact_loads(data, 64))
    except InvalidValue as exc:
        want = ("InvalidValue", str(exc))
    assert got == want
    if got[0] == "ok":  # == says 1 == 1.0 and 0.0 == -0.0: the types and signs must match too
        assert repr(got[1]) == repr(want[1])


@settings(max_examples=300)
@given(st.lists(number_texts(), min_size=1, max_size=3), st.booleans())
def test_numbers_decode_to_the_same_value_and_type(numbers: list[str], wrap: bool) -> None:
    text = ("[" + ",".join(numbers) + "]") if wrap else numbers[0]
    same(text.encode())
    same(('{"n":' + text + "}").encode())


@pytest.mark.parametrize(
    "text",
    [
        "18446744073709551616",  # orjson reads it as a float
        "-9223372036854775809",
        "9223372036854775807",
        "9007199254740992",
        "-0",
        "-0.0",
        "1E400",
        "-1e400",
        "1e-400",
        "0.1000000000000000055511151231257827",
        '"\\ud800"',
        '"\\udc00\\ud800"',
        '{"a":1,"a":1}',
        "NaN",
        "[Infinity]",
    ],
)
def test_numbers_and_strings_orjson_reads_differently(text: str) -> None:
    same(text.encode())
    same(("[" + text + "]").encode())
