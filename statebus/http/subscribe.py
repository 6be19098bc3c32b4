"""Live streams: Server-Sent Events and Braid-HTTP subscriptions, written at the ASGI level.

Each stream is one :class:`~statebus.runtime.streams.EventStream` (bounded) pumped into the response
by :class:`Pump`, which waits for the next change under a heartbeat timeout and is interrupted by the
client's ``http.disconnect`` or the server's shutdown. When several changes are ready they go out in one
``http.response.body`` message. A client that stops reading blocks the socket; its stream then fills
up and is cut off (``SubscriberTooSlow``): the pending send is abandoned and the connection closed,
so writers and other readers never wait for it and nothing is buffered without bound.

SSE cursors: an event's ``id`` is the node cursor (``Change.seq``) after it, sent only where resuming
from it loses nothing: on every live change, and at the end of the initial state (a subtree's
snapshot is many events and one cursor). A cursor that only ends a batch of skipped events is sent as a
bare ``id:`` line (browsers record it without dispatching an event) only when no event precedes it
in the same batch; otherwise it rides on the last event sent. A resume cursor whose history
was compacted gets a ``reset`` event, then fresh ``snapshot`` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from starlette.types import Receive, Send

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
        self._pumps: dict[Pump, None] = {}

    def check_open(self) -> None:
        """Raises:
        StatebusError: (503) the server is shutting down.
        """
        if self.closing:
            raise StatebusError("the server is shutting down", status_hint=503)

    def open(self, pump: Pump) -> None:
        """Register a stream's pump, which :meth:`close_all` stops (at once if that already ran)."""
        self._pumps[pump] = None
        if self.closing:
            pump.interrupt("stop")

    def release(self, pump: Pump) -> None:
        self._pumps.pop(pump, None)

    def close_all(self) -> None:
        """End every open stream (their responses complete) and refuse new ones."""
        self.closing = True
        for pump in list(self._pumps):
            pump.interrupt("stop")

    def __len__(self) -> int:
        return len(self._pumps)


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


async def _await(awaitable: Awaitable[None]) -> None:
    await awaitable


class Pump:
    """One streaming response body, written by the task serving the request.

    The task is interrupted (cancelled, then un-cancelled here) when the client disconnects, the
    server stops, or its stream is cut off while a send is stuck on a full socket; waiting and sending
    need no extra task per change, which keeps fan-out to many subscribers cheap.
    """

    def __init__(self, send: Send, receive: Receive, stream: EventStream) -> None:
        self._send = send
        self.stream = stream
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self.ending: str | None = None
        self._sending = False
        self._timer: asyncio.TimerHandle | None = None
        self.completed = False
        self.abandoned = False
        self._waiting = False
        self._ping_now = False
        self._last_write = self._loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._encode: Callable[[list[Change]], bytes] | None = None
        self._pending: Coroutine[Any, Any, None] | None = None
        self.disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        self.disconnected.add_done_callback(lambda _: self.interrupt("disconnect"))

    def interrupt(self, why: str) -> None:
        """End the response soon: ``disconnect``, ``stop`` (graceful) or ``cut`` (abandon it)."""
        if self.ending is None and self._task is not None and not self.completed:
            self.ending = why
            self.abandoned = (self._sending or self._pending is not None) and why != "disconnect"
            self._task.cancel()

    def _idle_tick(self, interval: float) -> None:
        """Runs every ``interval`` of silence: wakes the waiting task to send a heartbeat."""
        if self.ending is not None or self.completed:
            return
        due = self._last_write + interval
        if (
            self._loop.time() >= due - 0.001
            and self._waiting
            and not self._ping_now
            and self._pending is None
            and self._task is not None
        ):
            self._ping_now = True
            self._task.cancel()
            due = self._loop.time() + interval
        self._idle_timer = self._loop.call_at(due, self._idle_tick, interval)

    def _sending_failed(self, exc: Exception) -> bool:
        """Whether ``exc`` came from the socket (then nothing more can be sent)."""
        return self.completed or isinstance(exc, OSError) or self.disconnected.done()

    def _check_send(self) -> None:
        if not self._sending and self._pending is None:
            return
        if self.stream.error is not None:
            self.interrupt("cut")
        else:
            self._timer = self._loop.call_later(SEND_POLL, self._check_send)

    async def write(self, data: bytes, *, more: bool = True) -> None:
        """Send ``data`` (interruptible: a send stuck on a full socket is abandoned on cut-off)."""
        self._sending = True
        self._timer = self._loop.call_later(SEND_POLL, self._check_send)
        try:
            await self._send({"type": "http.response.body", "body": data, "more_body": more})
        finally:
            self._sending = False
            self._timer.cancel()
            self._timer = None  # a cancelled handle still holds its callback and arguments
            self._last_write = self._loop.time()
        if not more:
            self.completed = True

    # ------------------------------------------------------------------ the fast lane
    # While the task sleeps waiting for changes, the stream hands ready changes to _deliver, which
    # encodes them (cached: once per change for all subscribers) and drives the ASGI send coroutine
    # right away. It completes without suspending unless the socket is full; then it is driven on
    # from the future it waits for (as a task would), under the same cut-off watch as write().

    def _deliver(self) -> bool:
        if self.ending is not None or self.completed or self._encode is None:
            return False
        if self._pending is not None:
            return True  # a send is stuck on a full socket: when it completes, the rest follows
        batch = self.stream.drain_ready()
        data = self._encode(batch) if batch else b""
        if data:
            sending = self._send({"type": "http.response.body", "body": data, "more_body": True})
            self._drive(sending if asyncio.iscoroutine(sending) else _await(sending))
        return True

    def _drive(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            waiting = coro.send(None)
        except StopIteration:
            if self._pending is not None:
                self._pending = None
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
                if self._waiting:
                    self._deliver()  # what piled up while the socket was full
            self._last_write = self._loop.time()
            return
        except Exception as exc:
            self._pending = None
            if not self._sending_failed(exc):
                log.error("a stream failed: %s", type(exc).__name__, exc_info=exc)
            self.interrupt("disconnect")
            return
        if self._pending is None:
            self._pending = coro
            self._timer = self._loop.call_later(SEND_POLL, self._check_send)
        if isinstance(waiting, asyncio.Future):
            waiting.add_done_callback(lambda _: self._resume(coro))
        else:
            self._loop.call_soon(self._resume, coro)

    def _resume(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._pending is coro:
            self._drive(coro)

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
        try:
            try:
                if initial:
                    await self.write(initial)
                self._idle_timer = self._loop.call_later(interval, self._idle_tick, interval)
                self._encode = encode
                stream.deliver = self._deliver
                while True:
                    self._waiting = True
                    try:
                        first = await stream.__anext__()
                    except asyncio.CancelledError:
                        if not self._ping_now or self.ending is not None or self._task is None:
                            raise
                        self._task.uncancel()
                        self._ping_now = False
                        self._waiting = False
                        await self.write(ping)
                        continue
                    except StopAsyncIteration:
                        await self.write(b"", more=False)
                        return
                    except StatebusError as exc:
                        await self.write(on_cut(exc), more=False)
                        return
                    finally:
                        self._waiting = False
                    data = encode([first, *stream.drain_ready()])
                    if data:
                        await self.write(data)
            except asyncio.CancelledError:
                if self.ending is None or self._task is None:
                    raise
                while self._task.uncancel() > 0:
                    pass
            except Exception as exc:  # the response has started: end it, never answer twice
                log.error("a stream failed: %s", type(exc).__name__, exc_info=exc)
                if not self._sending_failed(exc):
                    with contextlib.suppress(Exception):
                        await self.write(b"", more=False)
                return
            if self.ending == "stop" and not self.abandoned:
                await self.write(b"", more=False)
            elif self.abandoned:
                ABANDONED.expected += 1
                reason = stream.error or "server shutdown"
                log.info("closing a stream whose client stopped reading (%s)", reason)
        finally:
            self.ending = self.ending or "done"
            stream.deliver = None
            if self._pending is not None:
                self._pending.close()
                self._pending = None
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            stream.close()
            self.disconnected.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.disconnected


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
        entries: list[tuple[Change | None, int | None]] = []
        for i, change in enumerate(items):
            due = change.last and (i == len(items) - 1 or items[i + 1].seq > change.seq)
            cursor = change.seq if due else None
            ident = (change.key, change.seq, change.kind)
            skip = ident in seen or (is_subtree(change.key) and not change.exists)
            seen.add(ident)
            if change.kind == "op":
                self.last_op_seq = max(self.last_op_seq, change.seq)
            if not skip:
                entries.append((change, cursor))
            elif cursor is not None:
                # A cursor due on an event that is not sent (the end marker of a subtree snapshot)
                # holds just as well for the last event sent: nothing with data lies between. Put
                # it there (clients that read ids from events see it); alone only if there is none.
                last = entries[-1] if entries else None
                if last is not None and last[0] is not None and last[1] is None:
                    entries[-1] = (last[0], cursor)
                else:
                    entries.append((None, cursor))
        out: list[bytes] = []
        for event, cursor in entries:
            if event is None:
                out.append(f"id: {cursor}\n\n".encode("ascii"))
            else:
                out.append(sse_event(event, cursor, snapshot=self.reset or event.kind != "op"))
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
    registry.check_open()
    head = [b"retry: %d\n\n" % SSE_RETRY_MS]
    reset = False
    try:
        stream = open_stream(node, patterns, since=since, buffer=buffer)
    except HistoryCompacted as exc:
        stream = open_stream(node, patterns, buffer=buffer)
        head.append(encode_reset_event(exc.detail))
        reset = True
    encoder = SseEncoder(cache, len(stream), reset=reset)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": list(SSE_HEADERS)})
    except BaseException:
        stream.close()
        raise
    pump = Pump(send, receive, stream)
    registry.open(pump)
    try:
        await pump.run(encoder, PING, ping_interval, sse_cut_event, b"".join(head))
    finally:
        registry.release(pump)


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
    registry.check_open()
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

    try:
        await send({"type": "http.response.start", "status": 209, "headers": headers})
    except BaseException:
        stream.close()
        raise
    pump = Pump(send, receive, stream)
    registry.open(pump)
    try:
        await pump.run(encode, HEARTBEAT, interval, lambda exc: b"")
    finally:
        registry.release(pump)
