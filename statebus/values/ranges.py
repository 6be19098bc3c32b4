"""Braid/statebus JSON ranges: parse ``.a.b[3]``, read inside a value, patch a part of it.

Ranges (``.a.b[3]``, ``["k"]``, ``[-1]``, ``[i:j]``, ``/a/b/3``, ``""``) are parsed by
:mod:`statebus.values.segments` (re-exported here); docs/ranges.md has the table. On an array, a
field whose name is a decimal index (``.3``, ``/3``) addresses that element, and the name ``-``
addresses the end (as in JavaScript and RFC 6902). String offsets count code points.

Values are treated as immutable: :func:`apply_patch` copies only the containers along the path and
shares everything else with its input (and with ``content``); :func:`get_range` returns the stored
sub-value itself, not a copy.

Errors: bad syntax, a type mismatch (a field of an array, an index of an object, anything inside a
number) or a patch that cannot apply raise :class:`InvalidRange`; reading a missing field or an
index out of bounds raises :class:`NotFound`; patch content of the wrong kind (a splice into an
array with non-array content) raises :class:`InvalidValue`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeAlias, cast

from statebus.errors import InvalidRange, InvalidValue, NotFound, StatebusError
from statebus.types import JSON
from statebus.values.segments import (
    MAX_RANGE_CHARS,
    MAX_RANGE_DEPTH,
    Field,
    Index,
    Segment,
    Slice,
    check_segments,
    format_range,
    parse_range,
)

__all__ = [
    "MAX_RANGE_CHARS",
    "MAX_RANGE_DEPTH",
    "Field",
    "Index",
    "PatchLike",
    "RangeLike",
    "Segment",
    "Slice",
    "apply_patch",
    "apply_patches",
    "format_range",
    "get_range",
    "is_delete",
    "parse_range",
]

_ARRAY_INDEX_RE = re.compile(r"0|[1-9][0-9]{0,14}")

RangeLike: TypeAlias = "str | Sequence[Segment]"


class PatchLike(Protocol):
    """What :func:`apply_patches` reads from a patch (:class:`statebus.oplog.Patch` fits)."""

    @property
    def range(self) -> str: ...

    @property
    def content(self) -> object: ...


def is_delete(content: object) -> bool:
    """True when ``content`` is :data:`statebus.oplog.DELETE` (remove the addressed part).

    The sentinel is found by identity in the loaded op-log module rather than imported: values sit
    below the op log in the layering (the op log decodes values with this package). If that module
    is not loaded, no ``DELETE`` can exist yet.
    """
    events = sys.modules.get("statebus.oplog.events")
    return events is not None and content is getattr(events, "DELETE", None)


def _segments(rng: RangeLike) -> tuple[Segment, ...]:
    if isinstance(rng, str):
        return parse_range(rng)
    segments = tuple(rng)
    check_segments(segments)
    return segments


def get_range(value: JSON, rng: RangeLike) -> JSON:
    """Read the part of ``value`` that a range addresses.

    Args:
        value: a JSON value.
        rng: range text or parsed segments.

    Returns:
        The addressed sub-value (shared with ``value``, not copied); a slice returns a new list or str.

    Raises:
        InvalidRange: bad syntax, or a segment does not fit the value's type.
        NotFound: a field is missing or an index/slice is out of bounds.
    """
    segments = _segments(rng)
    current = value
    for i, seg in enumerate(segments):
        where = _where(segments, i)
        if isinstance(current, str) and i == len(segments) - 1 and not isinstance(seg, Field):
            if isinstance(seg, Slice):
                start, end = _slice_bounds(seg, len(current), where, NotFound)
                return current[start:end]
            return current[_index(seg, len(current), where, NotFound, allow_end=False)]
        if isinstance(current, dict):
            key = _field(seg, where, "an object")
            if key not in current:
                raise NotFound(f"no field {_short(key)} at {where}")
            current = current[key]
        elif isinstance(current, list):
            if isinstance(seg, Slice):
                start, end = _slice_bounds(seg, len(current), where, NotFound)
                return current[start:end]
            current = current[_index(seg, len(current), where, NotFound, allow_end=False)]
        else:
            raise InvalidRange(f"cannot address {seg} inside {_kind(current)} at {where}")
    return current


def apply_patch(value: JSON, rng: RangeLike, content: object) -> JSON:
    """Return a new value with the part ``rng`` addresses replaced by ``content`` (statebus.js semantics).

    * object field: set it (created if missing) or, with ``DELETE``, remove it (missing: no change);
    * array element ``[i]``: replace it, append when ``i`` is the length, remove it with ``DELETE``;
    * slice ``[i:j]``: splice an array (content is an array) or a string (content is a string);
      ``DELETE`` removes the slice;
    * string character ``[i]``: replace it with the content string;
    * ``""``: replace the whole value (``DELETE`` is refused: delete the key instead).

    The input is never mutated: containers along the path are copied, the rest is shared.

    Raises:
        InvalidRange: bad syntax, a missing intermediate field or element (patches never create
            them), a type mismatch, or an index/slice out of bounds.
        InvalidValue: the content does not fit the target (non-array into an array slice,
            non-string into a string).
    """
    segments = _segments(rng)
    deleting = is_delete(content)
    if not segments:
        if deleting:
            raise InvalidRange("cannot DELETE the whole value with a patch; delete the key instead")
        return cast(JSON, content)
    return _patch(value, segments, 0, None if deleting else cast(JSON, content), deleting)


def apply_patches(value: JSON, patches: Iterable[PatchLike]) -> JSON:
    """Apply patches in order; all or nothing (on error ``value`` is untouched and nothing returns).

    Raises:
        InvalidRange | InvalidValue: from the first patch that fails; the detail names its number.
    """
    for n, patch in enumerate(patches):
        rng, content = getattr(patch, "range", None), getattr(patch, "content", None)
        if not isinstance(rng, str):
            raise InvalidValue(f"patch {n}: expected a Patch, got {type(patch).__name__}")
        try:
            value = apply_patch(value, rng, content)
        except (InvalidRange, InvalidValue) as exc:
            raise type(exc)(f"patch {n}: {exc.detail}") from exc
    return value


# --- applying --------------------------------------------------------------------------------


def _patch(current: JSON, segments: tuple[Segment, ...], i: int, content: JSON, deleting: bool) -> JSON:
    seg = segments[i]
    where = _where(segments, i)
    if i == len(segments) - 1:
        return _patch_last(current, seg, content, deleting, where)
    if isinstance(current, dict):
        key = _field(seg, where, "an object")
        if key not in current:
            raise InvalidRange(
                f"no field {_short(key)} at {where}; patches do not create intermediate fields"
            )
        new_dict = dict(current)
        new_dict[key] = _patch(current[key], segments, i + 1, content, deleting)
        return new_dict
    if isinstance(current, list):
        idx = _index(seg, len(current), where, InvalidRange, allow_end=False)
        new_list = list(current)
        new_list[idx] = _patch(current[idx], segments, i + 1, content, deleting)
        return new_list
    raise InvalidRange(f"cannot address {seg} inside {_kind(current)} at {where}")


def _patch_last(current: JSON, seg: Segment, content: JSON, deleting: bool, where: str) -> JSON:
    if isinstance(current, dict):
        key = _field(seg, where, "an object")
        if deleting:
            if key not in current:
                return current
            new_dict = dict(current)
            del new_dict[key]
            return new_dict
        new_dict = dict(current)
        new_dict[key] = content
        return new_dict
    if isinstance(current, list):
        if isinstance(seg, Slice):
            if deleting:
                content = []
            if not isinstance(content, list):
                raise InvalidValue(f"splicing the array at {where} needs array content, not {_kind(content)}")
            start, end = _slice_bounds(seg, len(current), where, InvalidRange)
            return current[:start] + content + current[end:]
        idx = _index(seg, len(current), where, InvalidRange, allow_end=not deleting)
        if deleting:
            return current[:idx] + current[idx + 1 :]
        return [*current[:idx], content, *current[idx + 1 :]]
    if isinstance(current, str) and not isinstance(seg, Field):
        if deleting:
            content = ""
        if not isinstance(content, str):
            raise InvalidValue(f"patching the string at {where} needs string content, not {_kind(content)}")
        if isinstance(seg, Slice):
            start, end = _slice_bounds(seg, len(current), where, InvalidRange)
        else:
            start = _index(seg, len(current), where, InvalidRange, allow_end=not deleting)
            end = min(start + 1, len(current))
        return current[:start] + content + current[end:]
    raise InvalidRange(f"cannot address {seg} inside {_kind(current)} at {where}")


# --- helpers ---------------------------------------------------------------------------------


def _field(seg: Segment, where: str, kind: str) -> str:
    if not isinstance(seg, Field):
        raise InvalidRange(f'cannot use {seg} on {kind} at {where}; objects take .name or ["name"]')
    return seg.name


def _index(seg: Segment, length: int, where: str, missing: type[StatebusError], *, allow_end: bool) -> int:
    """The absolute position ``seg`` names in a sequence; ``allow_end`` admits ``length`` (append)."""
    if isinstance(seg, Field):
        if seg.name == "-":
            idx = length
        elif _ARRAY_INDEX_RE.fullmatch(seg.name):
            idx = int(seg.name)
        else:
            raise InvalidRange(f"cannot use field {_short(seg.name)} on an array at {where}; arrays take [i]")
    elif isinstance(seg, Index):
        idx = seg.resolve(length)
    else:
        raise InvalidRange(f"a slice {seg} must be the last segment (at {where})")
    if 0 <= idx < length or (allow_end and idx == length):
        return idx
    raise missing(f"index {seg} is out of bounds for length {length} at {where}")


def _slice_bounds(seg: Slice, length: int, where: str, missing: type[StatebusError]) -> tuple[int, int]:
    start, end = seg.resolve(length)
    if not 0 <= start <= end <= length:
        raise missing(f"slice {seg} is out of bounds for length {length} at {where}")
    return start, end


def _where(segments: Sequence[Segment], i: int) -> str:
    """Describe the place segment ``i`` applies to: the range up to it, or "the root"."""
    return format_range(segments[:i]) or "the root"


def _kind(value: object) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}
    return names.get(type(value), "an object" if isinstance(value, dict) else type(value).__name__)


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")
