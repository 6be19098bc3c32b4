"""The load generator's HTTP/1.1 client: asyncio protocols parsed by httptools (C), no pipelining.

* :class:`HttpConn` — one keep-alive connection, one request in flight at a time.
* :class:`SseConn` — one ``text/event-stream`` GET; it counts events, duplicates and latencies
  without decoding JSON: one regular expression over each received block finds every event's
  ``id`` and the ``"seq":N,"ts":T`` the publisher put in the value.

Both are cheap enough that one generator process drives 100,000 events/s; the generator reports its
own CPU time so a reader can tell when it, not the server, was the limit.
"""

from __future__ import annotations

import asyncio
import re
import time
from array import array
from typing import cast

import httptools

EVENT_RE = re.compile(rb'id: (\d+)\r?\ndata: [^\n]*?"seq":(\d+),"ts":([0-9.]+)')
ID_RE = re.compile(rb"(?m)^id: (\d+)\r?$")


def request_bytes(
    method: str, path: str, host: str, *, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """The bytes of one HTTP/1.1 request (keep-alive)."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("PUT", "POST", "PATCH"):
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class HttpConn(asyncio.Protocol):
    """A keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, host, port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        body = b"".join(self._body)
        self._body = []
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((status, body))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request (from :func:`request_bytes`); return (status, body)."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self._waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class SseConn(asyncio.Protocol):
    """One SSE subscription. Counts events carrying ``"seq":N,"ts":T`` (seq 0 = initial state).

    Attributes:
        seen: one byte per publisher seq; a second arrival of a seq is a duplicate.
        latencies: receive time − publish time of each event (seconds), seq 0 excluded.
        last_id: the last ``id`` (cursor) seen; ``id_regressions`` counts ids that went backwards.
    """

    def __init__(self, capacity: int, sep: bytes = b"\n\n", *, track_ids: bool = False) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._buf = b""
        self._sep = sep
        self.status = 0
        self.seen = bytearray(capacity + 1)
        self.latencies: array[float] = array("d")
        self.events = 0
        self.duplicates = 0
        self.out_of_range = 0
        self.id_regressions = 0
        self.last_id = -1
        self.first_time = 0.0
        self.last_time = 0.0
        self.raw_bytes = 0
        self.resets = 0
        self.ready = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.track_ids = track_ids
        self.watch_id: int | None = None
        self.reached = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"stream closed before its first event ({self.status})"))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.raw_bytes += len(body)
        buf = self._buf + body if self._buf else body
        end = buf.rfind(self._sep)
        if end < 0:
            self._buf = buf
            return
        cut = end + len(self._sep)
        block, self._buf = buf[:cut], buf[cut:]
        self._block(block)

    def _block(self, block: bytes) -> None:
        now = time.time()
        if not self.first_time:
            self.first_time = now
        self.last_time = now
        seen = self.seen
        lat = self.latencies
        size = len(seen)
        for ident, seq_b, ts_b in EVENT_RE.findall(block):
            seq = int(seq_b)
            ident_n = int(ident)
            if ident_n <= self.last_id:
                self.id_regressions += 1
            self.last_id = ident_n
            self.events += 1
            if seq >= size:
                self.out_of_range += 1
                continue
            if seen[seq]:
                self.duplicates += 1
                continue
            seen[seq] = 1
            if seq:
                lat.append(now - float(ts_b))
        if b"event: reset" in block:
            self.resets += 1
        if self.track_ids:
            ids = ID_RE.findall(block)
            if ids:
                self.last_id = max(self.last_id, int(ids[-1]))
            if self.watch_id is not None and self.last_id >= self.watch_id and not self.reached.done():
                self.reached.set_result(now)
        if not self.ready.done():
            self.ready.set_result(None)

    def missing(self, expected: list[int]) -> int:
        seen = self.seen
        return sum(1 for s in expected if s >= len(seen) or not seen[s])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_sse(
    host: str,
    port: int,
    path: str,
    *,
    capacity: int,
    headers: dict[str, str],
    sep: bytes = b"\n\n",
    track_ids: bool = False,
) -> SseConn:
    """Connect and send the subscription GET (does not wait for the first event)."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: SseConn(capacity, sep, track_ids=track_ids), host, port)
    assert conn.transport is not None
    conn.transport.write(
        request_bytes("GET", path, f"{host}:{port}", headers={"accept": "text/event-stream", **headers})
    )
    return conn
