"""RFC 9110 byte ranges of a binary value: ``Range: bytes=…``, ``If-Range``, 206 and 416.

Rules:

1. Only binary values (stored with a content type) have byte ranges; they say ``Accept-Ranges:
   bytes``. JSON values keep Braid's ``Range: json …`` (see :mod:`statebus.http.keys`).
2. A ``Range`` that is not a well-formed ``bytes=`` range set, or that asks for more than
   :data:`MAX_RANGES` ranges, is ignored: the whole value is served with 200 (RFC 9110 §14.2).
3. When none of the ranges lies inside the value, the answer is 416 with ``Content-Range:
   bytes */<size>``; ranges that do not are dropped, the others served.
4. One range is served as 206 with ``Content-Range``; several as one ``multipart/byteranges`` body,
   each part in the order asked (no coalescing).
5. ``If-Range`` with an entity tag serves the range only when that tag is the value's strong ETag;
   with a date (values have no ``Last-Modified``), or a weak tag, never: the whole value is served.
"""

from __future__ import annotations

import secrets
from typing import Final

from statebus.errors import RangeNotSatisfiable

MAX_RANGES: Final = 16
"""More ranges than this in one request are ignored (rule 2): a client gets the whole value."""
ACCEPT_RANGES: Final = ("accept-ranges", "bytes")

ByteRange = tuple[int, int]
"""``(first, last)``: inclusive byte positions inside the value."""


def _digits(text: str) -> int | None:
    text = text.strip(" \t")
    if not text or not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def parse_byte_ranges(header: str, size: int) -> list[ByteRange] | None:
    """The satisfiable ranges ``header`` asks of a value of ``size`` bytes, in the order asked;
    None when the header is to be ignored (rule 2).

    Raises:
        RangeNotSatisfiable: no range lies inside the value (rule 3).

    Example:
        >>> parse_byte_ranges("bytes=0-99, -10", 1000)
        [(0, 99), (990, 999)]
    """
    unit, eq, rest = header.partition("=")
    if not eq or unit.strip(" \t").lower() != "bytes":
        return None
    specs = [s for s in (item.strip(" \t") for item in rest.split(",")) if s]
    if not specs or len(specs) > MAX_RANGES:
        return None
    out: list[ByteRange] = []
    for spec in specs:
        first_text, dash, last_text = spec.partition("-")
        if not dash:
            return None
        if not first_text.strip(" \t"):  # suffix-range: the last N bytes
            n = _digits(last_text)
            if n is None:
                return None
            if n > 0 and size > 0:
                out.append((max(0, size - n), size - 1))
            continue
        first = _digits(first_text)
        last = _digits(last_text) if last_text.strip(" \t") else size - 1
        if first is None or last is None or (last_text.strip(" \t") and last < first):
            return None
        if first < size:
            out.append((first, min(last, size - 1)))
    if not out:
        raise RangeNotSatisfiable(f"no range of {header.strip()!r} lies inside the value", size=size)
    return out


def if_range_holds(header: str | None, etag: str | None) -> bool:
    """Whether the ranges may be served under ``If-Range`` (rule 5); True without one."""
    if header is None:
        return True
    tag = header.strip(" \t")
    return etag is not None and not tag.startswith("W/") and tag == etag


def content_range(rng: ByteRange, size: int) -> str:
    return f"bytes {rng[0]}-{rng[1]}/{size}"


def multipart(data: bytes, ranges: list[ByteRange], content_type: str) -> tuple[bytes, str]:
    """The ``multipart/byteranges`` body of several ranges and its content type (rule 4)."""
    boundary = "statebus-" + secrets.token_hex(12)
    size = len(data)
    parts: list[bytes] = []
    for rng in ranges:
        head = (
            f"--{boundary}\r\ncontent-type: {content_type}\r\n"
            f"content-range: {content_range(rng, size)}\r\n\r\n"
        )
        parts.append(head.encode("latin-1") + data[rng[0] : rng[1] + 1] + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode("latin-1"))
    return b"".join(parts), f"multipart/byteranges; boundary={boundary}"


__all__ = [
    "ACCEPT_RANGES",
    "MAX_RANGES",
    "ByteRange",
    "content_range",
    "if_range_holds",
    "multipart",
    "parse_byte_ranges",
]
