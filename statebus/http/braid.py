"""Braid-HTTP wire format: parse and format its headers and bodies. Pure: no I/O, no asyncio, no starlette.

The forms are those npm ``braid-http`` 1.3.x reads and writes (draft-toomim-httpbis-braid-http-04):

1. ``Version`` and ``Parents`` hold a list of quoted strings, ``"a", "b"`` (an RFC 8941 List of Strings).
   braid-http writes ``JSON.stringify`` of each, non-ASCII as ``\\uXXXX``, joined by ``", "``, and reads
   the header with ``JSON.parse("[" + h + "]")``, so an unquoted version makes it throw. We parse with
   http-sfv and fall back to JSON for escapes RFC 8941 lacks (``\\u00e9``, ``\\n``); both strict.
2. ``Subscribe`` may hold anything, even nothing (``true``, ``?1``, ``""``); only ``?0``/``false`` say no.
3. ``Heartbeats: 0.5s`` asks the server to write a blank line every 0.5 s while a subscription is idle.
4. ``Peer`` is an opaque client id, raw (``abc``, braid-http 1.3) or quoted (``"abc"``, 1.4).
5. A PUT or PATCH body is a snapshot, or one patch when ``Content-Range: json <range>`` is set, or
   ``Patches: N`` blocks, each ``Content-Length`` + ``Content-Range`` headers, a blank line and the
   content. Patch content is JSON; empty content removes what the range addresses (JS ``undefined``).
6. In a 209 subscription each update is an optional ``HTTP 200 OK`` line, headers, a blank line, the
   body (``Content-Length``) or patch blocks (``Patches``), then ``\\r\\n\\r\\n``. Any CR/LF between
   updates is skipped, which is how heartbeats work.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from json.encoder import encode_basestring_ascii

from http_sfv.list import List as SfvList

from statebus.errors import InvalidOp, InvalidRange, InvalidValue
from statebus.oplog import DELETE, Patch
from statebus.values import DEFAULT_MAX_BYTES, MAX_RANGE_CHARS, loads_json, parse_range

MAX_VERSIONS = 64
MAX_VERSION_CHARS = 128
MAX_LIST_CHARS = MAX_VERSIONS * (MAX_VERSION_CHARS * 6 + 4)
"""Longest Version/Parents header: every character of every version as a ``\\uXXXX`` escape."""
MAX_PATCHES = 1000
MAX_PATCH_HEADER_BYTES = 8192
MAX_PEER_CHARS = 128
MIN_HEARTBEAT_SECONDS = 0.1
MAX_HEARTBEAT_SECONDS = 3600.0

HEARTBEAT = b"\r\n"
"""What a server writes to an idle subscription every ``Heartbeats`` seconds."""
SUBSCRIPTION_HEADERS: tuple[tuple[str, str], ...] = (
    ("subscribe", "true"),
    ("cache-control", "no-cache, no-transform, no-store"),
    ("x-accel-buffering", "no"),
)
"""Headers of a 209 response besides the content type: echo Subscribe, and keep proxies from buffering."""
RANGE_HEADERS: tuple[tuple[str, str], ...] = (
    ("range-request-allow-methods", "PATCH, PUT"),
    ("range-request-allow-units", "json"),
)
"""Headers braid-http adds to every response to say which patches the server takes."""

_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTENT_RANGE_RE = re.compile(r"(\S+)(?: (.*))?", re.DOTALL)
_HEARTBEATS_RE = re.compile(r"(\d{1,9}(?:\.\d{1,9})?|\.\d{1,9})\s*(s|ms)?", re.IGNORECASE | re.ASCII)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_STATUS_LINES: dict[str, bytes] = {}


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")


def parse_version_list(header: str, *, name: str = "Version") -> tuple[str, ...]:
    """Parse a ``Version`` or ``Parents`` header: a list of quoted strings.

    Args:
        header: the header value, e.g. ``"a", "b"``. Empty or blank means no versions.
        name: the header's name, used in error details.

    Returns:
        The versions in the order given.

    Raises:
        InvalidValue: unquoted or malformed items, more than 64 versions, a version that is empty,
            longer than 128 characters, repeated or holds control characters.

    Example:
        >>> parse_version_list('"a", "b\\\\u00e9"')
        ('a', 'bé')
    """
    text = header.strip(" \t")
    if not text:
        return ()
    if len(text) > MAX_LIST_CHARS:
        raise InvalidValue(f"{name} header is longer than {MAX_LIST_CHARS} characters")
    if not text.isascii():
        raise InvalidValue(f"{name} header must be ASCII: write other characters as \\uXXXX escapes")
    items = _sfv_strings(text, name)
    if items is None:
        items = _json_strings(text, name)
    if len(items) > MAX_VERSIONS:
        raise InvalidValue(f"{name} header lists more than {MAX_VERSIONS} versions")
    for item in items:
        if not item or len(item) > MAX_VERSION_CHARS:
            raise InvalidValue(f"{name} header: a version is 1 to {MAX_VERSION_CHARS} characters")
        if _CONTROL_RE.search(item):
            raise InvalidValue(f"{name} header: a version may not contain control characters")
    if len(set(items)) != len(items):
        raise InvalidValue(f"{name} header lists a version twice")
    return tuple(items)


def _sfv_strings(text: str, name: str) -> list[str] | None:
    """The strings of an RFC 8941 List, or None when ``text`` is not one (JSON may still read it)."""
    members = SfvList()
    try:
        members.parse(text.encode("ascii"))
    except (ValueError, IndexError, KeyError, TypeError):
        return None
    out: list[str] = []
    for member in members:
        value = getattr(member, "value", None)
        if type(value) is not str or member.params:
            raise InvalidValue(f'{name} header must be a list of quoted strings such as "v1", "v2"')
        out.append(value)
    return out


def _json_strings(text: str, name: str) -> list[str]:
    try:
        items = json.loads("[" + text + "]")
    except (ValueError, RecursionError):
        raise InvalidValue(f'{name} header must be a list of quoted strings such as "v1", "v2"') from None
    if not all(type(item) is str for item in items):
        raise InvalidValue(f'{name} header must be a list of quoted strings such as "v1", "v2"')
    return items  # type: ignore[no-any-return]


def format_version_list(versions: Iterable[str]) -> str:
    """Format versions as braid-http does: JSON strings, ASCII only (``\\uXXXX``), joined by ``", "``.

    Example:
        >>> format_version_list(["a", "é"])
        '"a", "\\\\u00e9"'
    """
    return ", ".join(map(encode_basestring_ascii, versions))


def parse_subscribe(header: str | None) -> bool:
    """Whether a ``Subscribe`` header asks for a subscription: any value does, even empty, except ``?0``."""
    if header is None:
        return False
    return header.strip().lower() not in ("?0", "false")


def parse_heartbeats(header: str | None) -> float | None:
    """Parse ``Heartbeats`` (``0.5s``, ``10``, ``500ms``) into seconds; None when the header is absent.

    Raises:
        InvalidValue: not a number of seconds, or outside 0.1 s .. 3600 s.
    """
    if header is None:
        return None
    m = _HEARTBEATS_RE.fullmatch(header.strip())
    if m is None:
        raise InvalidValue(
            f"Heartbeats header must be a number of seconds such as 0.5s, got {_short(header)}"
        )
    seconds = float(m.group(1)) / (1000.0 if (m.group(2) or "").lower() == "ms" else 1.0)
    if not MIN_HEARTBEAT_SECONDS <= seconds <= MAX_HEARTBEAT_SECONDS:
        raise InvalidValue(
            f"Heartbeats header must be between {MIN_HEARTBEAT_SECONDS}s and {MAX_HEARTBEAT_SECONDS:g}s"
        )
    return seconds


def parse_peer(header: str | None) -> str | None:
    """Parse ``Peer``, raw (``abc``) or quoted (``"abc"``); None when absent or blank.

    Raises:
        InvalidValue: a malformed quoted string, over 128 characters, or control characters.
    """
    if header is None:
        return None
    text = header.strip(" \t")
    if text.startswith('"'):
        items = parse_version_list(text, name="Peer")
        if len(items) != 1:
            raise InvalidValue("Peer header must be one id")
        text = items[0]
    if not text:
        return None
    if len(text) > MAX_PEER_CHARS or _CONTROL_RE.search(text):
        raise InvalidValue(
            f"Peer header must be at most {MAX_PEER_CHARS} characters, without control characters"
        )
    return text


def parse_content_range(header: str) -> str:
    """Parse ``Content-Range: json <range>`` and return the range text (``.a.b``, ``[3]``, or empty).

    Raises:
        InvalidRange: the unit is not ``json``; the range is malformed or too long.
    """
    m = _CONTENT_RANGE_RE.fullmatch(header.strip(" \t"))
    if m is None:
        raise InvalidRange("Content-Range must be 'json <range>'")
    unit, rng = m.group(1), (m.group(2) or "").strip(" \t")
    if unit.lower() != "json":
        raise InvalidRange(f"Content-Range unit must be json, got {_short(unit)}")
    if len(rng) > MAX_RANGE_CHARS:
        raise InvalidRange(f"Content-Range range is longer than {MAX_RANGE_CHARS} characters")
    if _CONTROL_RE.search(rng):
        raise InvalidRange("Content-Range range may not contain control characters")
    parse_range(rng)
    return rng


def parse_patches_count(header: str) -> int:
    """Parse ``Patches: N``.

    Raises:
        InvalidOp: not a whole number from 0 to 1000.
    """
    text = header.strip(" \t")
    if not text.isascii() or not text.isdigit() or len(text) > 6 or int(text) > MAX_PATCHES:
        raise InvalidOp(
            f"Patches header must be a whole number from 0 to {MAX_PATCHES}, got {_short(header)}"
        )
    return int(text)


def _make_patch(rng: str, content: bytes, what: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Patch:
    if not content:
        return Patch(rng, DELETE)
    try:
        return Patch(rng, loads_json(content, max_bytes=max_bytes).value)
    except InvalidValue as exc:
        raise InvalidValue(f"{what}: {exc.detail}") from None


def parse_patches_body(body: bytes, count: int, max_bytes: int = DEFAULT_MAX_BYTES) -> list[Patch]:
    """Parse the body of a ``Patches: N`` PUT or PATCH into ``count`` patches.

    Each block is ``Content-Length`` and ``Content-Range: json <range>`` headers (other headers are
    ignored), a blank line, then the JSON content; lines end in CRLF or LF, and blank lines may
    separate blocks. Empty content removes what the range addresses.

    Raises:
        InvalidOp: wrong counts, missing or repeated headers, a length past the end, trailing data.
        InvalidRange: a Content-Range that is not ``json <range>``.
        InvalidValue: content that is not JSON (strict: see :func:`statebus.values.loads_json`).
        TooLarge: a patch's content over ``max_bytes`` (the node's ``max_value_bytes``).

    Example:
        >>> parse_patches_body(b'Content-Length: 1\\r\\nContent-Range: json .a\\r\\n\\r\\n2', 1)
        [Patch(range='.a', content=2)]
    """
    if not 0 <= count <= MAX_PATCHES:
        raise InvalidOp(f"Patches must be from 0 to {MAX_PATCHES}")
    patches: list[Patch] = []
    pos, size = 0, len(body)
    for i in range(1, count + 1):
        while pos < size and body[pos] in (10, 13):
            pos += 1
        if pos >= size:
            raise InvalidOp(f"Patches body ends after {i - 1} of {count} patches")
        headers, pos = _header_block(body, pos, f"patch {i}")
        raw_length = headers.get("content-length")
        if raw_length is None:
            raise InvalidOp(f"patch {i} has no Content-Length header")
        if not raw_length.isascii() or not raw_length.isdigit() or len(raw_length) > 12:
            raise InvalidOp(f"patch {i}: Content-Length must be a whole number")
        length = int(raw_length)
        if pos + length > size:
            raise InvalidOp(f"patch {i}: Content-Length {length} runs past the end of the body")
        raw_range = headers.get("content-range")
        if raw_range is None:
            raise InvalidOp(f"patch {i} has no Content-Range header")
        rng = parse_content_range(raw_range)
        patches.append(_make_patch(rng, body[pos : pos + length], f"patch {i} content", max_bytes))
        pos += length
    if body[pos:].strip(b" \t\r\n"):
        raise InvalidOp(f"Patches body holds more than the {count} patches it declares")
    return patches


def _header_block(data: bytes, pos: int, what: str) -> tuple[dict[str, str], int]:
    """Parse ``Name: value`` lines from ``pos`` to the first blank line; return them and the body start."""
    limit = min(len(data), pos + MAX_PATCH_HEADER_BYTES)
    lf = data.find(b"\n\n", pos, limit)
    crlf = data.find(b"\n\r\n", pos, limit)
    if lf < 0 and crlf < 0:
        raise InvalidOp(f"{what}: headers must end with a blank line within {MAX_PATCH_HEADER_BYTES} bytes")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        end, start = crlf, crlf + 3
    else:
        end, start = lf, lf + 2
    try:
        text = data[pos:end].decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidOp(f"{what}: headers are not UTF-8") from None
    headers: dict[str, str] = {}
    for line in text.split("\n"):
        name, sep, value = line.rstrip("\r").partition(":")
        if not sep or not _TOKEN_RE.fullmatch(name):
            raise InvalidOp(f"{what}: header line {_short(line)} is not 'Name: value'")
        lname = name.lower()
        if lname in headers:
            raise InvalidOp(f"{what}: header {name} appears twice")
        headers[lname] = value.strip(" \t")
    return headers, start


def parse_patch_request(
    body: bytes, *, content_range: str | None, patches: str | None, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[Patch] | None:
    """Read a PUT/PATCH body as braid-http's server does: None when it is a snapshot, else its patches.

    ``Patches: N`` → N blocks; else ``Content-Range`` → one patch whose content is the whole body.
    Each patch's JSON content is at most ``max_bytes``.
    """
    if patches is not None:
        return parse_patches_body(body, parse_patches_count(patches), max_bytes)
    if content_range is not None:
        return [_make_patch(parse_content_range(content_range), body, "patch content", max_bytes)]
    return None


def _status_line(status: str | int) -> bytes:
    key = str(status)
    line = _STATUS_LINES.get(key)
    if line is None:
        if not (key.isascii() and key.isdigit() and len(key) == 3):
            raise InvalidValue(f"an update status is a 3-digit code, got {_short(key)}")
        try:
            reason = HTTPStatus(int(key)).phrase
        except ValueError:
            reason = "Unknown"
        line = f"HTTP {key} {reason}\r\n".encode("ascii")
        if len(_STATUS_LINES) < 64:
            _STATUS_LINES[key] = line
    return line


def _header_value(name: str, value: str) -> bytes:
    if "\r" in value or "\n" in value or "\0" in value:
        raise InvalidValue(f"header {name} may not contain CR, LF or NUL")
    return value.encode("utf-8")


def format_update(
    version: Sequence[str] | None,
    parents: Sequence[str] | None,
    body: bytes | None = None,
    patches: Sequence[tuple[str, bytes]] | None = None,
    status: str | int | None = None,
    content_type: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> bytes:
    """One update of a 209 subscription stream, byte for byte as braid-http's server writes it.

    Args:
        version: the update's versions (omitted when empty).
        parents: the versions it follows (omitted when empty).
        body: a snapshot body; with neither body nor patches the body is empty (``Content-Length: 0``).
        patches: ``(json range, content bytes)`` pairs, written as ``Patches: N`` blocks.
        status: an optional per-update status line, e.g. ``"200"`` or ``"404"`` (a missing key).
        content_type: an optional ``Content-Type`` header for the update.
        extra_headers: more headers; values may not hold CR or LF.

    Raises:
        InvalidOp: both ``body`` and ``patches``.
        InvalidValue: a bad status, a header or range holding CR or LF.

    Example:
        >>> format_update(["v2"], ["v1"], body=b"{}", status="200")
        b'HTTP 200 OK\\r\\nVersion: "v2"\\r\\nParents: "v1"\\r\\nContent-Length: 2\\r\\n\\r\\n{}\\r\\n\\r\\n'
    """
    parts: list[bytes] = []
    if status is not None:
        parts.append(_status_line(status))
    if version:
        parts += (b"Version: ", format_version_list(version).encode("ascii"), b"\r\n")
    if parents:
        parts += (b"Parents: ", format_version_list(parents).encode("ascii"), b"\r\n")
    if content_type is not None:
        parts += (b"Content-Type: ", _header_value("Content-Type", content_type), b"\r\n")
    if extra_headers:
        for name, value in extra_headers.items():
            if not _TOKEN_RE.fullmatch(name):
                raise InvalidValue(f"header name {_short(name)} is not a token")
            parts += (name.encode("ascii"), b": ", _header_value(name, value), b"\r\n")
    if patches is not None:
        if body is not None:
            raise InvalidOp("an update carries a body or patches, not both")
        parts += (b"Patches: ", str(len(patches)).encode("ascii"), b"\r\n\r\n")
        for i, (rng, content) in enumerate(patches):
            if i:
                parts.append(b"\r\n\r\n")
            parts += (
                b"Content-Length: ",
                str(len(content)).encode("ascii"),
                b"\r\nContent-Range: json ",
                _header_value("Content-Range", rng),
                b"\r\n\r\n",
                content,
            )
    else:
        if body is None:
            body = b""
        parts += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n\r\n", body)
    parts.append(b"\r\n\r\n")
    return b"".join(parts)
