"""Plain JSON values: check, decode strictly, encode compactly.

A statebus value is plain JSON as Python holds it: ``dict`` with ``str`` keys, ``list``, ``str``,
``int``, ``float``, ``bool`` and ``None`` — exactly those types, no subclasses, tuples or bytes.
To stay exact in JavaScript, integers satisfy ``|n| <= 2**53 - 1`` and floats are finite. Strings
must be encodable as UTF-8 (no lone surrogates). Nesting depth counts containers: ``1`` has depth
0, ``[1]`` depth 1, ``{"a": [1]}`` depth 2.

The decoder is strict: UTF-8 only (no byte order mark), no ``NaN``/``Infinity``, no duplicate
object keys (different parsers keep different duplicates — a classic smuggling vector), the same
integer and float rules, and nesting is checked *before* parsing so deep input cannot exhaust the
stack. The encoder is compact (``,`` and ``:`` without spaces), UTF-8, key order preserved.

:func:`loads_json` returns a :class:`CheckedJSON`: the value together with what its decode proved,
so a caller that hands it on (the bus's ``save``) neither copies it nor checks it again when the
proof covers :func:`check_json`.

Errors: :class:`InvalidValue` (not JSON, or not allowed) and :class:`TooLarge` (over ``max_bytes``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any, cast

import orjson

from statebus.errors import InvalidValue, TooLarge
from statebus.types import JSON
from statebus.values.segments import Field, Index, Segment, format_range

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer JavaScript holds exactly (``Number.MAX_SAFE_INTEGER``)."""
DEFAULT_MAX_BYTES = 1024 * 1024
"""A default limit on one encoded value, in bytes."""
DEFAULT_MAX_DEPTH = 64
"""A default limit on nesting depth (the same as the range depth limit)."""

_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
_NESTING_RE = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]', re.DOTALL)
"""A string token (possessive, so unterminated strings cannot backtrack) or a bracket."""

_STRING_RE = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
"""The string tokens of :data:`_NESTING_RE` alone (the same matches, as brackets are not quotes)."""
_LONG_NUMBER_RE = re.compile(r"[0-9]{19}")
_Path = tuple[Any, ...] | None
"""A reversed linked list ``(parent_path, key_or_index)`` so the walk builds paths only on error."""


def check_json(
    value: object, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
) -> int:
    """Check that ``value`` is a plain JSON value within limits.

    Args:
        value: the Python value to check.
        max_bytes: the largest allowed compact UTF-8 encoding.
        max_depth: the deepest allowed nesting of arrays and objects.

    Returns:
        The size in bytes of its compact encoding (:func:`dumps_json`).

    Raises:
        InvalidValue: a type, number, string or depth is not allowed (the reason says where).
        TooLarge: the encoding is over ``max_bytes``.

    >>> check_json({"a": [1, 2.5, None]})
    18
    """
    _walk(value, max_depth)
    size = len(dumps_json(value))
    if size > max_bytes:
        raise TooLarge(f"value is {size} bytes encoded; the limit is {max_bytes}")
    return size


MAX_GROWTH = 8
"""The compact encoding (:func:`dumps_json`) of a value :func:`loads_json` returned is at most this many
times the size of the JSON it was decoded from (see :func:`parsed_passes_check`)."""


def parsed_passes_check(size: int, max_depth: int) -> bool:
    """True when every value :func:`loads_json` returns from ``size`` bytes, called with ``max_depth``,
    passes :func:`check_json` with its default limits, so checking it again can be skipped.

    :func:`loads_json` ends with the same walk :func:`check_json` makes (types, integers, finite
    floats, no lone surrogates, depth), so with ``max_depth <= DEFAULT_MAX_DEPTH`` that part holds.
    The size: in the compact encoding, structural characters and ``true``/``false``/``null`` are as
    in the input; whitespace is gone; a string is never longer (the encoder escapes only ``"``, ``\\``
    and control characters, which the input must escape too, in at least as many bytes, and writes
    every other character as raw UTF-8, which no ``\\u`` escape undercuts); an integer is its own
    digits (``-0`` becomes ``0``); a float token has at least 3 characters (``1e5``, ``0.5``) and its
    ``repr`` at most 24 (``-2.2250738585072014e-308``). So the encoding is at most
    :data:`MAX_GROWTH` times ``size`` and, with ``size * MAX_GROWTH <= DEFAULT_MAX_BYTES``, within
    :func:`check_json`'s limit (``tests/values/test_json_fast_duplicates.py`` tries the worst cases).
    """
    return max_depth <= DEFAULT_MAX_DEPTH and size * MAX_GROWTH <= DEFAULT_MAX_BYTES


class CheckedJSON:
    """A JSON value just decoded by :func:`loads_json`, and what that decode proved of it.

    ``value`` is fresh: nothing else holds it, so whoever it is handed to may keep it without a
    copy. ``passes_check`` says whether the decode proves that :func:`check_json` (default limits)
    holds for it (:func:`parsed_passes_check` of the input's size and the decode's depth limit).
    Only :func:`loads_json` makes one: the proof is its decode's, not the constructor's.

    >>> parsed = loads_json(b'{"a": 1}')
    >>> parsed.value, parsed.passes_check
    ({'a': 1}, True)
    """

    __slots__ = ("passes_check", "value")

    def __init__(self, value: JSON, passes_check: bool) -> None:
        self.value = value
        self.passes_check = passes_check

    def __repr__(self) -> str:
        return f"CheckedJSON({self.value!r}, passes_check={self.passes_check})"


def loads_json(
    data: bytes | bytearray | memoryview,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> CheckedJSON:
    """Decode UTF-8 JSON strictly.

    Args:
        data: the encoded JSON (any top-level value).
        max_bytes: the largest allowed input, checked before decoding.
        max_depth: the deepest allowed nesting, checked before parsing.

    Returns:
        The value as a :class:`CheckedJSON` (``.value``); the value always passes :func:`check_json`
        for the same ``max_depth``, within the size limit when ``.passes_check``.

    Raises:
        TooLarge: ``data`` is over ``max_bytes``.
        InvalidValue: not UTF-8, not JSON, duplicate keys, NaN/Infinity, unsafe numbers, too deep.

    >>> loads_json(b'{"a": [1, 2.5, null]}').value
    {'a': [1, 2.5, None]}
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidValue(f"JSON input must be bytes, not {type(data).__name__}")
    raw = bytes(data)
    if len(raw) > max_bytes:
        raise TooLarge(f"JSON body is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidValue(f"JSON is not valid UTF-8 at byte {exc.start}") from None
    if text.startswith("\ufeff"):
        raise InvalidValue("JSON must not start with a byte order mark")
    fast = _loads_without_duplicates(raw, text, max_depth)
    if fast is not None:
        return CheckedJSON(fast[0], parsed_passes_check(len(raw), max_depth))
    _check_nesting(text, max_depth)
    try:
        value: JSON = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_reject_constant,
        )
    except json.JSONDecodeError as exc:
        raise InvalidValue(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InvalidValue("JSON is nested too deeply to decode") from None
    except ValueError:  # int() refuses numbers of more than 4300 digits
        raise InvalidValue("JSON has a number with too many digits") from None
    _walk(value, max_depth)
    return CheckedJSON(value, parsed_passes_check(len(raw), max_depth))


def dumps_json(value: object) -> bytes:
    """Encode a JSON value compactly as UTF-8 (``{"a":[1,2]}``), keeping key order.

    This encodes; it does not enforce statebus's value rules (use :func:`check_json` for that).

    Raises:
        InvalidValue: the value cannot be encoded (NaN, a non-JSON type, a cycle, a lone surrogate).
    """
    fast = fast_dumps(value)
    if fast is not None:
        return fast
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8")
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        raise InvalidValue(f"value cannot be encoded as JSON: {type(exc).__name__}") from None


def fast_dumps(value: object, *, sort_keys: bool = False) -> bytes | None:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
    sort_keys=sort_keys).encode()``, by orjson (about 10 × faster), or None when only that call can
    say: the caller then makes it, and gets its bytes or its error.

    orjson writes the same bytes for the types a checked value holds: ``dict`` with ``str`` keys,
    ``list``, ``tuple``, ``str``, ``int``, ``bool``, ``None`` (the same escapes, raw UTF-8 otherwise,
    ``sort_keys`` in code point order, which is UTF-8 byte order) and most floats: both write the
    shortest ``repr`` digits, but below 1e-4 Python pads the exponent (``1e-07``, orjson ``1e-7``),
    and orjson writes ``null`` for NaN and infinities, which ``allow_nan=False`` refuses. So a
    value holding a float that is not finite, or nonzero and smaller than 1e-4 in magnitude, takes
    the standard encoder, as does any other type (orjson would encode a dataclass, an enum or a
    UUID that ``json`` refuses) and whatever orjson itself refuses (an integer beyond 64 bits, a
    lone surrogate, deep nesting). ``tests/values/test_json_orjson.py`` compares the two on random
    values, floats from random bit patterns included.
    """
    if not _plain(value):
        return None
    try:
        return orjson.dumps(value, option=_SORTED if sort_keys else _UNSORTED)
    except orjson.JSONEncodeError:
        return None


_SORTED = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS
_UNSORTED = orjson.OPT_PASSTHROUGH_SUBCLASS


def _plain(value: object) -> bool:
    """True when ``value`` holds nothing but ``dict`` (``str`` keys), ``list``, ``tuple``, ``str``,
    ``int``, ``bool``, ``None`` and floats that orjson writes as Python does, exactly those types,
    nested at most :data:`_ORJSON_DEPTH` deep (see :func:`fast_dumps`). Depth first, so a cycle
    ends the walk within that many steps (the standard encoder then refuses it)."""
    if not _is_container(type(value)):
        return _plain_leaf(value)
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > _ORJSON_DEPTH:
            return False
        children: Iterable[object]
        if type(item) is dict:
            mapping = cast("dict[object, object]", item)
            for key in mapping:
                if type(key) is not str:
                    return False
            children = mapping.values()
        else:
            children = cast("Iterable[object]", item)  # a list or a tuple (mypyc checks a list cast)
        for child in children:
            if _is_container(type(child)):
                stack.append((child, depth + 1))
            elif not _plain_leaf(child):
                return False
    return True


_ORJSON_DEPTH = 250
"""Deeper values take the standard encoder (orjson refuses more than 254 levels)."""


def _is_container(kind: type) -> bool:
    return kind is dict or kind is list or kind is tuple


def _plain_leaf(item: object) -> bool:
    kind = type(item)
    if kind is str or kind is int or kind is bool or item is None:
        return True
    if kind is float:
        number = cast(float, item)
        return math.isfinite(number) and (number == 0.0 or abs(number) >= 1e-4)
    return False


# --- internals -------------------------------------------------------------------------------


def _loads_without_duplicates(raw: bytes, text: str, max_depth: int) -> tuple[JSON] | None:
    """The fast way of :func:`loads_json` (after its size, UTF-8 and BOM checks): ``(value,)``, or
    None when the exact way must run — it then gives the same answer or the same error.

    Python's ``object_pairs_hook`` costs a Python call per object; here the C decoder builds the
    dicts itself and duplicates are found by counting. With the strings blanked out (the same string
    tokens :func:`_check_nesting` skips), every ``:`` left in valid JSON separates one name from
    its value, so the document has ``text.count(":")`` names; the decoded dicts hold as many keys
    (counted by :func:`_walk`) exactly when no object repeats a name. Anything else — an error
    of any kind, a possible duplicate, nesting that the bracket count cannot bound — returns None,
    and :func:`loads_json` runs the exact checks in their order (so its error is the same one too).
    The value returned equals what the exact way returns (the hook builds the same dict from the
    same pairs when no key repeats).

    orjson decodes (``raw``, the same text as UTF-8) where the standard decoder would give the same
    value: it refuses what that decoder refuses and more (NaN, ``1e400``, lone surrogate escapes;
    all of which the exact way then refuses with its own message), parses floats to the same
    double, but reads an integer beyond 64 bits as a float. So a run of 19 digits outside strings
    (an integer that may not fit, or a long fraction) takes the exact way too; a statebus value's
    integers have at most 16 (``tests/values/test_json_orjson.py`` compares on random documents).
    """
    skeleton = _STRING_RE.sub('""', text)
    if skeleton.count("[") + skeleton.count("{") > max_depth:
        return None  # might be nested too deeply: let _check_nesting decide (and say where)
    if _LONG_NUMBER_RE.search(skeleton):
        return None  # orjson would read an integer of 20 digits as a float
    try:
        value: JSON = orjson.loads(raw)
        names = _walk(value, max_depth)
    except (ValueError, RecursionError, InvalidValue):  # JSONDecodeError is a ValueError
        return None
    if names != skeleton.count(":"):
        return None  # a repeated name (the exact way refuses it)
    return (value,)


def _walk(value: object, max_depth: int) -> int:
    """Check types, numbers, strings and depth without recursion; paths are built only on error.

    Returns the number of object keys in ``value`` (all levels).
    """
    if type(value) is not dict and type(value) is not list:
        _check_leaf(value, None, None)
        return 0
    names = 0
    stack: list[tuple[dict[Any, Any] | list[Any], int, _Path]] = [(value, 1, None)]
    while stack:
        item, depth, path = stack.pop()
        if depth > max_depth:
            raise InvalidValue(f"value is nested deeper than {max_depth} at {_where(path)}")
        children: Iterable[tuple[Any, Any]]
        if type(item) is dict:
            names += len(item)
            for key in item:
                if type(key) is not str:
                    raise InvalidValue(f"object key at {_where(path)} is {type(key).__name__}, not str")
                if not key.isascii() and _SURROGATE_RE.search(key):
                    raise InvalidValue(f"object key at {_where(path)} has a lone surrogate (not UTF-8)")
            children = item.items()
        else:
            children = enumerate(item)
        for step, child in children:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1, (path, step)))
            elif kind is not str or not child.isascii():
                _check_leaf(child, path, step)
    return names


def _check_leaf(item: object, path: _Path, step: object) -> None:
    kind = type(item)
    if kind is str:
        if _SURROGATE_RE.search(item):  # type: ignore[call-overload]
            raise InvalidValue(f"string at {_where((path, step))} has a lone surrogate (not UTF-8)")
    elif kind is int:
        if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:  # type: ignore[operator]
            raise InvalidValue(f"integer at {_where((path, step))} is beyond ±(2**53 - 1) (inexact in JS)")
    elif kind is float:
        if not math.isfinite(item):  # type: ignore[arg-type]
            raise InvalidValue(f"number at {_where((path, step))} is not finite")
    elif item is not None and kind is not bool:
        raise InvalidValue(f"{kind.__name__} at {_where((path, step))} is not a JSON type")


def _where(path: _Path) -> str:
    segments: list[Segment] = []
    while path is not None:
        path, step = path
        if step is not None:
            segments.append(Index(step) if isinstance(step, int) else Field(step))
    return format_range(reversed(segments)) or "the root"


def _check_nesting(text: str, max_depth: int) -> None:
    """Reject nesting deeper than ``max_depth`` before the (recursive) parser sees it."""
    depth = 0
    for match in _NESTING_RE.finditer(text):
        char = text[match.start()]
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise InvalidValue(f"JSON is nested deeper than {max_depth} (at character {match.start()})")
        elif char in "]}":
            depth -= 1


def _object_without_duplicates(pairs: list[tuple[str, JSON]]) -> dict[str, JSON]:
    obj: dict[str, JSON] = {}
    for key, val in pairs:
        if key in obj:
            shown = key if len(key) <= 40 else key[:40] + "…"
            raise InvalidValue(f"duplicate object key {shown!r}")
        obj[key] = val
    return obj


def _reject_constant(name: str) -> JSON:
    raise InvalidValue(f"{name} is not JSON")
