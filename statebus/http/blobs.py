"""Blob values over HTTP: a large binary PUT streams into the blob store; a GET streams it back.

    PUT  /<key>  (binary, larger than ``blob_threshold_bytes``)  → the bytes go to the node's
         :class:`~statebus.blobs.BlobStore` as they arrive; the key's op holds the signed pointer
         ``{hash, size, type}`` (content type :data:`~statebus.blobs.BLOB_TYPE` inside the op)
    GET  /<key>  → the blob's bytes with the type it was written with, ``Accept-Ranges: bytes``,
         RFC 9110 ranges (:mod:`statebus.http.byte_ranges`) and the value headers
         (:mod:`statebus.http.value_headers`), read from the file a chunk at a time
    GET  /.blobs/<sha256>?key=<key>  → the same bytes, for a replica fetching a pointer's blob: served
         under the read rules of ``key``, and only while ``key``'s value points to that blob

Rules:

1. A body is never buffered whole above the threshold: the first ``blob_threshold_bytes`` are held,
   the rest streams into the store, which checks ``max_blob_bytes`` (a declared ``Content-Length``
   before any byte is read). A body that ends below the threshold is an ordinary value.
2. The blob is stored (fsynced) before its op is written: a pointer never names bytes that are not
   on disk. A blob whose op then fails is removed by the store's ``gc``.
3. A pointer whose bytes this node does not hold (a replica still fetching them) answers 503
   ``blob_pending``; no bytes that do not match the signed hash are ever served (the store only
   holds bytes under their own sha256).
4. ``?download`` adds ``Content-Disposition: attachment`` with the key's last segment as file name,
   on any value.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Final
from urllib.parse import quote

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive

from statebus.blobs import BlobInfo, BlobPointer, BlobStore
from statebus.errors import BlobPending, InvalidValue, RangeNotSatisfiable, TooLarge
from statebus.http.byte_ranges import ByteRange, content_range, parse_byte_ranges
from statebus.http.errors import error_response

BLOBS_PATH: Final = "/.blobs/"
"""The prefix of the content-addressed route ``GET /.blobs/<sha256>?key=<key>``."""
DOWNLOAD_PARAM: Final = "download"
CHUNK: Final = 256 * 1024


def declared_length(headers: Mapping[str, str]) -> int | None:
    """The request's ``Content-Length``, or None. Raises :class:`InvalidValue` when malformed."""
    declared = headers.get("content-length")
    if declared is None:
        return None
    text = declared.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 15:
        raise InvalidValue("Content-Length must be a whole number")
    return int(text)


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidValue("the client went away while sending the body")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def receive_value(
    receive: Receive, headers: Mapping[str, str], store: BlobStore, threshold: int, max_value: int
) -> bytes | BlobInfo:
    """The request body: its bytes when it is at most ``threshold`` long, else the blob it was
    stored as (rule 1).

    Raises:
        TooLarge: over ``max_blob_bytes`` (declared, or when the stream passes it), or a small body
            over ``max_value``.
        BadBlob: the body is shorter or longer than its ``Content-Length``.
    """
    declared = declared_length(headers)
    if declared is not None and declared > store.max_bytes:
        raise TooLarge(f"the value is {declared} bytes; the limit for blobs is {store.max_bytes}")
    body = _body(receive)
    head = bytearray()
    async for chunk in body:
        head += chunk
        if len(head) > threshold:
            break
    else:
        if len(head) > max_value:
            raise TooLarge(f"the value is {len(head)} bytes; the limit is {max_value}")
        return bytes(head)

    async def everything() -> AsyncIterator[bytes]:
        yield bytes(head)
        async for more in body:
            yield more

    return await store.put(everything(), size=declared)


async def _file_range(store: BlobStore, hash: str, first: int, last: int) -> AsyncIterator[bytes]:
    """Bytes ``first..last`` (inclusive) of a blob, a chunk at a time, read off the event loop."""
    f = store.open(hash)
    try:
        await asyncio.to_thread(f.seek, first)
        left = last + 1 - first
        while left > 0:
            chunk = await asyncio.to_thread(f.read, min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    finally:
        f.close()


async def _multipart(
    store: BlobStore, hash: str, ranges: list[ByteRange], size: int, ctype: str, boundary: str
) -> AsyncIterator[bytes]:
    for rng in ranges:
        head = f"--{boundary}\r\ncontent-type: {ctype}\r\ncontent-range: {content_range(rng, size)}\r\n\r\n"
        yield head.encode("latin-1")
        async for chunk in _file_range(store, hash, rng[0], rng[1]):
            yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("latin-1")


def serve_blob(
    store: BlobStore | None,
    pointer: BlobPointer,
    ctype: str,
    out: dict[str, str],
    byte_range: str | None,
) -> Response:
    """The answer carrying a blob's bytes: whole (200), one range or several (206), or 416.

    Args:
        ctype: the ``Content-Type`` to send (the pointer's type, as ``served_type`` made it safe).
        out: the headers so far (version, ETag, value headers, ``Accept-Ranges``).
        byte_range: the ``Range: bytes=…`` header to honour (None: the whole blob).

    Raises:
        BlobPending: (503) this node does not hold the bytes yet (rule 3).
    """
    if store is None or not store.has(pointer.hash):
        raise BlobPending(
            f"the bytes of this value (blob {pointer.hash}, {pointer.size} bytes) are not on this node "
            "yet; retry shortly"
        )
    size = pointer.size
    ranges: list[ByteRange] | None = None
    if byte_range is not None:
        try:
            ranges = parse_byte_ranges(byte_range, size)
        except RangeNotSatisfiable as exc:
            hdrs = [(k, v) for k, v in out.items() if k in ("version", "etag", "accept-ranges")]
            hdrs.append(("content-range", f"bytes */{size}"))
            return error_response(416, exc.code, exc.detail, hdrs)
    if ranges is None:
        out["content-length"] = str(size)
        return StreamingResponse(_file_range(store, pointer.hash, 0, size - 1), media_type=ctype, headers=out)
    if len(ranges) == 1:
        first, last = ranges[0]
        out["content-range"] = content_range(ranges[0], size)
        out["content-length"] = str(last + 1 - first)
        body = _file_range(store, pointer.hash, first, last)
        return StreamingResponse(body, status_code=206, media_type=ctype, headers=out)
    boundary = "statebus-" + secrets.token_hex(12)
    body = _multipart(store, pointer.hash, ranges, size, ctype, boundary)
    return StreamingResponse(
        body, status_code=206, media_type=f"multipart/byteranges; boundary={boundary}", headers=out
    )


def download_header(key: str) -> tuple[str, str]:
    """``Content-Disposition: attachment`` naming the key's last segment (RFC 6266, UTF-8)."""
    name = key.rstrip("/").rsplit("/", 1)[-1] or "value"
    return "content-disposition", f"attachment; filename*=UTF-8''{quote(name, safe='')}"


__all__ = [
    "BLOBS_PATH",
    "DOWNLOAD_PARAM",
    "declared_length",
    "download_header",
    "receive_value",
    "serve_blob",
]
