"""y-websocket's sync protocol on a Yjs key: ``ws://<node>/yws/<key>`` (stock Yjs providers work).

``new WebsocketProvider("ws://host:port/yws", "~/notes/doc", ydoc)`` connects to
``/yws/~/notes/doc``, the key ``/~/notes/doc`` (``/yws/<pubkey>/app/doc`` names another namespace's
key, as its HTTP path does). Frames are y-protocols messages (:mod:`statebus.http.y_protocol`).

Rules:

1. The handshake is the node websocket's (:func:`statebus.http.websocket.admit`): a foreign
   ``Origin`` is refused, the owner is who carries the login cookie, ``Authorization: Bearer`` or
   ``?token=``; a client that may not read the key, or a key that is not Yjs, is closed (1008) with
   the reason before anything is sent.
2. The connection follows the key as a stream does (its starting state, then each op, once
   durable). With the starting state the node sends sync step 1 (its document's state vector); it
   answers the client's step 1 with step 2 (what that state vector lacks of the document as of the
   last change forwarded); every later op of the key, whoever wrote it (HTTP, another provider, a
   followed node), goes out as a sync update, except the connection's own. So nothing is lost
   between the two. A missing or deleted key syncs as an empty document.
3. A sync step 2 or update from the owner is a write (``crdt`` op, the PATCH of an update); one
   from anyone else that holds items the node lacks is refused with y-protocols' permission-denied
   auth message (reason ``forbidden: …``) and changes nothing; one holding nothing new is ignored.
   A write the node refuses (too large, not a Yjs update) is answered the same way with its code.
4. Awareness messages (cursors, presence) are relayed to the other connections to the same key on
   this node, never stored nor sent to other nodes; query-awareness and auth messages from a client
   are ignored.
5. Budgets are the node websocket's: each message counts against ``ws_message_rate`` and
   ``ws_byte_rate`` (and, for anyone but the owner, the node's request rates) and is at most
   ``max_body_bytes``; over them the connection is closed (1008, 1009). The outgoing queue holds
   ``subscriber_buffer`` frames; a client that does not read is closed with 1013. A malformed
   message closes it with 1007.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Final

from pycrdt import get_state
from starlette.routing import BaseRoute, WebSocketRoute, websocket_session
from starlette.websockets import WebSocket, WebSocketDisconnect

from statebus.config import Settings
from statebus.errors import Forbidden, NotAcceptable, NotFound, RateLimited, StatebusError
from statebus.http.auth import Client, OwnerAuth, require_read, require_write
from statebus.http.encode import op_update
from statebus.http.websocket import (
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TOO_SLOW,
    admit,
    short_reason,
)
from statebus.http.ws_budget import ConnectionBudget, Rates
from statebus.http.y_protocol import (
    MESSAGE_AWARENESS,
    MESSAGE_SYNC,
    SYNC_STEP1,
    adds_structs,
    decode_message,
    permission_denied,
    sync_step1,
    sync_step2,
    sync_update,
)
from statebus.merge.yjs import EMPTY_UPDATE, diff_update
from statebus.runtime import Node
from statebus.runtime.streams import EventStream
from statebus.types import Key, Version

Y_WS_PREFIX: Final = "/yws"
CLOSE_BAD_DATA: Final = 1007


class Rooms:
    """The y-websocket connections of this node by key (awareness is relayed among them)."""

    def __init__(self) -> None:
        self.by_key: dict[Key, set[YConnection]] = {}

    def join(self, conn: YConnection) -> None:
        self.by_key.setdefault(conn.key, set()).add(conn)

    def leave(self, conn: YConnection) -> None:
        room = self.by_key.get(conn.key)
        if room is not None:
            room.discard(conn)
            if not room:
                del self.by_key[conn.key]

    def relay(self, sender: YConnection, frame: bytes) -> None:
        for other in self.by_key.get(sender.key, ()):
            if other is not sender:
                other.send(frame)


class YConnection:
    """One y-websocket client of one key."""

    def __init__(self, ws: WebSocket, node: Node, settings: Settings, client: Client, key: Key) -> None:
        self.ws = ws
        self.node = node
        self.settings = settings
        self.client = client
        self.key = key
        self.peer = "yws-" + secrets.token_hex(8)
        self.out: asyncio.Queue[bytes] = asyncio.Queue(maxsize=settings.subscriber_buffer)
        self.closed = asyncio.Event()
        self.close_code = 1000
        self.close_reason = ""
        self.budget = ConnectionBudget(Rates.of(settings), time.monotonic())
        self.version: tuple[Version, ...] = ()
        """The key's frontier after the last change the stream delivered."""
        self.ready = asyncio.Event()
        """Set once the stream's starting state arrived (and sync step 1 went out)."""

    def send(self, frame: bytes) -> None:
        if self.closed.is_set():
            return
        try:
            self.out.put_nowait(frame)
        except asyncio.QueueFull:
            self.close(CLOSE_TOO_SLOW, "the client does not read its updates")

    def close(self, code: int, reason: str = "") -> None:
        if not self.closed.is_set():
            self.close_code, self.close_reason = code, short_reason(reason)
            self.closed.set()

    def document(self) -> bytes:
        """The key's document as of the last change this connection has forwarded (its stream's
        snapshot, then each op), as one update; an empty one for a missing or deleted key. Every op
        after it reaches the client as an update, so step 2 plus the updates lose nothing."""
        if not self.version:
            return EMPTY_UPDATE
        try:
            return self.node.yjs_update(self.key, self.version, durable=False)
        except NotFound:  # deleted at that version
            return EMPTY_UPDATE

    def over_budget(self, size: int) -> str | None:
        reason = self.budget.spend(size, owner=self.client.owner, now=time.monotonic())
        if reason is None and not self.client.owner and self.client.access is not None:
            try:
                self.client.access.hit(self.client.pubkey, self.client.address)
            except RateLimited as exc:
                reason = exc.detail
        return reason

    async def writer(self) -> None:
        while True:
            await self.ws.send_bytes(await self.out.get())

    async def follow(self, stream: EventStream) -> None:
        try:
            async for change in stream:
                self.version = change.version
                if change.kind != "op":  # the starting state (delivered once it is durable)
                    self.send(sync_step1(bytes(get_state(self.document()))))
                    self.ready.set()
                    continue
                if change.peer == self.peer:
                    continue  # this connection's own write
                update = op_update(change)
                if update is not None:
                    self.send(sync_update(update))
        except StatebusError as exc:  # cut: too slow, or the key's access was taken away
            self.close(CLOSE_POLICY if isinstance(exc, Forbidden) else CLOSE_TOO_SLOW, exc.detail)
        finally:
            stream.close()

    async def reader(self, rooms: Rooms) -> None:
        limit = self.settings.max_body_bytes
        while not self.closed.is_set():
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                self.close(1000)
                return
            if message["type"] == "websocket.disconnect":
                self.close(1000)
                return
            data: bytes = message.get("bytes") or (message.get("text") or "").encode("utf-8")
            if len(data) > limit:
                self.close(CLOSE_TOO_BIG, f"a message is at most {limit} bytes")
                return
            reason = self.over_budget(len(data))
            if reason is not None:
                self.close(CLOSE_POLICY, reason)
                return
            try:
                await self.handle(data, rooms)
            except StatebusError as exc:
                if exc.status_hint >= 500:
                    self.close(1011, exc.detail)
                    return
                self.send(permission_denied(f"{exc.code}: {exc.detail}"))

    async def handle(self, data: bytes, rooms: Rooms) -> None:
        try:
            msg = decode_message(data)
        except StatebusError as exc:
            self.close(CLOSE_BAD_DATA, exc.detail)
            return
        if msg.kind == MESSAGE_AWARENESS:
            rooms.relay(self, data)
        elif msg.kind == MESSAGE_SYNC and msg.step == SYNC_STEP1:
            await self.ready.wait()  # the stream's starting state: what the document is as of
            self.send(sync_step2(diff_update(self.document(), msg.payload)))
        elif msg.kind == MESSAGE_SYNC:
            await self.write(msg.payload)

    async def write(self, update: bytes) -> None:
        if update == EMPTY_UPDATE:
            return
        if not self.client.owner:
            if not adds_structs(diff_update(update, bytes(get_state(self.document())))):
                return  # nothing the node lacks but deletions a reader may not make: nothing to refuse
            raise Forbidden("only the owner writes over y-websocket: this connection reads")
        require_write(self.client, self.key)
        await self.node.crdt_update(self.key, update, merge="yjs", peer=self.peer)

    async def run(self, rooms: Rooms) -> None:
        stream = self.client.open_events(self.node)(self.key, snapshot=True)
        tasks = [
            asyncio.create_task(self.writer()),
            asyncio.create_task(self.reader(rooms)),
            asyncio.create_task(self.follow(stream)),
        ]
        waiter = asyncio.create_task(self.closed.wait())
        rooms.join(self)
        try:
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            rooms.leave(self)
            for task in [waiter, *tasks]:
                task.cancel()
            for task in [waiter, *tasks]:
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(Exception):
                await self.ws.close(self.close_code, self.close_reason or None)


def y_key(node: Node, path: str) -> Key:
    """The key of ``/yws/<key>`` (one key: not a subtree). Raises InvalidKey."""
    return node.parse("/" + path.lstrip("/"), allow_subtree=False)


def routes(node: Node, settings: Settings, auth: OwnerAuth) -> list[BaseRoute]:
    """The y-websocket route ``/yws/<key>`` with the node websocket's auth and access rules."""
    if auth.access is None:
        raise StatebusError("the y-websocket route needs the node's access rules (OwnerAuth(access=…))")
    rooms = Rooms()

    async def endpoint(ws: WebSocket) -> None:
        client = await admit(ws, auth)
        if client is None:
            return
        try:
            key = y_key(node, ws.path_params["path"])
            require_read(client, key)
            node.check_complete(key)
            current = node.fetch_or_none(key, durable=True)
            if current is not None and current.merge != "yjs":
                raise NotAcceptable(f"{key} is a {current.merge} key, not a Yjs document")
        except StatebusError as exc:
            await ws.close(CLOSE_POLICY, short_reason(f"{exc.code}: {exc.detail}"))
            return
        await ws.accept()
        await YConnection(ws, node, settings, client, key).run(rooms)

    return [WebSocketRoute(Y_WS_PREFIX + "/{path:path}", auth.access.gate(websocket_session(endpoint)))]


__all__ = ["Y_WS_PREFIX", "YConnection", "routes"]
