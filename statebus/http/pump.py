"""The machinery of streaming responses, kept apart because it is tuned: :class:`Pump` writes one
stream into its ASGI response with no task of its own, :class:`Heartbeats` keeps one timer for every
stream's heartbeats, and :class:`StreamRegistry` holds the open streams and the limits they share.

Rules:

1. A coroutine is driven by hand (no task) in one place only, :func:`drive`: step it, and when it
   waits, resume it from the future it waits for, as an asyncio task would. An idle stream then
   holds no suspended frame of its own, and a send that completes at once costs no task switch.
2. Nothing here changes logging at import: :func:`install_log_filter` is called at start-up (the
   lifespan of ``statebus.http.app.build_app``'s app) to silence uvicorn's error about the
   responses a pump abandons on purpose.
3. One heartbeat timer per event loop, one heap entry per stream (about 120 bytes a stream; a timer
   handle each cost about 600). An idle SSE subscriber costs about 14.8 KB of server memory in all
   (``python -m bench.idle_memory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from starlette.types import Message, Receive, Send

from statebus.bus import Change
from statebus.errors import ShuttingDown, StatebusError, SubscriberTooSlow
from statebus.runtime.streams import EventStream

SEND_POLL = 0.25
"""How often a blocked send checks whether its stream was cut off."""

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


def install_log_filter() -> None:
    """Silence uvicorn's error about the responses a pump abandons on purpose (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if ABANDONED not in logger.filters:
        logger.addFilter(ABANDONED)


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


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _coroutine(awaitable: Awaitable[Any]) -> Coroutine[Any, Any, Any]:
    return awaitable if asyncio.iscoroutine(awaitable) else _await(awaitable)


def drive(
    coro: Coroutine[Any, Any, Any],
    then: Callable[[Any], object],
    context: contextvars.Context | None = None,
) -> tuple[bool, Any]:
    """Step ``coro`` as an asyncio task would, with no task (rule 1).

    Returns ``(True, result)`` if it ended; otherwise ``(False, waiting)``, after arranging
    ``then(waiting)`` to be called (in ``context``) once what it waits for is done: ``waiting`` is
    the future it awaits (None after a bare yield: ``then(None)`` is called soon). The caller then
    drives it again.

    Raises:
        Exception: what ``coro`` raised.
    """
    try:
        waiting = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    if isinstance(waiting, asyncio.Future):
        waiting._asyncio_future_blocking = False  # taken, as a task would (or awaiting it again fails)
        waiting.add_done_callback(then, context=context)
        return False, waiting
    asyncio.get_running_loop().call_soon(then, None, context=context)
    return False, None


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
        coro = _coroutine(self._send(head))
        try:
            done, _ = drive(coro, self._resume)
        except BaseException:
            self.stream.close()
            raise
        self._registry = registry
        registry.open(self)
        self.done.add_done_callback(self._released, context=_NO_CONTEXT)
        self.stream.listen(self._on_ready)
        self._watch_receive()
        self._beat_entry = registry.heartbeats.add(self, self._last_write + interval)
        if done:
            self._step()
        else:
            self._suspended(coro)
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
            done, _ = drive(coro, self._resume)
        except Exception as exc:
            self._failed(exc)
            return
        if done:
            self._sent()
            return
        self._suspended(coro)
        if self.client is not None and self._registry is not None:
            # this message waits, and the one before may still sit in the socket's buffer
            self._registry.hold(self, len(data) + self._last_len)

    def _suspended(self, coro: Coroutine[Any, Any, Any]) -> None:
        """A send waits for the socket (:func:`drive` resumes it with :meth:`_resume`)."""
        self._pending = coro
        self._stalled_since = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_later(SEND_POLL, self._check_send)

    def _resume(self, _: object = None) -> None:
        """What the waiting send awaited is done: drive it on (only one send is pending at a time)."""
        coro = self._pending
        if coro is None:
            return  # abandoned
        try:
            done, _result = drive(coro, self._resume)
        except Exception as exc:
            self._failed(exc)
            return
        if done:
            self._sent()
            if not self._finished:
                self._step()  # what piled up while the socket was full

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
                done, value = drive(coro, self._watch_receive, _NO_CONTEXT)
            except Exception:
                self._receiving = None
            else:
                if not done:
                    self._receive_waiting = value
                    return
                self._receiving = None
                if isinstance(value, dict) and value.get("type") != "http.disconnect":
                    continue  # a request body: not ours to read
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
