"""``loads_json``'s fast way (duplicate names found by counting) answers exactly as the hook does."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from statebus.errors import InvalidValue, TooLarge
from statebus.values import json as values_json
from statebus.values.json import loads_json


def exact_loads(data: bytes, max_depth: int) -> Any:
    """``loads_json`` as it was: the nesting pass, the duplicate hook, then the walk."""
    text = data.decode("utf-8")
    values_json._check_nesting(text, max_depth)
    try:
        value = json.loads(
            text,
            object_pairs_hook=values_json._object_without_duplicates,
            parse_constant=values_json._reject_constant,
        )
    except json.JSONDecodeError as exc:
        raise InvalidValue(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidValue("JSON is nested too deeply to decode") from None
    except ValueError:
        raise InvalidValue("JSON has a number with too many digits") from None
    values_json._walk(value, max_depth)
    return value


def outcome(fn: Any, data: bytes, depth: int) -> tuple[str, Any]:
    try:
        return ("ok", json.dumps(fn(data, depth)))
    except (InvalidValue, TooLarge) as exc:
        return (type(exc).__name__, str(exc))


def fast(data: bytes, depth: int) -> Any:
    return loads_json(data, max_depth=depth).value


names = st.sampled_from(["a", "b", "a:b", '"', "\\", "{", "}", "[", ":", "é", "\\u0061"])
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**60), 2**60), st.floats(allow_nan=False), st.text(max_size=5)
)
values = st.recursive(
    leaves, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(names, kids, max_size=3)
)
pieces = st.sampled_from(
    ['"a":1,', '"a":', ',"a":2', "{", "}", "[", "]", ":", ",", '"', "\\", "NaN", "1e999", '"a"']
)


def duplicated(value: Any) -> str:
    """The compact JSON of ``value`` with every object's first name also written first again."""
    if isinstance(value, dict):
        inner = [f"{json.dumps(k)}:{duplicated(v)}" for k, v in value.items()]
        if inner:
            inner.insert(0, inner[0])
        return "{" + ",".join(inner) + "}"
    if isinstance(value, list):
        return "[" + ",".join(duplicated(v) for v in value) + "]"
    return json.dumps(value)


@settings(max_examples=400)
@given(values, st.integers(0, 5), st.booleans())
def test_same_outcome_for_documents(value: Any, depth: int, dup: bool) -> None:
    text = duplicated(value) if dup else json.dumps(value, ensure_ascii=bool(depth % 2))
    data = text.encode("utf-8", "surrogatepass")
    assert outcome(fast, data, depth) == outcome(exact_loads, data, depth)


@settings(max_examples=400)
@given(values, st.lists(st.tuples(st.integers(0, 200), pieces), max_size=4), st.integers(0, 5))
def test_same_outcome_for_mangled_documents(value: Any, edits: list[tuple[int, str]], depth: int) -> None:
    text = json.dumps(value)
    for at, piece in edits:
        at %= len(text) + 1
        text = text[:at] + piece + text[at:]
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert outcome(fast, data, depth) == outcome(exact_loads, data, depth)


def test_duplicates_refused_where_colons_hide_in_strings() -> None:
    for text in ['{"a:":1,"a":2,"a":3}', '{"x":{"a":1,"a":1}}', '[{"a":1},{"b":{"c":1,"c":1}}]']:
        assert outcome(fast, text.encode(), 64) == outcome(exact_loads, text.encode(), 64)
        assert outcome(fast, text.encode(), 64)[0] == "InvalidValue"
    assert loads_json(b'{"a:b":"c:d","e":{"f":"::"}}').value == {"a:b": "c:d", "e": {"f": "::"}}


@settings(max_examples=300)
@given(values, st.sampled_from(["", " ", "\n  "]))
def test_compact_encoding_grows_at_most_max_growth_times(value: Any, space: str) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False), json.dumps(value, indent=1)):
        data = text.replace(",", "," + space).encode("utf-8", "surrogatepass")
        try:
            parsed = loads_json(data).value
        except InvalidValue:
            continue
        assert len(values_json.dumps_json(parsed)) <= values_json.MAX_GROWTH * len(data)


def test_compact_encoding_growth_worst_cases() -> None:
    worst = ["1e5", "9E9", "1e15", "1E22", "-1e-7", "0.0", "1e-320", "[1e15,9e9]", '{"a":1e15}']
    worst += ["-2.2250738585072014e-308", "1.7976931348623157e308", '"\\u00e9"', '"\\/"', '"\\ud83d\\ude00"']
    for text in worst:
        data = text.encode()
        assert len(values_json.dumps_json(loads_json(data).value)) <= values_json.MAX_GROWTH * len(data), text
    assert values_json.parsed_passes_check(values_json.DEFAULT_MAX_BYTES // 8, 64)
    assert not values_json.parsed_passes_check(values_json.DEFAULT_MAX_BYTES // 8 + 1, 64)
    assert not values_json.parsed_passes_check(10, 65)
