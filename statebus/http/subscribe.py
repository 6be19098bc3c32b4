"""Live streams: Server-Sent Events and Braid-HTTP subscriptions, written at the ASGI level.

Each stream is one :class:`~statebus.runtime.streams.EventStream` (bounded) pumped into the response
by :class:`Pump`, which waits for the next change under a heartbeat timeout and is interrupted by the
client's ``http.disconnect`` or the server's shutdown. When several changes are ready they go out in one
``http.response.body`` message. A client that stops reading blocks the socket; its stream then fills
up and is cut off (``SubscriberTooSlow``): the pending send is abandoned and the connection closed,
so writers and other readers never wait for it and nothing is buffered without bound.

Memory per stream and per client (issue 9, defect 4): an SSE stream's starting state is read a page at
a time (``EventStream.pages``), the next page only once the previous one was sent, so a client that
does not read holds about a page. A send that waits ``StreamRegistry.stall_timeout`` on a full socket
cuts the stream, and the bytes a client's waiting sends hold, across its streams, are capped
(``StreamRegistry.hold``): past ``max_client_bytes`` its newest streams are cut. A resume further back
than the buffer gets a ``reset`` and the paged snapshot instead of a backlog (:func:`open_stream`).

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
import contextvars
import heapq
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from starlette.types import Message, Receive, Send

from statebus.bus import Change
from statebus.errors import HistoryCompacted, InvalidKey, ShuttingDown, StatebusError, SubscriberTooSlow
from statebus.http.braid import HEARTBEAT, RANGE_HEADERS, SUBSCRIPTION_HEADERS, format_version_list
from statebus.http.encode import EncodeCache, braid_update, sse_event
from statebus.http.sse import PING, encode_event, encode_reset_event
from statebus.http.value_headers import raw_value_headers, served_type
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


class Heartbeats:
    """One timer for the heartbeats of every open stream of an event loop: a heap of
    ``[due, n, pump]`` entries (about 120 bytes a stream; a timer handle each cost about 600).

    At its due time a pump sends a heartbeat if it has been silent for its interval and tells when
    to look again (:meth:`Pump._beat`); a pump that ended leaves its entry with ``None`` in it.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heap: list[list[Any]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._count = itertools.count()

    def add(self, pump: Pump, due: float) -> list[Any]:
        """Look at ``pump`` at loop time ``due``; returns its entry (set ``entry[2] = None`` to drop it)."""
        loop = pump._loop
        if loop is not self._loop:  # a new loop (an app served again): the old one's entries are moot
            if self._timer is not None:
                self._timer.cancel()
            self._loop, self._heap, self._timer = loop, [], None
        entry = [due, next(self._count), pump]
        heapq.heappush(self._heap, entry)
        if self._timer is None or due < self._timer_due:
            self._arm(due)
        return entry

    def _arm(self, due: float) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = due
        self._timer = self._loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        assert self._loop is not None
        heap = self._heap
        now = self._loop.time()
        while heap and heap[0][0] <= now + 0.001:
            entry = heapq.heappop(heap)
            pump: Pump | None = entry[2]
            if pump is None:
                continue
            try:
                due = pump._beat(now)
            except Exception as exc:  # one stream's failure must not stop the others' heartbeats
                log.error("a stream's heartbeat failed: %s", type(exc).__name__, exc_info=exc)
                due = None
            if due is not None:
                entry[0], entry[1] = due, next(self._count)
                heapq.heappush(heap, entry)
        if heap:
            self._arm(heap[0][0])

    def __len__(self) -> int:
        return len(self._heap)


class StreamRegistry:
    """The open streaming responses, so that shutdown can end them all (and their heartbeats), and
    the limits they share.

    Args:
        stall_timeout: seconds a stream may wait on a client that reads nothing before it is cut.
        max_client_bytes: bytes of unsent stream data one client (a key, else an IP) may hold across
            its streams; past it, its newest stream that holds any is cut (:meth:`hold`).
    """

    def __init__(self, *, stall_timeout: float = 60.0, max_client_bytes: int = 8 * 1024 * 1024) -> None:
        self.closing = False
        self._pumps: dict[Pump, None] = {}
        self.heartbeats = Heartbeats()
        self.stall_timeout = stall_timeout
        self.max_client_bytes = max_client_bytes
        self._held: dict[str, dict[Pump, int]] = {}
        """Per client, its streams holding unsent bytes, and how many (only while a send waits)."""

    def held(self, client: str) -> int:
        """Bytes of unsent stream data ``client`` holds now."""
        return sum(self._held.get(client, {}).values())

    def hold(self, pump: Pump, n: int) -> None:
        """Record that ``pump`` holds ``n`` unsent bytes (0: none). If its client then holds more than
        ``max_client_bytes``, cut its newest streams that hold bytes until it is within the limit."""
        client = pump.client
        if client is None:
            return
        streams = self._held.get(client)
        if n <= 0:
            if streams is not None and streams.pop(pump, None) is not None and not streams:
                del self._held[client]
            return
        if streams is None:
            streams = self._held[client] = {}
        streams[pump] = n
        total = sum(streams.values())
        if total <= self.max_client_bytes:
            return
        for victim in [p for p in reversed(self._pumps) if p in streams]:  # the newest first
            total -= streams.get(victim, 0)
            victim.cut(
                SubscriberTooSlow(
                    f"this client holds more than {self.max_client_bytes} unsent bytes across its streams; "
                    "its newest was cut off (resume from the last event id)"
                )
            )
            if total <= self.max_client_bytes:
                return

    def check_open(self) -> None:
        """Raises:
        ShuttingDown: (503) the server is shutting down.
        """
        if self.closing:
            raise ShuttingDown("the server is shutting down")

    def open(self, pump: Pump) -> None:
        """Register a stream's pump, which :meth:`close_all` stops (at once if that already ran)."""
        self._pumps[pump] = None
        if self.closing:
            pump.interrupt("stop")

    def release(self, pump: Pump) -> None:
        self._pumps.pop(pump, None)
        if isinstance(pump, Pump) and pump.client is not None:  # (peers' op streams register here too)
            self.hold(pump, 0)

    def close_all(self) -> None:
        """End every open stream (their responses complete) and refuse new ones."""
        self.closing = True
        for pump in list(self._pumps):
            pump.interrupt("stop")

    def __len__(self) -> int:
        return len(self._pumps)


def open_stream(
    node: Node,
    patterns: Sequence[Key],
    *,
    since: int | None = None,
    parents: Sequence[Version] | None = None,
    buffer: int,
    paged: bool = False,
) -> EventStream:
    """``node.events`` whose initial backlog never counts against ``buffer``; live changes may pile
    up to ``buffer`` behind it before the stream is cut off. ``paged``: the current state is read a
    page at a time as the client drains the stream (:mod:`statebus.runtime.snapshots`), so it holds
    no backlog at all.

    Raises:
        HistoryCompacted: the resume point is gone, or more than ``buffer`` changes (all patterns
            together) are missing after ``since``: a fresh, paged snapshot costs less memory then.
    """
    stream = node.events(
        list(patterns),
        since=since,
        parents=parents,
        max_buffer=UNBOUNDED,
        paged=paged,
        max_resume=buffer if since is not None else None,
    )
    if since is not None and len(stream) > buffer:
        stream.close()
        raise HistoryCompacted(f"more than {buffer} changes since cursor {since}; take a fresh snapshot")
    stream.max_buffer = (0 if stream.pages is not None else len(stream)) + buffer
    return stream


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _coroutine(awaitable: Awaitable[Any]) -> Coroutine[Any, Any, Any]:
    return awaitable if asyncio.iscoroutine(awaitable) else _await(awaitable)


_NO_CONTEXT = contextvars.Context()
"""The context of the pump's long-lived callbacks (otherwise each holds a copy of the caller's)."""


class Pump:
    """One streaming response, driven by callbacks: no task, no coroutine of its own stays suspended.

    The stream hands ready changes to :meth:`_step` (:meth:`EventStream.listen`), which encodes them
    (``EncodeCache``: once per change for all subscribers) and drives the ASGI send coroutine right
    away. That completes without suspending unless the socket is full; then it is driven on from the
    future it waits for, as a task would, and checked every ``SEND_POLL``: if the stream is cut off
    meanwhile (the subscriber stopped reading), or the send has waited the registry's
    ``stall_timeout``, the send is abandoned and the connection closed. The
    client's ``http.disconnect`` is awaited the same way: ``receive()`` driven from its future. A timer
    sends a heartbeat after ``interval`` of silence. The request's task only awaits :attr:`done`, so
    an idle stream holds no suspended frames beyond the ASGI stack's.
    """

    __slots__ = (
        "_beat_entry",
        "_encode",
        "_final",
        "_finished",
        "_gone",
        "_interval",
        "_last_len",
        "_last_write",
        "_loop",
        "_on_cut",
        "_pending",
        "_ping",
        "_receive",
        "_receive_waiting",
        "_receiving",
        "_registry",
        "_send",
        "_sending",
        "_stalled_since",
        "_timer",
        "_todo",
        "abandoned",
        "client",
        "completed",
        "done",
        "ending",
        "stream",
    )

    def __init__(self, send: Send, receive: Receive, stream: EventStream, client: str | None = None) -> None:
        self.client = client
        """Who the stream's unsent bytes are counted for (:meth:`StreamRegistry.hold`); None: nobody."""
        self._sending = 0
        self._last_len = 0
        self._stalled_since = 0.0
        self._send = send
        self._receive = receive
        self.stream = stream
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future[None] = self._loop.create_future()
        """Resolved when the response has ended (completed, abandoned, or the client left)."""
        self.ending: str | None = None
        self.completed = False
        self.abandoned = False
        self._finished = False
        self._pending: Coroutine[Any, Any, Any] | None = None
        self._final = False
        self._timer: asyncio.TimerHandle | None = None
        self._beat_entry: list[Any] | None = None
        self._last_write = 0.0
        self._interval = 0.0
        self._ping = b""
        self._encode: Callable[[list[Change]], bytes] | None = None
        self._on_cut: Callable[[StatebusError], bytes] | None = None
        self._todo = b""
        self._receiving: Coroutine[Any, Any, Any] | None = None
        self._receive_waiting: asyncio.Future[Any] | None = None
        self._gone = False
        self._registry: StreamRegistry | None = None

    def start(
        self,
        registry: StreamRegistry,
        head: Message,
        encode: Callable[[list[Change]], bytes],
        ping: bytes,
        interval: float,
        on_cut: Callable[[StatebusError], bytes],
        initial: bytes = b"",
    ) -> asyncio.Future[None]:
        """Send ``head`` (``http.response.start``), then ``initial``, then each ready batch of changes
        as one body message, a ``ping`` after ``interval`` of silence, until the client leaves, the
        server stops or the stream ends. Returns :attr:`done`, for the request's task to await.

        Raises:
            Exception: sending ``head`` failed at once (the stream is closed; nothing was sent).
        """
        self._encode, self._ping, self._interval, self._on_cut = encode, ping, interval, on_cut
        self._todo = initial
        self._last_write = self._loop.time()
        coro: Coroutine[Any, Any, Any] | None = _coroutine(self._send(head))
        assert coro is not None
        try:
            waiting = coro.send(None)
        except StopIteration:
            waiting = None
            coro = None
        except BaseException:
            self.stream.close()
            raise
        self._registry = registry
        registry.open(self)
        self.done.add_done_callback(self._released, context=_NO_CONTEXT)
        self.stream.listen(self._on_ready)
        self._watch_receive()
        self._beat_entry = registry.heartbeats.add(self, self._last_write + interval)
        if coro is not None:
            self._suspended(coro, waiting)
        else:
            self._step()
        return self.done

    def _released(self, done: asyncio.Future[None]) -> None:
        if not self._finished:  # the request's task was cancelled
            self.ending = self.ending or "cancelled"
            self._finish()
        if self._registry is not None:
            self._registry.release(self)

    def interrupt(self, why: str) -> None:
        """End the response: ``disconnect``, ``stop`` (graceful) or ``cut`` (abandon it)."""
        if self.ending is not None or self.completed or self._finished:
            return
        self.ending = why
        self.abandoned = self._pending is not None and why != "disconnect"
        if why == "stop" and not self.abandoned:
            self._write(b"", more=False)  # completes the response; finished once it is sent
        else:
            self._finish()

    # ------------------------------------------------------------------ sending

    def _on_ready(self) -> bool:
        self._step()
        return True

    def _step(self) -> None:
        """Send what is due: ``initial``, ready changes, the end of the stream; unless a send waits
        for the socket (its completion steps again)."""
        stream = self.stream
        try:
            while self._pending is None and self.ending is None and not self._finished:
                if self._todo:
                    data, self._todo = self._todo, b""
                    self._write(data)
                    continue
                batch = stream.drain_ready()
                if batch:
                    assert self._encode is not None
                    data = self._encode(batch)
                    if data:
                        self._write(data)
                    continue
                if len(stream):
                    stream.wake_on_durable()
                elif stream.closed:
                    error = stream.error
                    if error is not None and self._on_cut is not None:
                        self._write(self._on_cut(error), more=False)
                    else:
                        self._write(b"", more=False)
                return
        except Exception as exc:  # the response has started: end it, never answer twice
            log.error("a stream failed: %s", type(exc).__name__, exc_info=exc)
            if self._pending is None and not self._sending_failed(exc) and not self._finished:
                with contextlib.suppress(Exception):
                    self._write(b"", more=False)
            self.ending = self.ending or "failed"
            self._finish()

    def _write(self, data: bytes, *, more: bool = True) -> None:
        """Start sending ``data``: done at once unless the socket is full (then :attr:`_pending`)."""
        if not more:
            self._final = True
        self._sending = len(data)
        coro = _coroutine(self._send({"type": "http.response.body", "body": data, "more_body": more}))
        try:
            waiting = coro.send(None)
        except StopIteration:
            self._sent()
            return
        except Exception as exc:
            self._failed(exc)
            return
        self._suspended(coro, waiting)
        if self.client is not None and self._registry is not None:
            # this message waits, and the one before may still sit in the socket's buffer
            self._registry.hold(self, len(data) + self._last_len)

    def _suspended(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self._pending = coro
        self._stalled_since = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_later(SEND_POLL, self._check_send)
        if isinstance(waiting, asyncio.Future):
            waiting._asyncio_future_blocking = False  # taken, as a task would (or awaiting it again fails)
            waiting.add_done_callback(lambda _: self._resume(coro))
        else:
            self._loop.call_soon(self._resume, coro)

    def _resume(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self._pending is not coro:
            return  # abandoned
        try:
            waiting = coro.send(None)
        except StopIteration:
            self._sent()
            if not self._finished:
                self._step()  # what piled up while the socket was full
            return
        except Exception as exc:
            self._failed(exc)
            return
        if isinstance(waiting, asyncio.Future):
            waiting._asyncio_future_blocking = False  # taken, as a task would (or awaiting it again fails)
            waiting.add_done_callback(lambda _: self._resume(coro))
        else:
            self._loop.call_soon(self._resume, coro)

    def _sent(self) -> None:
        self._pending = None
        self._last_len = self._sending
        if self._stalled_since:  # the send had waited: the client made progress
            self._stalled_since = 0.0
            if self.client is not None and self._registry is not None:
                self._registry.hold(self, 0)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._last_write = self._loop.time()
        if self._final:
            self.completed = True
            self._finish()

    def _failed(self, exc: Exception) -> None:
        self._pending = None
        if not self._sending_failed(exc):
            log.error("a stream failed: %s", type(exc).__name__, exc_info=exc)
        self.ending = self.ending or "disconnect"
        self._finish()

    def _sending_failed(self, exc: Exception) -> bool:
        """Whether ``exc`` came from the socket (then nothing more can be sent)."""
        return self.completed or isinstance(exc, OSError) or self._gone

    def _check_send(self) -> None:
        self._timer = None
        if self._pending is None or self._finished:
            return
        if self.stream.error is not None:
            self.interrupt("cut")
        elif (
            self._registry is not None
            and self._loop.time() - self._stalled_since >= self._registry.stall_timeout
        ):
            self.cut(
                SubscriberTooSlow(
                    f"the client read nothing for {self._registry.stall_timeout:g} s; the stream was cut off"
                )
            )
        else:
            self._timer = self._loop.call_later(SEND_POLL, self._check_send)

    def cut(self, error: StatebusError) -> None:
        """Cut the stream off with ``error`` and end the response (abandoned if a send waits)."""
        self.stream.cut(error)
        if self._pending is not None:
            self.interrupt("cut")
        else:
            self._step()  # sends the reason, if the transport has an event for it, and ends

    def _beat(self, now: float) -> float | None:
        """Called by :class:`Heartbeats` when due: send a heartbeat after ``interval`` of silence.
        Returns when to look again (None: the stream has ended)."""
        if self.ending is not None or self._finished:
            return None
        due = self._last_write + self._interval
        if now >= due - 0.001:
            if self._pending is None:
                self._write(self._ping)
                if self._finished:
                    return None
            due = now + self._interval
        return due

    # ------------------------------------------------------------------ the client

    def _watch_receive(self, _: object = None) -> None:
        """Drive ``receive()`` until it says ``http.disconnect`` (no task: from the future it awaits)."""
        self._receive_waiting = None
        while not self._finished:
            coro = self._receiving
            if coro is None:
                coro = self._receiving = _coroutine(self._receive())
            try:
                waiting = coro.send(None)
            except StopIteration as stop:
                self._receiving = None
                message = stop.value
                if isinstance(message, dict) and message.get("type") != "http.disconnect":
                    continue  # a request body: not ours to read
            except Exception:
                self._receiving = None
            else:
                if isinstance(waiting, asyncio.Future):
                    waiting._asyncio_future_blocking = False
                    self._receive_waiting = waiting
                    waiting.add_done_callback(self._watch_receive, context=_NO_CONTEXT)
                else:
                    self._loop.call_soon(self._watch_receive, context=_NO_CONTEXT)
                return
            self._gone = True
            self.interrupt("disconnect")
            return

    # ------------------------------------------------------------------ the end

    def _finish(self) -> None:
        """Release everything; resolve :attr:`done` (the request's task returns, and the server
        closes the connection if the response was abandoned)."""
        if self._finished:
            return
        self._finished = True
        self.ending = self.ending or "done"
        stream = self.stream
        stream.deliver = None
        if self._pending is not None:
            self._pending.close()
            self._pending = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._beat_entry is not None:
            self._beat_entry[2] = None
            self._beat_entry = None
        stream.close()
        receiving = self._receiving
        if receiving is not None:
            self._receiving = None
            if self._receive_waiting is not None:
                self._receive_waiting.remove_done_callback(self._watch_receive)
                self._receive_waiting = None
            receiving.close()
        if self.abandoned:
            ABANDONED.expected += 1
            log.info("closing a stream whose client stopped reading (%s)", stream.error or "server shutdown")
        if not self.done.done():
            self.done.set_result(None)


class SseEncoder:
    """Turns batches of changes into SSE bytes: the initial backlog once complete, or the pages of
    the starting state as they come (``paging``), then live changes."""

    __slots__ = ("_backlog", "_last_derived", "backlog_left", "cache", "last_op_seq", "paging", "reset")

    def __init__(self, cache: EncodeCache, backlog: int, *, reset: bool, paging: bool = False) -> None:
        self.cache = cache
        self.backlog_left = backlog
        self.reset = reset
        self.paging = paging
        """Batches are pages of the starting state (``EventStream.pages``) until one ends with ``last``."""
        self._backlog: list[Change] = []
        self.last_op_seq = -1
        self._last_derived: Change | None = None

    def __call__(self, batch: list[Change]) -> bytes:
        if self.paging:
            return self._page(batch)
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

    def _page(self, page: list[Change]) -> bytes:
        """A page of the starting state: one ``snapshot`` event per key (a subtree's closing marker
        sends none), the cursor on the last event of the last page (a bare ``id:`` if it has none)."""
        sent = [c for c in page if c.exists or not is_subtree(c.key)]
        end = bool(page) and page[-1].last
        out = [sse_event(c, None, snapshot=True) for c in (sent[:-1] if end else sent)]
        if end:
            self.paging = False
            cursor = page[-1].seq
            if sent:
                out.append(sse_event(sent[-1], cursor, snapshot=True))
            else:
                out.append(f"id: {cursor}\n\n".encode("ascii"))
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


def _no_cut_event(exc: StatebusError) -> bytes:
    return b""


def sse_cut_event(exc: StatebusError) -> bytes:
    """The last event of a stream that was cut off: ``event: error`` with the reason."""
    return encode_event(json.dumps({"error": exc.code, "detail": exc.detail}), event="error")


SSE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform, no-store"),
    (b"x-accel-buffering", b"no"),
    (b"x-content-type-options", b"nosniff"),
    *((k.encode(), v.encode()) for k, v in RANGE_HEADERS),
)


def serve_sse(
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
    client: str | None = None,
) -> asyncio.Future[None]:
    """Answer a ``text/event-stream`` GET: current state (or the changes after ``since``), then live.
    The current state is read a page at a time as the client reads it. ``client`` names who the
    stream's unsent bytes count for (:meth:`StreamRegistry.hold`; None: nobody, e.g. the owner).

    Returns the future to await until the response has ended (the request's task sleeps on it: no
    coroutine of this module stays suspended per stream).
    """
    registry.check_open()
    head = [b"retry: %d\n\n" % SSE_RETRY_MS]
    reset = False
    try:
        stream = open_stream(node, patterns, since=since, buffer=buffer, paged=True)
    except HistoryCompacted as exc:
        stream = open_stream(node, patterns, buffer=buffer, paged=True)
        head.append(encode_reset_event(exc.detail))
        reset = True
    paging = stream.pages is not None
    encoder = SseEncoder(cache, 0 if paging else len(stream), reset=reset, paging=paging)
    head_message: Message = {"type": "http.response.start", "status": 200, "headers": list(SSE_HEADERS)}
    pump = Pump(send, receive, stream, client)
    return pump.start(registry, head_message, encoder, PING, ping_interval, sse_cut_event, b"".join(head))


def serve_braid(
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
    client: str | None = None,
) -> asyncio.Future[None]:
    """Answer a GET with ``Subscribe``: status 209, then Braid updates (research §2). Returns the
    future to await until the response has ended (as :func:`serve_sse`; ``client`` likewise).

    Raises (before anything is sent):
        HistoryCompacted: ``parents`` are unknown or their history was compacted (410).
        InvalidKey: a subtree (Braid subscriptions are per resource; use SSE for subtrees).
    """
    if is_subtree(key):
        raise InvalidKey("a Braid subscription names one key; subscribe to a subtree with SSE")
    registry.check_open()
    stream = open_stream(node, [key], parents=parents, buffer=buffer)
    current = node.bus.fetch_or_none(key, durable=True)
    stored_type = current.content_type if current is not None else None
    content_type = served_type(stored_type) if stored_type is not None else "application/json"
    headers: list[tuple[bytes, bytes]] = [
        *((k.encode(), v.encode()) for k, v in SUBSCRIPTION_HEADERS),
        (b"content-type", content_type.encode("latin-1")),
        *raw_value_headers(stored_type, view=True),  # data, never a document of this origin
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

    pump = Pump(send, receive, stream, client)
    head: Message = {"type": "http.response.start", "status": 209, "headers": headers}
    return pump.start(registry, head, encode, HEARTBEAT, interval, _no_cut_event)
