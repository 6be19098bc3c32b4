from __future__ import annotations

import copy
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statebus.errors import InvalidRange, InvalidValue, NotFound
from statebus.oplog.events import DELETE, Patch
from statebus.types import JSON
from statebus.values import (
    Field,
    Index,
    Slice,
    apply_patch,
    apply_patches,
    format_range,
    get_range,
    is_delete,
)

# --- get_range -------------------------------------------------------------------------------

DOC: JSON = {"a": {"b": [10, 20, 30], "s": "hello"}, "k e y": 1, "arr": [{"x": 1}, {"x": 2}]}

GETS = [
    ("", DOC),
    (".a.b", [10, 20, 30]),
    (".a.b[0]", 10),
    (".a.b[-1]", 30),
    (".a.b[-3]", 10),
    (".a.b[1:3]", [20, 30]),
    (".a.b[0:0]", []),
    (".a.b[-2:-0]", [20, 30]),
    (".a.b.2", 30),
    ('["k e y"]', 1),
    (".arr[1].x", 2),
    ("/arr/0/x", 1),
    ("/a/s", "hello"),
    (".a.s[1]", "e"),
    (".a.s[-1]", "o"),
    (".a.s[1:3]", "el"),
]


@pytest.mark.parametrize(("rng", "expected"), GETS)
def test_get_range(rng: str, expected: object) -> None:
    assert get_range(DOC, rng) == expected


GET_ERRORS = [
    (".missing", NotFound, "no field 'missing' at the root"),
    (".a.nope", NotFound, "no field 'nope' at .a"),
    (".a.b[3]", NotFound, "out of bounds for length 3 at .a.b"),
    (".a.b[-4]", NotFound, "out of bounds"),
    (".a.b[-0]", NotFound, "out of bounds"),
    (".a.b[2:5]", NotFound, "out of bounds"),
    (".a.b[2:1]", NotFound, "out of bounds"),
    (".a.b.-", NotFound, "out of bounds"),
    (".a.s[5]", NotFound, "out of bounds"),
    (".a.b.x", InvalidRange, "cannot use field 'x' on an array at .a.b"),
    (".a.b.01", InvalidRange, "on an array"),
    ("[0]", InvalidRange, "cannot use [0] on an object at the root"),
    (".a[0:1]", InvalidRange, "on an object"),
    ('["k e y"].z', InvalidRange, 'cannot address .z inside a number at ["k e y"]'),
    (".a.s.x", InvalidRange, "inside a string"),
    (".a.s[0][0]", InvalidRange, "inside a string"),
]


@pytest.mark.parametrize(("rng", "error", "reason"), GET_ERRORS)
def test_get_range_errors(rng: str, error: type[Exception], reason: str) -> None:
    with pytest.raises(error) as info:
        get_range(DOC, rng)
    assert reason in str(info.value)


def test_get_range_accepts_segments() -> None:
    assert get_range(DOC, (Field("a"), Field("b"), Index(1))) == 20
    with pytest.raises(InvalidRange, match="last segment"):
        get_range(DOC, (Slice(0, 1), Index(0)))


# --- apply_patch: statebus.js-compatible examples --------------------------------------------

PATCHES = [
    # (value, range, content, expected)
    ({"messages": ["a", "c"]}, ".messages[1:1]", ["b"], {"messages": ["a", "b", "c"]}),
    ({"messages": ["a"]}, ".messages[-0:-0]", ["z"], {"messages": ["a", "z"]}),
    ({"messages": ["a", "b", "c"]}, ".messages[0:2]", [], {"messages": ["c"]}),
    ({"messages": ["a", "b"]}, ".messages[-1]", "B", {"messages": ["a", "B"]}),
    ({"messages": ["a", "b"]}, ".messages[2]", "c", {"messages": ["a", "b", "c"]}),
    ({"messages": ["a", "b"]}, ".messages.-", "c", {"messages": ["a", "b", "c"]}),
    ({"messages": ["a", "b"]}, "/messages/0", "A", {"messages": ["A", "b"]}),
    ({"a": 1}, ".b", 2, {"a": 1, "b": 2}),
    ({"a": 1, "b": 2}, ".a", 5, {"a": 5, "b": 2}),
    ({"a": 1, "b": 2}, ".a", DELETE, {"b": 2}),
    ({"a": 1}, ".zz", DELETE, {"a": 1}),
    ({"a": {"b": {"c": 1}}}, ".a.b.c", [1], {"a": {"b": {"c": [1]}}}),
    ({"a": {"b": 1}}, '.a["new key"]', None, {"a": {"b": 1, "new key": None}}),
    ({"t": "hello world"}, ".t[0:5]", "HELLO", {"t": "HELLO world"}),
    ({"t": "helo"}, ".t[3:3]", "l", {"t": "hello"}),
    ({"t": "hello"}, ".t[0]", "J", {"t": "Jello"}),
    ({"t": "hello"}, ".t[-1]", "o!", {"t": "hello!"}),
    ({"t": "hello"}, ".t[5]", "!", {"t": "hello!"}),
    ({"t": "hello"}, ".t[1:4]", DELETE, {"t": "ho"}),
    ({"t": "hello"}, ".t[0]", DELETE, {"t": "ello"}),
    ("hello", "[0:1]", "J", "Jello"),
    ([1, 2, 3], "[1]", DELETE, [1, 3]),
    ([1, 2, 3], "[-1]", DELETE, [1, 2]),
    ([1, 2, 3], "[0:2]", DELETE, [3]),
    ([[1, 2], [3]], "[0][1]", 9, [[1, 9], [3]]),
    ([{"x": 1}], "[0].x", 2, [{"x": 2}]),
    ({"a": 1}, "", [1, 2], [1, 2]),
    (None, "", {"a": 1}, {"a": 1}),
]


@pytest.mark.parametrize(("value", "rng", "content", "expected"), PATCHES)
def test_apply_patch(value: object, rng: str, content: object, expected: object) -> None:
    before = copy.deepcopy(value)
    assert apply_patch(value, rng, content) == expected  # type: ignore[arg-type]
    assert value == before  # never mutated


def test_apply_patch_keeps_key_order() -> None:
    result = apply_patch({"a": 1, "b": 2, "c": 3}, ".b", 9)
    assert isinstance(result, dict)
    assert list(result) == ["a", "b", "c"]


def test_apply_patch_copies_only_the_path() -> None:
    shared: JSON = {"deep": [1, 2]}
    inner: JSON = {"b": 1}
    value: JSON = {"a": inner, "other": shared}
    result = apply_patch(value, ".a.b", 2)
    assert isinstance(result, dict)
    assert result is not value
    assert result["a"] is not inner
    assert result["other"] is shared
    assert value == {"a": {"b": 1}, "other": {"deep": [1, 2]}}


PATCH_ERRORS = [
    (
        {"a": 1},
        ".x.y",
        1,
        InvalidRange,
        "no field 'x' at the root; patches do not create intermediate fields",
    ),
    ({"a": [1]}, ".a[5].y", 1, InvalidRange, "out of bounds for length 1 at .a"),
    ({"a": [1]}, ".a[2]", 1, InvalidRange, "out of bounds"),
    ({"a": [1]}, ".a[-2]", 1, InvalidRange, "out of bounds"),
    ({"a": [1]}, ".a[1]", DELETE, InvalidRange, "out of bounds"),
    ({"a": [1]}, ".a[0:2]", [], InvalidRange, "out of bounds"),
    ({"a": [1, 2]}, ".a[2:1]", [], InvalidRange, "out of bounds"),
    ({"a": [1]}, ".a.x", 1, InvalidRange, "on an array at .a"),
    ({"a": 1}, "[0]", 1, InvalidRange, "on an object at the root"),
    ({"a": 1}, ".a.b", 1, InvalidRange, "inside a number at .a"),
    ({"a": None}, ".a[0]", 1, InvalidRange, "inside null at .a"),
    ({"a": True}, ".a.b", 1, InvalidRange, "inside a boolean"),
    ({"s": "abc"}, ".s.x", "z", InvalidRange, "inside a string"),
    ({"s": "abc"}, ".s[0][0]", "z", InvalidRange, "inside a string"),
    ({"s": "abc"}, ".s[4]", "z", InvalidRange, "out of bounds"),
    ({"s": "abc"}, ".s[3]", DELETE, InvalidRange, "out of bounds"),
    ({"a": 1}, "", DELETE, InvalidRange, "delete the key instead"),
    ({"a": [1]}, ".a[0:0]", 5, InvalidValue, "needs array content, not a number"),
    ({"a": [1]}, ".a[0:0]", "x", InvalidValue, "needs array content, not a string"),
    ({"s": "abc"}, ".s[0:1]", ["x"], InvalidValue, "needs string content, not an array"),
    ({"s": "abc"}, ".s[0]", 1, InvalidValue, "needs string content"),
    ({"a": 1}, ".a[", 1, InvalidRange, "position 2"),
]


@pytest.mark.parametrize(("value", "rng", "content", "error", "reason"), PATCH_ERRORS)
def test_apply_patch_errors(
    value: object, rng: str, content: object, error: type[Exception], reason: str
) -> None:
    before = copy.deepcopy(value)
    with pytest.raises(error) as info:
        apply_patch(value, rng, content)  # type: ignore[arg-type]
    assert reason in str(info.value)
    assert value == before


def test_apply_patches_in_order() -> None:
    value: JSON = {"messages": []}
    patches = [
        Patch(".messages[0:0]", ["hi"]),
        Patch(".messages[1:1]", ["there"]),
        Patch(".title", "chat"),
        Patch(".messages[0]", DELETE),
    ]
    assert apply_patches(value, patches) == {"messages": ["there"], "title": "chat"}
    assert value == {"messages": []}


def test_apply_patches_all_or_nothing() -> None:
    value: JSON = {"a": {"n": 1}}
    patches = [Patch(".a.n", 2), Patch(".b.c", 3)]
    with pytest.raises(InvalidRange, match=r"^patch 1: no field 'b'"):
        apply_patches(value, patches)
    assert value == {"a": {"n": 1}}
    with pytest.raises(InvalidValue, match="patch 0: expected a Patch"):
        apply_patches(value, [(".a", 1)])  # type: ignore[list-item]
    assert apply_patches(value, []) == value


def test_is_delete() -> None:
    assert is_delete(DELETE)
    assert not is_delete(None)
    assert not is_delete("DELETE")
    assert not is_delete([])


@pytest.mark.parametrize("module", ["statebus.values", "statebus.values.ranges", "statebus.oplog"])
def test_imports_alone_without_cycle(module: str) -> None:
    # values sit below the op log: each must import first in a fresh interpreter
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, timeout=60)


# --- properties ------------------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8)
_json = st.recursive(
    _scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


def _paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Every addressable path in a value (fields of objects, elements of arrays)."""
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, Field(key)))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += _paths(child, (*prefix, Index(i)))
    return out


@settings(deadline=None)
@given(_json, _json, st.data())
def test_patch_then_get_returns_content(value: object, content: object, data: st.DataObject) -> None:
    before = copy.deepcopy(value)
    path = data.draw(st.sampled_from(_paths(value)))
    result = apply_patch(value, path, content)  # type: ignore[arg-type]
    assert get_range(result, path) == content  # type: ignore[arg-type]
    assert value == before
    # the text form addresses the same place
    assert get_range(result, format_range(path)) == content  # type: ignore[arg-type]


@settings(deadline=None)
@given(st.lists(_scalars, max_size=8), st.lists(_scalars, max_size=4), st.data())
def test_array_splice_matches_python_slicing(
    items: list[object], content: list[object], data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(items)))
    j = data.draw(st.integers(i, len(items)))
    expected = list(items)
    expected[i:j] = content
    assert apply_patch(items, f"[{i}:{j}]", content) == expected  # type: ignore[arg-type]
    negative = f"[-{len(items) - i}:-{len(items) - j}]"
    assert apply_patch(items, negative, content) == expected  # type: ignore[arg-type]


@settings(deadline=None)
@given(st.text(max_size=12), st.text(max_size=4), st.data())
def test_string_splice_matches_python_slicing(text: str, content: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(text)))
    j = data.draw(st.integers(i, len(text)))
    assert apply_patch({"t": text}, f".t[{i}:{j}]", content) == {"t": text[:i] + content + text[j:]}
    assert get_range({"t": text}, f".t[{i}:{j}]") == text[i:j]
