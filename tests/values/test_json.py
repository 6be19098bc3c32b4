from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statebus.errors import InvalidValue, TooLarge
from statebus.values import MAX_SAFE_INTEGER, check_json, dumps_json, loads_json

# --- check_json ------------------------------------------------------------------------------

GOOD_VALUES: list[object] = [
    None,
    True,
    0,
    -MAX_SAFE_INTEGER,
    MAX_SAFE_INTEGER,
    1.5,
    -0.0,
    "",
    "é€😀",
    [],
    {},
    {"a": [1, {"b": None}], "c": "d"},
]


@pytest.mark.parametrize("value", GOOD_VALUES)
def test_check_json_accepts_and_measures(value: object) -> None:
    assert check_json(value) == len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


BAD_VALUES = [
    ((1, 2), "tuple at the root is not a JSON type"),
    ({"a": {1, 2}}, "set at .a is not a JSON type"),
    ({"a": [b"x"]}, "bytes at .a[0] is not a JSON type"),
    ({1: "x"}, "object key at the root is int, not str"),
    ({"a": {None: 1}}, "object key at .a is NoneType"),
    ([MAX_SAFE_INTEGER + 1], "integer at [0] is beyond"),
    ({"n": -(2**53)}, "integer at .n is beyond"),
    ({"x y": [0, math.nan]}, 'number at ["x y"][1] is not finite'),
    ([math.inf], "not finite"),
    ([-math.inf], "not finite"),
    (["ok", "\ud800"], "string at [1] has a lone surrogate"),
    ({"\udfff": 1}, "object key at the root has a lone surrogate"),
    (object(), "object at the root is not a JSON type"),
]


@pytest.mark.parametrize(("value", "reason"), BAD_VALUES)
def test_check_json_rejects(value: object, reason: str) -> None:
    with pytest.raises(InvalidValue) as info:
        check_json(value)
    assert reason in info.value.detail


class _MyStr(str):
    pass


class _MyDict(dict):  # type: ignore[type-arg]
    pass


@pytest.mark.parametrize("value", [_MyStr("x"), _MyDict(), [_MyStr("x")]])
def test_check_json_rejects_subclasses(value: object) -> None:
    with pytest.raises(InvalidValue, match="not a JSON type"):
        check_json(value)


def test_check_json_depth() -> None:
    def nest(n: int) -> object:
        value: object = 1
        for i in range(n):
            value = [value] if i % 2 else {"k": value}
        return value

    check_json(nest(5), max_depth=5)
    with pytest.raises(InvalidValue, match="nested deeper than 5"):
        check_json(nest(6), max_depth=5)
    check_json(1, max_depth=0)
    with pytest.raises(InvalidValue, match="nested deeper than 0"):
        check_json([], max_depth=0)
    # a cycle is caught by the depth limit, not by exhausting the stack
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(InvalidValue, match="nested deeper"):
        check_json(cyclic)


def test_check_json_size() -> None:
    assert check_json("abc", max_bytes=5) == 5
    with pytest.raises(TooLarge, match="6 bytes encoded; the limit is 5"):
        check_json("abcd", max_bytes=5)
    assert check_json("é", max_bytes=4) == 4  # UTF-8 bytes, not characters


# --- loads_json ------------------------------------------------------------------------------

LOADS: list[tuple[bytes, object]] = [
    (b"null", None),
    (b' {"a" : [1, 2.5, true, false, null, "x"]} ', {"a": [1, 2.5, True, False, None, "x"]}),
    (b'"\\u00e9\\ud83d\\ude00"', "é😀"),
    ('"é"'.encode(), "é"),
    (b"9007199254740991", MAX_SAFE_INTEGER),
    (b"-9007199254740991", -MAX_SAFE_INTEGER),
    (b"1e300", 1e300),
    (b"[]", []),
]


@pytest.mark.parametrize(("data", "expected"), LOADS)
def test_loads_json(data: bytes, expected: object) -> None:
    assert loads_json(data).value == expected


BAD_JSON = [
    (b"", "not JSON: Expecting value at line 1 column 1"),
    (b"{", "not JSON"),
    (b"[1,]", "not JSON"),
    (b"{'a': 1}", "not JSON"),
    (b"1 2", "not JSON: Extra data"),
    (b"NaN", "NaN is not JSON"),
    (b"[Infinity]", "Infinity is not JSON"),
    (b"-Infinity", "-Infinity is not JSON"),
    (b"1e400", "number at the root is not finite"),
    (b"[1, -1e999]", "number at [1] is not finite"),
    (b"9007199254740992", "beyond"),
    (b"-9007199254740992", "beyond"),
    (b"1" * 5000, "too many digits"),
    (b'{"a": [9007199254740992]}', "integer at .a[0] is beyond"),
    (b'{"a": 1, "a": 2}', "duplicate object key 'a'"),
    (b'{"x": {"b": 1, "b": 1}}', "duplicate object key 'b'"),
    (b'{"\\u0061": 1, "a": 2}', "duplicate object key 'a'"),
    (b'"\\ud800"', "string at the root has a lone surrogate"),
    (b'{"\\udc00": 1}', "lone surrogate"),
    (b'"\xff"', "not valid UTF-8 at byte 1"),
    (b'"\xc3"', "not valid UTF-8"),
    (b"\xef\xbb\xbf{}", "byte order mark"),
    (b'"a\x01b"', "Invalid control character"),
    ("{}".encode("utf-16"), "not valid UTF-8"),
]


@pytest.mark.parametrize(("data", "reason"), BAD_JSON)
def test_loads_json_rejects(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidValue) as info:
        loads_json(data)
    assert reason in info.value.detail


def test_loads_json_limits() -> None:
    assert loads_json(b"[[1]]", max_depth=2).value == [[1]]
    with pytest.raises(InvalidValue, match="nested deeper than 2"):
        loads_json(b"[[[1]]]", max_depth=2)
    # brackets inside strings do not count
    assert loads_json(b'["[[[[{{{\\"]]"]', max_depth=1).value == ['[[[[{{{"]]']
    # deep input is refused before the recursive parser sees it
    with pytest.raises(InvalidValue, match="nested deeper than 64"):
        loads_json(b"[" * 100_000 + b"]" * 100_000)
    # pathological strings stay linear (a backtracking scan would take hours here)
    for bad in (b'"' + b'a\\"' * 200_000, b'"' * 999_999, b'["' + b"\\" * 99_999, b"[" * 60 + b'"\\'):
        with pytest.raises(InvalidValue, match="not JSON"):
            loads_json(bad)
    assert loads_json(b'"12345"', max_bytes=7).value == "12345"
    with pytest.raises(TooLarge, match="8 bytes; the limit is 7"):
        loads_json(b'"123456"', max_bytes=7)
    with pytest.raises(InvalidValue, match="must be bytes"):
        loads_json('"text"')  # type: ignore[arg-type]
    assert loads_json(bytearray(b"[1]")).value == [1]
    assert loads_json(memoryview(b"[1]")).value == [1]


# --- dumps_json ------------------------------------------------------------------------------


def test_dumps_json_is_compact_utf8_and_ordered() -> None:
    assert dumps_json({"b": 1, "a": [1, 2.5, None, True]}) == b'{"b":1,"a":[1,2.5,null,true]}'
    assert dumps_json("é😀") == '"é😀"'.encode()
    assert dumps_json("\u2028<\n") == b'"\xe2\x80\xa8<\\n"'


@pytest.mark.parametrize("value", [math.nan, [math.inf], {"a": {1, 2}}, "\ud800", b"x"])
def test_dumps_json_rejects(value: object) -> None:
    with pytest.raises(InvalidValue, match="cannot be encoded"):
        dumps_json(value)  # type: ignore[arg-type]


def test_dumps_json_rejects_cycles() -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    with pytest.raises(InvalidValue, match="cannot be encoded"):
        dumps_json(cyclic)  # type: ignore[arg-type]


# --- properties ------------------------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=30,
)


@settings(deadline=None)
@given(_json)
def test_round_trip(value: object) -> None:
    size = check_json(value)
    data = dumps_json(value)  # type: ignore[arg-type]
    assert len(data) == size
    assert loads_json(data).value == value
    assert json.loads(data) == value  # the stdlib agrees on what we wrote


@settings(deadline=None)
@given(st.binary(max_size=64))
def test_loads_never_raises_anything_but_invalid_value(data: bytes) -> None:
    try:
        value = loads_json(data).value
    except InvalidValue:
        return
    check_json(value)


@settings(deadline=None)
@given(st.text(alphabet='[]{}",:0123456789.eE+-\\tuaflsnr ', max_size=40))
def test_loads_json_like_text_never_crashes(text: str) -> None:
    try:
        loads_json(text.encode())
    except InvalidValue:
        pass
