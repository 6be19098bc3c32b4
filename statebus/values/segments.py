"""Range segments: the syntax of Braid/statebus JSON ranges, parsed and written back.

``.a.b``, ``["quoted key"]``, ``[3]``, ``[-1]``, ``[i:j]`` (last only), ``""`` (the whole value) and
JSON Pointer ``/a/b/3`` parse to a tuple of :class:`Field`, :class:`Index` and :class:`Slice`.
:mod:`statebus.values.ranges` reads and patches values with them; docs/ranges.md has the table.
Bad syntax raises :class:`InvalidRange` with the position.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from statebus.errors import InvalidRange

MAX_RANGE_CHARS = 1024
"""The longest range text :func:`parse_range` accepts."""
MAX_RANGE_DEPTH = 64
"""The most segments a range may have."""
_MAX_DIGITS = 15

_NAME_RE = re.compile(r"[^.\[]*")
_BAD_NAME_CHAR_RE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_NUMBERS_RE = re.compile(r"(-?)(\d+)(?::(-?)(\d+))?\]")
_PLAIN_NAME_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")
_BAD_TILDE_RE = re.compile(r"~(?![01])")
_DECODER = json.JSONDecoder(strict=True)


@dataclass(frozen=True, slots=True)
class Field:
    """An object field (``.name`` or ``["name"]``); on an array, a decimal name is an index."""

    name: str

    def __str__(self) -> str:
        if _PLAIN_NAME_RE.fullmatch(self.name):
            return "." + self.name
        return "[" + json.dumps(self.name, ensure_ascii=False) + "]"


@dataclass(frozen=True, slots=True)
class Index:
    """An array element or string character: ``[index]``, or ``[-index]`` when ``from_end``."""

    index: int
    from_end: bool = False

    def __post_init__(self) -> None:
        if self.index < 0:
            raise InvalidRange("an index is non-negative; set from_end to count from the end")

    def resolve(self, length: int) -> int:
        """The absolute position in a sequence of ``length`` items."""
        return length - self.index if self.from_end else self.index

    def __str__(self) -> str:
        return f"[{'-' if self.from_end else ''}{self.index}]"


@dataclass(frozen=True, slots=True)
class Slice:
    """A slice ``[start:end]`` of an array or string; each end may count from the end."""

    start: int
    end: int
    start_from_end: bool = False
    end_from_end: bool = False

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < 0:
            raise InvalidRange("slice ends are non-negative; set *_from_end to count from the end")

    def resolve(self, length: int) -> tuple[int, int]:
        """The absolute ``(start, end)`` in a sequence of ``length`` items (not bounds-checked)."""
        start = length - self.start if self.start_from_end else self.start
        end = length - self.end if self.end_from_end else self.end
        return start, end

    def __str__(self) -> str:
        s = f"{'-' if self.start_from_end else ''}{self.start}"
        e = f"{'-' if self.end_from_end else ''}{self.end}"
        return f"[{s}:{e}]"


Segment: TypeAlias = Field | Index | Slice


def parse_range(text: object) -> tuple[Segment, ...]:
    """Parse range text into segments.

    Args:
        text: ``.a.b[3]``, ``["k"][1:2]``, ``/a/b/3`` (JSON Pointer) or ``""`` for the whole value.

    Returns:
        The segments, outermost first (empty for the whole value).

    Raises:
        InvalidRange: the syntax is bad (the reason names the position) or over a limit.

    >>> parse_range('.messages[-1]["a b"]')
    (Field(name='messages'), Index(index=1, from_end=True), Field(name='a b'))
    """
    if not isinstance(text, str):
        raise InvalidRange(f"a range is text, not {type(text).__name__}")
    if len(text) > MAX_RANGE_CHARS:
        raise InvalidRange(f"range is {len(text)} characters; the limit is {MAX_RANGE_CHARS}")
    if text == '""':  # the whole value, as the empty range (not a field named ``""``)
        return ()
    segments = _parse_pointer(text) if text.startswith("/") else _parse_path(text)
    check_segments(segments)
    return segments


def format_range(segments: Iterable[Segment]) -> str:
    """Write segments back as dot/bracket range text (the inverse of :func:`parse_range`).

    >>> format_range([Field("a"), Field("b c"), Slice(1, 1)])
    '.a["b c"][1:1]'
    """
    return "".join(str(seg) for seg in segments)


def _parse_path(text: str) -> tuple[Segment, ...]:
    segments: list[Segment] = []
    pos = 0
    if text and text[0] not in ".[":
        name, pos = _read_name(text, 0)
        segments.append(Field(name))
    while pos < len(text):
        if len(segments) >= MAX_RANGE_DEPTH:
            raise InvalidRange(f"range has more than {MAX_RANGE_DEPTH} segments")
        if segments and isinstance(segments[-1], Slice):
            raise InvalidRange(f"a slice [i:j] must be the last segment; more follows at position {pos}")
        char = text[pos]
        if char == ".":
            name, pos = _read_name(text, pos + 1)
            segments.append(Field(name))
        elif char == "[":
            seg, pos = _read_bracket(text, pos)
            segments.append(seg)
        else:
            raise InvalidRange(f"expected '.' or '[' at position {pos}, found {char!r}")
    return tuple(segments)


def _read_name(text: str, start: int) -> tuple[str, int]:
    match = _NAME_RE.match(text, start)
    end = match.end() if match else start
    name = text[start:end]
    if not name:
        raise InvalidRange(f"empty field name at position {start}")
    bad = _BAD_NAME_CHAR_RE.search(name)
    if bad:
        raise InvalidRange(
            f"unquoted field name contains {bad.group()!r} at position {start + bad.start()};"
            ' quote it as ["..."]'
        )
    return name, end


def _read_bracket(text: str, pos: int) -> tuple[Segment, int]:
    inner = pos + 1
    if text.startswith('"', inner):
        try:
            name, end = _DECODER.raw_decode(text, inner)
        except json.JSONDecodeError as exc:
            raise InvalidRange(f"bad quoted field name at position {exc.pos}: {exc.msg}") from None
        if _SURROGATE_RE.search(name):
            raise InvalidRange(f"quoted field name at position {inner} has a lone surrogate escape")
        if not text.startswith("]", end):
            raise InvalidRange(f"expected ']' at position {end}")
        return Field(name), end + 1
    match = _NUMBERS_RE.match(text, inner)
    if not match:
        raise InvalidRange(f"expected an index, a slice i:j or a quoted name after '[' at position {pos}")
    neg1, digits1, neg2, digits2 = match.groups()
    if len(digits1) > _MAX_DIGITS or (digits2 is not None and len(digits2) > _MAX_DIGITS):
        raise InvalidRange(f"index at position {inner} has more than {_MAX_DIGITS} digits")
    if digits2 is None:
        return Index(int(digits1), from_end=bool(neg1)), match.end()
    return Slice(int(digits1), int(digits2), bool(neg1), bool(neg2)), match.end()


def _parse_pointer(text: str) -> tuple[Segment, ...]:
    segments: list[Segment] = []
    pos = 1
    for token in text[1:].split("/"):
        if len(segments) >= MAX_RANGE_DEPTH:
            raise InvalidRange(f"range has more than {MAX_RANGE_DEPTH} segments")
        bad = _BAD_TILDE_RE.search(token)
        if bad:
            raise InvalidRange(f"JSON Pointer '~' must be followed by 0 or 1 at position {pos + bad.start()}")
        segments.append(Field(token.replace("~1", "/").replace("~0", "~")))
        pos += len(token) + 1
    return tuple(segments)


def check_segments(segments: Sequence[Segment]) -> None:
    if len(segments) > MAX_RANGE_DEPTH:
        raise InvalidRange(f"range has more than {MAX_RANGE_DEPTH} segments")
    for i, seg in enumerate(segments):
        if not isinstance(seg, Field | Index | Slice):
            raise InvalidRange(f"segment {i} is a {type(seg).__name__}, not a Field, Index or Slice")
        if isinstance(seg, Slice) and i != len(segments) - 1:
            raise InvalidRange(f"a slice [i:j] must be the last segment, not segment {i}")
