"""Live streams: Server-Sent Events and Braid-HTTP subscriptions, written at the ASGI level.

Each stream is one :class:`~statebus.runtime.streams.EventStream` (bounded) pumped into the response
by :func:`pump`, which races the next change against the client's ``http.disconnect``, the server's
shutdown and a heartbeat timer. When several changes are ready they go out in one
``http.response.body`` message. A client that stops reading blocks the socket; its stream then fills
up and is cut off (``SubscriberTooSlow``): the pending send is abandoned and the connection closed,
so writers and other readers never wait for it and nothing is buffered without bound.

SSE cursors: an event's ``id`` is the node cursor (``Change.seq``) after it, sent only where resuming
from it loses nothing: on every live change, and at the end of the initial state (a subtree's
snapshot is many events and one cursor). A cursor that only ends a batch of skipped events is sent as a
bare ``id:`` line, which browsers record without dispatching an event. A resume cursor whose history
was compacted gets a ``reset`` event, then fresh ``snapshot`` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from starlette.types import Message, Receive, Send

from statebus.bus import Change
from statebus.errors import HistoryCompacted, InvalidKey, StatebusError
from statebus.http.braid import HEARTBEAT, RANGE_HEADERS, SUBSCRIPTION_HEADERS, format_version_list
from statebus.http.encode import EncodeCache, braid_update, sse_event
from statebus.http.sse import PING, encode_event, encode_reset_event
from statebus.keys import is_subtree
from statebus.runtime import Node
from statebus.runtime.streams import EventStream
from statebus.types import Key, Version

SEND_POLL = 0.25
"""How often a blocked send checks whether its stream was cut off."""
SSE_RETRY_MS = 2000
UNBOUNDED = 10**9


log = logging.getLogger("statebus.http")

_INCOMPLETE = "ASGI callable returned without completing response."


class _AbandonedResponses(logging.Filter):
    """Silences uvicorn's error about an incomplete response when we abandoned it on purpose (a
    subscriber that stopped reading was cut off while its socket was full): leaving the response
    incomplete is how an ASGI app gets the server to close such a connection."""

    def __init__(self) -> None:
        super().__init__()
        self.expected = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.expected > 0 and record.getMessage() == _INCOMPLETE:
            self.expected -= 1
            return False
        return True


ABANDONED = _AbandonedResponses()
logging.getLogger("uvicorn.error").addFilter(ABANDONED)


class StreamRegistry:
    """The open streaming responses, so that shutdown can end them all."""

    def __init__(self) -> None:
        self.closing = False
        self._stops: set[asyncio.Event] = set()

    def open(self) -> asyncio.Event:
        """Register a stream; returns the event that says "stop". Raises 503 while shutting down."""
        if self.closing:
            raise StatebusError("the server is shutting down", status_hint=503)
        stop = asyncio.Event()
        self._stops.add(stop)
        return stop

    def release(self, stop: asyncio.Event) -> None:
        self._stops.discard(stop)

    def close_all(self) -> None:
        """End every open stream (their responses complete) and refuse new ones."""
        self.closing = True
        for stop in list(self._stops):
            stop.set()

    def __len__(self) -> int:
        return len(self._stops)


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def open_stream(
    node: Node,
    patterns: Sequence[Key],
    *,
    since: int | None = None,
    parents: Sequence[Version] | None = None,
    buffer: int,
) -> EventStream:
    """``node.events`` whose initial backlog never counts against ``buffer``: the backlog is bounded
    by the bus; live changes beyond it may pile up to ``buffer`` before the stream is cut off."""
    stream = node.events(list(patterns), since=since, parents=parents, max_buffer=UNBOUNDED)
    stream.max_buffer = len(stream) + buffer
    return stream


class Pump:
    """One streaming response body: guarded sends and the main loop."""

    def __init__(self, send: Send, receive: Receive, stop: asyncio.Event, stream: EventStream) -> None:
        self._send = send
        self.stream = stream
        self.disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        self.stopped = asyncio.ensure_future(stop.wait())
        self.completed = False

    async def write(self, data: bytes, *, more: bool = True) -> bool:
        """Send ``data``; False (abandon the response) if the client left or its stream was cut off
        while the socket was full."""
        message: Message = {"type": "http.response.body", "body": data, "more_body": more}
        task = asyncio.ensure_future(self._send(message))
        while True:
            done, _ = await asyncio.wait(
                {task, self.disconnected, self.stopped},
                timeout=SEND_POLL,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if task in done:
                task.result()
                if not more:
                    self.completed = True
                return True
            if self.disconnected in done or self.stopped in done or self.stream.error is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await task
                if not self.disconnected.done():
                    ABANDONED.expected += 1
                    reason = self.stream.error or "server shutdown"
                    log.info("closing a stream whose client stopped reading (%s)", reason)
                return False

    async def finish(self, data: bytes = b"") -> None:
        if not self.completed and not self.disconnected.done():
            await self.write(data, more=False)

    async def run(
        self,
        encode: Callable[[list[Change]], bytes],
        ping: bytes,
        interval: float,
        on_cut: Callable[[StatebusError], bytes],
        initial: bytes = b"",
    ) -> None:
        """Send ``initial``, then each ready batch of changes as one body message, a ``ping`` when
        idle, until the client leaves, the server stops or the stream ends."""
        stream = self.stream
        next_task: asyncio.Future[Change] | None = None
        try:
            if initial and not await self.write(initial):
                return
            while True:
                if next_task is None:
                    next_task = asyncio.ensure_future(stream.__anext__())
                waiting: set[asyncio.Future[Any]] = {next_task, self.disconnected, self.stopped}
                done, _ = await asyncio.wait(
                    waiting,
                    timeout=interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if self.disconnected in done:
                    return
                if self.stopped in done:
                    await self.finish()
                    return
                if next_task not in done:
                    if not await self.write(ping):
                        return
                    continue
                try:
                    first = next_task.result()
                except StopAsyncIteration:
                    await self.finish()
                    return
                except StatebusError as exc:
                    await self.finish(on_cut(exc))
                    return
                next_task = None
                data = encode([first, *stream.drain_ready()])
                if data and not await self.write(data):
                    return
        finally:
            if next_task is not None:
                next_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, StatebusError):
                    await next_task
            stream.close()
            for task in (self.disconnected, self.stopped):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


class SseEncoder:
    """Turns batches of changes into SSE bytes: the initial backlog once complete, then live changes."""

    def __init__(self, cache: EncodeCache, backlog: int, *, reset: bool) -> None:
        self.cache = cache
        self.backlog_left = backlog
        self.reset = reset
        self._backlog: list[Change] = []
        self.last_op_seq = -1
        self._last_derived: Change | None = None

    def __call__(self, batch: list[Change]) -> bytes:
        out: list[bytes] = []
        for change in batch:
            if self.backlog_left > 0:
                self._backlog.append(change)
                self.backlog_left -= 1
                if self.backlog_left == 0:
                    out.append(self._flush_backlog())
                continue
            if change.kind == "op":
                if change.seq <= self.last_op_seq:
                    continue  # the same change through two overlapping patterns
                self.last_op_seq = change.seq
            elif change.kind == "derived":
                if change is self._last_derived:
                    continue
                self._last_derived = change
            out.append(self.cache.live_sse(change))
        return b"".join(out)

    def _flush_backlog(self) -> bytes:
        items = sorted(self._backlog, key=lambda c: c.seq)
        self._backlog = []
        seen: set[tuple[str, int, str]] = set()
        out: list[bytes] = []
        for i, change in enumerate(items):
            due = change.last and (i == len(items) - 1 or items[i + 1].seq > change.seq)
            cursor = change.seq if due else None
            ident = (change.key, change.seq, change.kind)
            skip = ident in seen or (is_subtree(change.key) and not change.exists)
            seen.add(ident)
            if skip:
                if cursor is not None:
                    out.append(f"id: {cursor}\n\n".encode("ascii"))
            else:
                snapshot = self.reset or change.kind != "op"
                out.append(sse_event(change, cursor, snapshot=snapshot))
            if change.kind == "op":
                self.last_op_seq = max(self.last_op_seq, change.seq)
        return b"".join(out)


def sse_cut_event(exc: StatebusError) -> bytes:
    """The last event of a stream that was cut off: ``event: error`` with the reason."""
    return encode_event(json.dumps({"error": exc.code, "detail": exc.detail}), event="error")


SSE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform, no-store"),
    (b"x-accel-buffering", b"no"),
    *((k.encode(), v.encode()) for k, v in RANGE_HEADERS),
)


async def serve_sse(
    send: Send,
    receive: Receive,
    *,
    node: Node,
    registry: StreamRegistry,
    cache: EncodeCache,
    patterns: Sequence[Key],
    since: int | None,
    buffer: int,
    ping_interval: float,
) -> None:
    """Answer a ``text/event-stream`` GET: current state (or the changes after ``since``), then live."""
    stop = registry.open()
    try:
        head = [b"retry: %d\n\n" % SSE_RETRY_MS]
        reset = False
        try:
            stream = open_stream(node, patterns, since=since, buffer=buffer)
        except HistoryCompacted as exc:
            stream = open_stream(node, patterns, buffer=buffer)
            head.append(encode_reset_event(exc.detail))
            reset = True
        encoder = SseEncoder(cache, len(stream), reset=reset)
        pump = Pump(send, receive, stop, stream)
        await send({"type": "http.response.start", "status": 200, "headers": list(SSE_HEADERS)})
        await pump.run(encoder, PING, ping_interval, sse_cut_event, b"".join(head))
    finally:
        registry.release(stop)


async def serve_braid(
    send: Send,
    receive: Receive,
    *,
    node: Node,
    registry: StreamRegistry,
    cache: EncodeCache,
    key: Key,
    parents: Sequence[Version] | None,
    peer: str | None,
    heartbeats: tuple[float, str] | None,
    buffer: int,
    ping_interval: float,
) -> None:
    """Answer a GET with ``Subscribe``: status 209, then Braid updates (research §2).

    Raises (before anything is sent):
        HistoryCompacted: ``parents`` are unknown or their history was compacted (410).
        InvalidKey: a subtree (Braid subscriptions are per resource; use SSE for subtrees).
    """
    if is_subtree(key):
        raise InvalidKey("a Braid subscription names one key; subscribe to a subtree with SSE")
    stop = registry.open()
    try:
        stream = open_stream(node, [key], parents=parents, buffer=buffer)
        current = node.bus.fetch_or_none(key)
        content_type = (current.content_type if current is not None else None) or "application/json"
        headers: list[tuple[bytes, bytes]] = [
            *((k.encode(), v.encode()) for k, v in SUBSCRIPTION_HEADERS),
            (b"content-type", content_type.encode("latin-1")),
            *((k.encode(), v.encode()) for k, v in RANGE_HEADERS),
        ]
        if current is not None and current.version:
            headers.append((b"current-version", format_version_list(current.version).encode("ascii")))
        if heartbeats is not None:
            headers.append((b"heartbeats", heartbeats[1].encode("latin-1")))
        interval = heartbeats[0] if heartbeats is not None else ping_interval
        backlog_left = len(stream)

        def encode(batch: list[Change]) -> bytes:
            nonlocal backlog_left
            out: list[bytes] = []
            for change in batch:
                if backlog_left > 0:
                    backlog_left -= 1
                    out.append(braid_update(change))
                elif change.kind == "op" and peer is not None and change.peer == peer:
                    continue  # the subscriber wrote this one itself
                else:
                    out.append(cache.braid(change))
            return b"".join(out)

        pump = Pump(send, receive, stop, stream)
        await send({"type": "http.response.start", "status": 209, "headers": headers})
        await pump.run(encode, HEARTBEAT, interval, lambda exc: b"")
    finally:
        registry.release(stop)
