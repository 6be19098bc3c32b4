"""A parser for Braid-HTTP 209 subscription streams, for tests: it reads what npm braid-http's client reads.

It follows ``parse_update``/``parse_headers``/``parse_body`` of braid-http 1.3.80's client:

1. CR and LF bytes before an update are skipped (heartbeats and the ``\\r\\n\\r\\n`` after each update).
2. An update's header block ends at the first blank line (``\\n\\n`` or ``\\n\\r\\n``); a first line
   ``HTTP 200 OK`` (or ``HTTP/1.1 404 Not Found``) becomes ``status`` (``"200"``).
3. ``Content-Length: N`` → N bytes of body, or one patch if ``Content-Range`` is also set;
   ``Patches: N`` → N blocks, each with ``Content-Length`` and ``Content-Range``; neither → error.
4. A block starting with ``Encoding:`` is a binary block (``Encoding: x`` / ``Length: N``).

Feed it bytes as they arrive; it returns each update once it is complete::

    parser = BraidStreamParser()
    for update in parser.feed(chunk):
        print(update.status, update.version, update.json())
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from statebus.errors import InvalidOp
from statebus.types import JSON

_STATUS_RE = re.compile(r"^HTTP/?\d*\.?\d* (\d\d\d)[^\r\n]*\r?\n", re.ASCII)
_HEADER_RE = re.compile(r"(:?[\w\-_]+):\s?([^\r\n]*)[\r\n]*", re.ASCII)
_ENCODING_RE = re.compile(r"Encoding:\s*(\w+)\r?\nLength:\s*(\d+)\r?\n", re.IGNORECASE)
_RANGE_RE = re.compile(r"(\S+)( (.*))?", re.DOTALL)
_INT_RE = re.compile(r"\s*[-+]?\d+", re.ASCII)


@dataclass(frozen=True)
class StreamPatch:
    """One patch of an update: ``unit`` (``json``), ``range`` and the raw ``content`` bytes."""

    unit: str
    range: str
    content: bytes
    extra_headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> JSON:
        """The content parsed as JSON."""
        return json.loads(self.content)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class StreamUpdate:
    """One update read from a subscription stream."""

    status: str | None
    headers: dict[str, str]
    """Every header of the update, names lowercased, values as written."""
    version: tuple[str, ...] | None = None
    parents: tuple[str, ...] | None = None
    body: bytes | None = None
    patches: tuple[StreamPatch, ...] | None = None
    encoding: str | None = None

    def json(self) -> JSON:
        """The snapshot body parsed as JSON."""
        if self.body is None:
            raise InvalidOp("this update carries patches, not a body")
        return json.loads(self.body)  # type: ignore[no-any-return]


def _versions(text: str) -> tuple[str, ...]:
    try:
        items = json.loads("[" + text + "]")
    except (ValueError, RecursionError) as exc:
        raise InvalidOp(f"cannot parse version list {text!r}: {exc}") from None
    return tuple(items)


def _parse_headers(buf: bytes, pos: int, encoding_blocks: bool) -> tuple[dict[str, str], int] | None:
    """Headers from ``pos`` (after skipping CR/LF), and where the body starts; None: need more bytes."""
    size = len(buf)
    while pos < size and buf[pos] in (10, 13):
        pos += 1
    if pos >= size:
        return None
    if encoding_blocks and buf[pos] in (ord("e"), ord("E")):
        first = buf.find(b"\n", pos)
        second = buf.find(b"\n", first + 1) if first >= 0 else -1
        if second < 0:
            return None
        source = buf[pos : second + 1].decode("latin-1")
        m = _ENCODING_RE.match(source)
        if m is None:
            raise InvalidOp(f"parse error in encoding block: {source!r}")
        return {"encoding": m.group(1), "length": m.group(2)}, second + 1
    ends = [i for i in (buf.find(b"\n\n", pos), buf.find(b"\n\r\n", pos)) if i >= 0]
    if not ends:
        return None
    end = min(ends)
    start = end + (3 if buf[end + 1] == 13 else 2)
    source = buf[pos:start].decode("latin-1")  # braid-http reads header bytes as String.fromCharCode
    source = _STATUS_RE.sub(lambda m: f":status: {m.group(1)}\r\n", source, count=1)
    headers: dict[str, str] = {}
    at = 0
    while at < len(source):
        m = _HEADER_RE.match(source, at)
        if m is None or m.end() == at:
            raise InvalidOp(f"parse error in headers: {source[at:]!r}")
        headers[m.group(1).lower()] = m.group(2)
        at = m.end()
    return headers, start


def _js_int(text: str | None) -> int | None:
    """``parseInt``: leading digits after optional blanks, or None (NaN). Negative lengths are errors."""
    m = _INT_RE.match(text or "")
    if m is None:
        return None
    value = int(m.group(0))
    if value < 0:
        raise InvalidOp(f"negative length {text!r}")
    return value


def _content_range(text: str) -> tuple[str, str]:
    m = _RANGE_RE.search(text)
    if m is None:
        raise InvalidOp(f"cannot parse content-range {text!r}")
    return m.group(1), m.group(3) or ""


class BraidStreamParser:
    """Incremental parser of a 209 response body. Raises :class:`InvalidOp` where braid-http errors."""

    def __init__(self) -> None:
        self._buf = b""

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet part of a complete update (CR/LF between updates included)."""
        return self._buf

    def feed(self, data: bytes) -> list[StreamUpdate]:
        """Add bytes; return the updates they complete, in order."""
        self._buf += data
        out: list[StreamUpdate] = []
        while True:
            parsed = self._parse_one()
            if parsed is None:
                return out
            update, used = parsed
            self._buf = self._buf[used:]
            out.append(update)

    def _parse_one(self) -> tuple[StreamUpdate, int] | None:
        buf = self._buf
        got = _parse_headers(buf, 0, encoding_blocks=True)
        if got is None:
            return None
        headers, pos = got
        version = _versions(headers["version"]) if "version" in headers else None
        parents = _versions(headers["parents"]) if "parents" in headers else None
        status = headers.get(":status")
        if "encoding" in headers and ":status" not in headers and len(headers) == 2:
            length = int(headers["length"])  # the encoding-block regex guarantees digits
            if pos + length > len(buf):
                return None
            body = buf[pos : pos + length]
            return StreamUpdate(None, headers, body=body, encoding=headers["encoding"]), pos + length
        length_text = headers.get("content-length")
        if length_text is None and "patches" not in headers:
            length_text = headers.get("length")
        body_length = _js_int(length_text)
        if body_length is not None:
            length = body_length
            if pos + length > len(buf):
                return None
            content = buf[pos : pos + length]
            if headers.get("content-range"):
                unit, rng = _content_range(headers["content-range"])
                patch = StreamPatch(unit, rng, content)
                return StreamUpdate(status, headers, version, parents, patches=(patch,)), pos + length
            return StreamUpdate(status, headers, version, parents, body=content), pos + length
        if "patches" in headers:
            patches: list[StreamPatch] = []
            try:
                count = json.loads(headers["patches"])
            except ValueError:
                raise InvalidOp(f"cannot parse Patches: {headers['patches']!r}") from None
            if type(count) is not int or count < 0:
                raise InvalidOp(f"Patches must be a whole number, got {headers['patches']!r}")
            while len(patches) < count:
                block = _parse_headers(buf, pos, encoding_blocks=False)
                if block is None:
                    return None
                patch_headers, pos = block
                if "content-length" not in patch_headers:
                    raise InvalidOp("no content-length in patch")
                if "content-range" not in patch_headers:
                    raise InvalidOp("no content-range in patch")
                patch_length = _js_int(patch_headers.pop("content-length"))
                if patch_length is None:
                    raise InvalidOp("patch content-length is not a number")
                length = patch_length
                if pos + length > len(buf):
                    return None
                unit, rng = _content_range(patch_headers.pop("content-range"))
                patches.append(StreamPatch(unit, rng, buf[pos : pos + length], patch_headers))
                pos += length
            return StreamUpdate(status, headers, version, parents, patches=tuple(patches)), pos
        raise InvalidOp("cannot parse body without content-length or patches header")
