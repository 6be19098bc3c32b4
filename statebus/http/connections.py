"""The connection layer: uvicorn's HTTP protocol with timeouts, connection caps and the owner's reserve.

uvicorn closes an idle keep-alive connection only after a first response, and never times out a
request whose headers or body trickle in: connections that send nothing, or a byte now and then
(slowloris), stay open for ever. :func:`guarded_protocol` makes a subclass of uvicorn's httptools
protocol that gives every connection one deadline at a time:

    phase      starts when                            deadline           on expiry
    headers    the connection opens, or the first     header_timeout     closed
               byte of the next request arrives
    body       the headers are complete               body_timeout       closed
    app        the body is complete                   none: responses and streams (SSE, Braid,
                                                      websockets) take as long as they take
    idle       a response is complete (keep-alive)    idle_timeout       closed

Every connection is counted in a :class:`~statebus.access.connections.ConnectionTable` when it opens:
past its caps it is let in on the owner's reserve, and once the headers are in, a request on a
reserve slot that does not carry the owner token is answered 503 ``server_busy`` (or 429
``too_many_connections`` when its address holds its share) and the connection is closed; with no slot
at all the connection gets that 503 at once. A connection from a trusted proxy counts against the
client named by ``X-Forwarded-For`` (:class:`~statebus.access.proxies.TrustedProxies`) while it
carries that client's request. A websocket keeps its slot until it closes.
"""

from __future__ import annotations

import asyncio
import enum
import http
import logging
import urllib.parse
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from statebus.access.connections import Admission, ConnectionTable
from statebus.access.proxies import TrustedProxies
from statebus.http.errors import error_body

log = logging.getLogger("statebus.http.connections")

CLOCK_SLACK = 0.001
"""A timer that fires this close to its deadline (the loop's timers count whole milliseconds) ends
the phase; one that fires earlier (the deadline moved on since) is set again for the deadline."""

OwnerCheck = Callable[[Mapping[str, str], str | None], bool]
"""Whether a request carries the owner token: its headers (lowercase names, first values) and the
``token`` of its query string (the login link, a websocket URL), if it has one."""


class Phase(enum.Enum):
    HEADERS = "headers"
    BODY = "body"
    APP = "app"
    IDLE = "idle"
    WEBSOCKET = "websocket"


# The phases as plain module names: the protocol reads them a few times per request, and an
# attribute of an enum class costs several times a global's lookup.
HEADERS, BODY, APP, IDLE, WEBSOCKET = Phase.HEADERS, Phase.BODY, Phase.APP, Phase.IDLE, Phase.WEBSOCKET


@dataclass(frozen=True, slots=True)
class Refusal:
    """An error answer of the connection layer; the connection is closed after it."""

    status: int
    code: str
    detail: str

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
            (b"retry-after", b"1"),
            (b"connection", b"close"),
        ]

    @property
    def body(self) -> bytes:
        return error_body(self.code, self.detail)

    def raw(self) -> bytes:
        """The whole HTTP/1.1 response, for a connection that has no request cycle (yet)."""
        reason = http.HTTPStatus(self.status).phrase.encode()
        head = b"".join(b"%s: %s\r\n" % pair for pair in self.headers)
        return b"HTTP/1.1 %d %s\r\n%s\r\n%s" % (self.status, reason, head, self.body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As an ASGI app: the answer to any request (uvicorn closes after it: ``connection: close``)."""
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


NO_SLOT = Refusal(503, "server_busy", "the node holds as many connections as it can; try again shortly")
RESERVED = Refusal(
    503,
    "server_busy",
    "the node is busy: its remaining connections are kept for the owner; try again shortly",
)
TOO_MANY = Refusal(
    429, "too_many_connections", "this address holds as many connections as it may; close some first"
)


class ConnectionGuard:
    """What the protocols of one server share: the table, the timeouts, the proxies, the owner check.

    ``closed`` counts the connections it ended, by reason (``header_timeout``, ``body_timeout``,
    ``idle_timeout``, ``refused``, ``reserve_refused``, ``reserve_displaced``, ``too_many``).
    """

    def __init__(
        self,
        table: ConnectionTable,
        proxies: TrustedProxies,
        *,
        header_timeout: float,
        body_timeout: float,
        idle_timeout: float,
        is_owner: OwnerCheck | None,
    ) -> None:
        self.table = table
        self.proxies = proxies
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.idle_timeout = idle_timeout
        self.is_owner = is_owner
        self.closed: Counter[str] = Counter()
        self._ws_classes: dict[type[asyncio.Protocol], type[asyncio.Protocol]] = {}

    def request_refusal(
        self, conn: Hashable, peer: str | None, headers: list[tuple[bytes, bytes]], target: bytes = b""
    ) -> Refusal | None:
        """The response that refuses a request whose headers (and request ``target``, the URL as
        sent) just arrived, or None to serve it."""
        if not self.proxies.networks and not self.table.is_reserve(conn):
            return None  # the common case: no trusted proxies, an ordinary slot (nothing to check)
        owner: bool | None = None

        def owner_asks() -> bool:
            nonlocal owner
            if owner is None:
                owner = self.is_owner is not None and self.is_owner(
                    _header_map(headers), _query_token(target)
                )
            return owner

        if self.proxies.trusts(peer):
            forwarded = [v.decode("latin-1") for n, v in headers if n == b"x-forwarded-for"]
            client = self.proxies.client(peer, forwarded)
            if not self.table.attribute(conn, client) and not owner_asks():
                self.closed["too_many"] += 1
                return TOO_MANY
        if self.table.is_reserve(conn):
            if not owner_asks():
                self.closed["reserve_refused"] += 1
                return TOO_MANY if self.table.over_ip(conn) else RESERVED
            self.table.prove(conn)
        return None

    def websocket_class(self, base: type[asyncio.Protocol] | None) -> type[asyncio.Protocol] | None:
        """``base`` (uvicorn's websocket protocol) made to give its connection slot back when it closes."""
        if base is None:
            return None
        cls = self._ws_classes.get(base)
        if cls is None:
            table = self.table

            def connection_lost(proto: asyncio.Protocol, exc: Exception | None) -> None:
                transport = getattr(proto, "transport", None)
                try:
                    base.connection_lost(proto, exc)
                finally:
                    if transport is not None:
                        table.close(transport)

            cls = type(f"Guarded{base.__name__}", (base,), {"connection_lost": connection_lost})
            self._ws_classes[base] = cls
        return cls


def _query_token(target: bytes) -> str | None:
    """The one ``token`` parameter of a request target's query string, if there is exactly one."""
    _, _, query = target.partition(b"?")
    if b"token=" not in query:
        return None
    values = urllib.parse.parse_qs(query.decode("latin-1"), keep_blank_values=True).get("token", [])
    return values[0] if len(values) == 1 else None


def _header_map(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        out.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return out


def guarded_protocol(guard: ConnectionGuard) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol class, with ``guard``'s timeouts, caps and reserve."""

    class GuardedHttpProtocol(HttpToolsProtocol):
        # Slots: uvicorn's protocol holds 27 attributes in its __dict__, and past 30 CPython stops
        # sharing the keys between instances, so each connection would get a full dict (1.3 KB more)
        # and every attribute access of uvicorn's code and of this one would be slower.
        __slots__ = (
            "counted",
            "deadline",
            "peer",
            "phase",
            "proxied",
            "refusal",
            "reserve",
            "timer",
            "timer_at",
        )

        def __init__(
            self,
            config: Config,
            server_state: ServerState,
            app_state: dict[str, Any],
            _loop: asyncio.AbstractEventLoop | None = None,
        ) -> None:
            super().__init__(config, server_state, app_state, _loop)
            self.ws_protocol_class = guard.websocket_class(self.ws_protocol_class)
            self.phase = HEADERS
            self.deadline: float | None = None
            """When the current phase ends (loop time), or None: no deadline."""
            self.timer: asyncio.TimerHandle | None = None
            self.timer_at = 0.0
            self.refusal: Refusal | None = None
            self.counted = False
            self.peer: str | None = None
            self.proxied = False
            self.reserve = False
            """Let in on an owner's slot (a connection never moves from an ordinary slot to one)."""

        # -- the connection's life
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = self.peer = self.client[0] if self.client else None
            self.proxied = guard.proxies.trusts(peer)
            admission, displaced = guard.table.open(transport, peer, proxied=self.proxied)
            if isinstance(displaced, asyncio.BaseTransport):
                guard.closed["reserve_displaced"] += 1
                displaced.close()
            if admission is Admission.REFUSED:
                guard.closed["refused"] += 1
                transport.write(NO_SLOT.raw())
                transport.close()
                return
            self.counted = True
            self.reserve = admission is Admission.RESERVE
            self.arm(HEADERS, guard.header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self.stop_timer()
            if self.counted:
                guard.table.close(self.transport)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.phase is IDLE:
                self.arm(HEADERS, guard.header_timeout)  # the next request has begun
            HttpToolsProtocol.data_received(self, data)

        # -- one request
        def on_headers_complete(self) -> None:
            self.deadline = None  # (disarm)
            # only a reserve slot or a trusted proxy's connection can be refused here
            if self.reserve or self.proxied:
                self.refusal = guard.request_refusal(self.transport, self.peer, self.headers, self.url)
            else:
                self.refusal = None
            upgrade = self.parser.should_upgrade() and self._should_upgrade()
            if self.refusal is None or upgrade:
                HttpToolsProtocol.on_headers_complete(self)
            else:
                app, self.app = self.app, self.refusal
                try:
                    HttpToolsProtocol.on_headers_complete(self)
                finally:
                    self.app = app
            if not upgrade:
                self.arm(BODY, guard.body_timeout)

        def on_message_complete(self) -> None:
            HttpToolsProtocol.on_message_complete(self)
            if self.phase is not BODY:
                return
            if self.cycle.response_complete and not self.transport.is_closing():
                self.arm(IDLE, guard.idle_timeout)  # answered before the body was in
            else:
                self.deadline = None  # (disarm)
                self.phase = APP

        def on_response_complete(self) -> None:
            if self.proxied:  # (only a proxied connection counts against its request's client)
                guard.table.detach(self.transport)
            HttpToolsProtocol.on_response_complete(self)
            if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
                return  # closing, or a pipelined request started
            if self.phase is APP:  # (in BODY, the body deadline runs on: the rest is still due)
                self.arm(IDLE, guard.idle_timeout)

        def handle_websocket_upgrade(self) -> None:
            self.stop_timer()
            if self.refusal is not None:
                self.transport.write(self.refusal.raw())
                self.transport.close()
                return
            self.phase = WEBSOCKET
            self.counted = False  # the websocket protocol gives the slot back when it closes
            try:
                super().handle_websocket_upgrade()
            except BaseException:
                guard.table.close(self.transport)
                raise

        # -- the deadline: one timer per connection, moved only when a deadline comes sooner
        def arm(self, phase: Phase, seconds: float) -> None:
            self.phase = phase
            at = self.deadline = self.loop.time() + seconds
            if self.timer is None or self.timer_at > at:
                self.schedule(at)

        def disarm(self) -> None:
            self.deadline = None  # a pending timer finds no deadline and stops

        def stop_timer(self) -> None:
            self.deadline = None
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

        def schedule(self, at: float) -> None:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(at, self.tick)
            self.timer_at = at

        def tick(self) -> None:
            """The timer fired: expire the current phase if its deadline has come, else wait for it."""
            self.timer = None
            at = self.deadline
            if at is None:
                return
            if self.loop.time() + CLOCK_SLACK < at:
                self.schedule(at)  # the phase changed since the timer was set: its deadline is later
                return
            self.expire(self.phase)

        def expire(self, phase: Phase) -> None:
            self.deadline = None
            if self.phase is not phase or self.transport.is_closing():
                return
            guard.closed[f"{phase.value}_timeout"] += 1
            log.debug(
                "closing a connection from %s: no progress in its %s phase", _peer(self.client), phase.value
            )
            self.transport.close()

    return GuardedHttpProtocol


def _peer(client: tuple[str, int] | None) -> str:
    return client[0] if client else "an unknown address"
