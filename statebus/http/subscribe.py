"""Live streams: Server-Sent Events and Braid-HTTP subscriptions, written at the ASGI level.

Each stream is one :class:`~statebus.runtime.streams.EventStream` (bounded) pumped into the response
by :class:`~statebus.http.pump.Pump`, which waits for the next change under a heartbeat timeout and
is interrupted by the client's ``http.disconnect`` or the server's shutdown. When several changes
are ready they go out in one ``http.response.body`` message. A client that stops reading blocks the
socket; its stream then fills up and is cut off (``SubscriberTooSlow``): the pending send is
abandoned and the connection closed, so writers and other readers never wait for it and nothing is
buffered without bound.

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
import json
from collections.abc import Callable, Sequence

from starlette.types import Message, Receive, Send

from statebus.bus import Change
from statebus.errors import HistoryCompacted, InvalidKey, StatebusError
from statebus.http.braid import HEARTBEAT, RANGE_HEADERS, SUBSCRIPTION_HEADERS, format_version_list
from statebus.http.encode import (
    YJS_UPDATE,
    EncodeCache,
    braid_update,
    braid_yjs_update,
    op_update,
    sse_event,
    sse_yjs_event,
)
from statebus.http.pump import Pump, StreamRegistry
from statebus.http.sse import PING, encode_event, encode_reset_event
from statebus.http.value_headers import raw_value_headers, served_type
from statebus.http.yjs import YjsFeed
from statebus.keys import is_subtree
from statebus.runtime import Node, OpenEvents
from statebus.runtime.streams import EventStream
from statebus.types import JSON, Key, Version
from statebus.values import dumps_json

SSE_RETRY_MS = 2000
DERIVED = "computed by this node (a derived key), not signed by anyone"
UNBOUNDED = 10**9


def open_stream(
    events: OpenEvents,
    patterns: Sequence[Key],
    *,
    since: int | None = None,
    parents: Sequence[Version] | None = None,
    buffer: int,
    paged: bool = False,
) -> EventStream:
    """``events(patterns, …)`` (``Node.events``, or access control's for one client) whose initial
    backlog never counts against ``buffer``; live changes may pile up to ``buffer`` behind it before
    the stream is cut off. ``paged``: the current state is read a page at a time as the client drains
    the stream (:mod:`statebus.runtime.snapshots`), so it holds no backlog at all.

    Raises:
        HistoryCompacted: the resume point is gone, or more than ``buffer`` changes (all patterns
            together) are missing after ``since``: a fresh, paged snapshot costs less memory then.
    """
    stream = events(
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


class SseEncoder:
    """Turns batches of changes into SSE bytes: the initial backlog once complete, or the pages of
    the starting state as they come (``paging``), then live changes."""

    __slots__ = (
        "_backlog",
        "_last_derived",
        "backlog_left",
        "cache",
        "last_op_seq",
        "paging",
        "reset",
        "yjs",
    )

    def __init__(
        self,
        cache: EncodeCache,
        backlog: int,
        *,
        reset: bool,
        paging: bool = False,
        yjs: YjsFeed | None = None,
    ) -> None:
        self.cache = cache
        self.yjs = yjs
        """Set on a stream of Yjs updates (``?yjs=updates``): the events of ``yjs`` keys carry them."""
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
            out.append(self._live(change))
        return b"".join(out)

    def _live(self, change: Change) -> bytes:
        if self.yjs is None or not self.yjs.carries(change):
            return self.cache.live_sse(change)
        update = op_update(change)
        if update is not None:
            return self.cache.live_sse_yjs(change, update)
        return sse_yjs_event(change, change.seq if change.last else None, self.yjs(change))

    def _event(self, change: Change, cursor: int | None, *, snapshot: bool) -> bytes:
        if self.yjs is not None and self.yjs.carries(change):
            return sse_yjs_event(change, cursor, self.yjs(change), snapshot=snapshot)
        return sse_event(change, cursor, snapshot=snapshot)

    def _page(self, page: list[Change]) -> bytes:
        """A page of the starting state: one ``snapshot`` event per key (a subtree's closing marker
        sends none), the cursor on the last event of the last page (a bare ``id:`` if it has none)."""
        sent = [c for c in page if c.exists or not is_subtree(c.key)]
        end = bool(page) and page[-1].last
        out = [self._event(c, None, snapshot=True) for c in (sent[:-1] if end else sent)]
        if end:
            self.paging = False
            cursor = page[-1].seq
            if sent:
                out.append(self._event(sent[-1], cursor, snapshot=True))
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
                out.append(self._event(event, cursor, snapshot=self.reset or event.kind != "op"))
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


def with_proofs(
    encode: Callable[[list[Change]], bytes], proof: Callable[[Change], dict[str, JSON]]
) -> Callable[[list[Change]], bytes]:
    """``encode``, followed by one ``event: proof`` per value in the batch: ``{"key", "version",
    "proof"}`` (:mod:`statebus.http.proofs`). A proof may come before the event of its value (a
    resume's backlog is sent as one block); the client matches them by key and version."""

    def encode_proving(batch: list[Change]) -> bytes:
        out = [encode(batch)]
        for change in batch:
            if change.exists and not is_subtree(change.key):
                found: JSON = proof_of_change(proof, change)
                data: dict[str, JSON] = {"key": change.key, "version": [*change.version], "proof": found}
                out.append(encode_event(dumps_json(data).decode("utf-8"), event="proof"))
        return b"".join(out)

    return encode_proving


def proof_of_change(proof: Callable[[Change], dict[str, JSON]], change: Change) -> dict[str, JSON]:
    """``proof(change)``, or the derived-key answer for a value this node computed."""
    return proof(change) if change.kind != "derived" else {"unverifiable": DERIVED}


def with_proof_header(update: bytes, found: dict[str, JSON]) -> bytes:
    """A Braid update (``HTTP 200 OK`` first) with a ``Proof: <JSON>`` header after its status line:
    the same object as SSE's ``proof`` (ASCII JSON, so it fits a header)."""
    end = update.index(b"\r\n") + 2
    header = json.dumps(found, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return b"".join((update[:end], b"Proof: ", header, b"\r\n", update[end:]))


def serve_sse(
    send: Send,
    receive: Receive,
    *,
    events: OpenEvents,
    registry: StreamRegistry,
    cache: EncodeCache,
    patterns: Sequence[Key],
    since: int | None,
    buffer: int,
    ping_interval: float,
    client: str | None = None,
    yjs: YjsFeed | None = None,
    proof: Callable[[Change], dict[str, JSON]] | None = None,
) -> asyncio.Future[None]:
    """Answer a ``text/event-stream`` GET: current state (or the changes after ``since``), then live.
    The current state is read a page at a time as the client reads it. ``client`` names who the
    stream's unsent bytes count for (:meth:`StreamRegistry.hold`; None: nobody, e.g. the owner).
    ``yjs``: the stream asked for Yjs updates (``?yjs=updates``).
    ``proof`` (``?proof``): each value's signature material follows it (:func:`with_proofs`).

    Returns the future to await until the response has ended (the request's task sleeps on it: no
    coroutine of this module stays suspended per stream).
    """
    registry.check_open()
    head = [b"retry: %d\n\n" % SSE_RETRY_MS]
    reset = False
    try:
        stream = open_stream(events, patterns, since=since, buffer=buffer, paged=True)
    except HistoryCompacted as exc:
        stream = open_stream(events, patterns, buffer=buffer, paged=True)
        head.append(encode_reset_event(exc.detail))
        reset = True
        if yjs is not None:  # the client drops what it holds: its state vector no longer applies
            yjs = YjsFeed(yjs.node)
    paging = stream.pages is not None
    encoder = SseEncoder(cache, 0 if paging else len(stream), reset=reset, paging=paging, yjs=yjs)
    head_message: Message = {"type": "http.response.start", "status": 200, "headers": list(SSE_HEADERS)}
    encode: Callable[[list[Change]], bytes] = encoder if proof is None else with_proofs(encoder, proof)
    pump = Pump(send, receive, stream, client)
    return pump.start(registry, head_message, encode, PING, ping_interval, sse_cut_event, b"".join(head))


def serve_braid(
    send: Send,
    receive: Receive,
    *,
    node: Node,
    events: OpenEvents,
    registry: StreamRegistry,
    cache: EncodeCache,
    key: Key,
    parents: Sequence[Version] | None,
    peer: str | None,
    heartbeats: tuple[float, str] | None,
    buffer: int,
    ping_interval: float,
    client: str | None = None,
    yjs: YjsFeed | None = None,
    proof: Callable[[Change], dict[str, JSON]] | None = None,
) -> asyncio.Future[None]:
    """Answer a GET with ``Subscribe``: status 209, then Braid updates (research §2). Returns the
    future to await until the response has ended (as :func:`serve_sse`; ``client`` likewise).
    ``yjs``: the subscription asked for Yjs updates (``Accept: application/vnd.yjs.update``): each
    version of a ``yjs`` key carries its update as the body.
    ``proof`` (``?proof``): each update of a value carries its signature material in a ``Proof``
    header (:func:`with_proof_header`).

    Raises (before anything is sent):
        HistoryCompacted: ``parents`` are unknown or their history was compacted (410).
        InvalidKey: a subtree (Braid subscriptions are per resource; use SSE for subtrees).
    """
    if is_subtree(key):
        raise InvalidKey("a Braid subscription names one key; subscribe to a subtree with SSE")
    registry.check_open()
    stream = open_stream(events, [key], parents=parents, buffer=buffer)
    current = node.fetch_or_none(key, durable=True)
    stored_type = current.content_type if current is not None else None
    content_type = served_type(stored_type) if stored_type is not None else "application/json"
    if yjs is not None and (current is None or current.merge == "yjs"):
        content_type = YJS_UPDATE
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
                if yjs is not None and yjs.carries(change):
                    piece = braid_yjs_update(change, yjs(change))
                else:
                    piece = braid_update(change)
            elif change.kind == "op" and peer is not None and change.peer == peer:
                continue  # the subscriber wrote this one itself
            elif yjs is not None and yjs.carries(change):
                update = op_update(change)
                if update is not None:
                    piece = cache.braid_yjs(change, update)
                else:
                    piece = braid_yjs_update(change, yjs(change))
            else:
                piece = cache.braid(change)
            if proof is not None and change.exists:
                piece = with_proof_header(piece, proof_of_change(proof, change))
            out.append(piece)
        return b"".join(out)

    pump = Pump(send, receive, stream, client)
    head: Message = {"type": "http.response.start", "status": 209, "headers": headers}
    return pump.start(registry, head, encode, HEARTBEAT, interval, _no_cut_event)
