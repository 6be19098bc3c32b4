"""The statebus websocket protocol (statebus 7's ``/_connect_to_statebus_/websocket``), on a Node.

One JSON object per text frame. Client → server::

    {"get": "notes/1"}                                  subscribe (until forget): current value, then changes
    {"get": "doc", "yjs": "updates", "state_vector"?: "<base64>"}   a Yjs key's updates instead of its view
    {"get": "notes/1", "proof": true}                   and each value's signature material (below)
    {"set": {"key": "notes/1", "val": {...}}, "version"?: "v2", "parents"?: ["v1"]}
    {"set": "notes/1", "patches": [[".title", "hi"], [".old"]], "version"?, "parents"?}
    {"forget": "notes/1"}                               end the subscription
    {"delete": "notes/1"}
    {"token": "<owner token>"}                          log in on this connection (statebus extension)

Server → client::

    {"set": {"key": "notes/1", "val": {...}}, "version": "v2", "parents": ["v1"]}
    {"set": {"key": "notes/1"}}                         the key does not exist (never written, or deleted)
    {"set": {"key": "doc", "yjs_update": "<base64>"}, "version", "parents"}   (a "yjs": "updates" get)
    {"set": {"key": "notes/1", "val": {...}}, "version", "parents", "proof": {...}}   (a "proof": true get)
    {"error": "<code>", "detail": "…", "key"?: "notes/1"}   a refused message (statebus extension)

**Proofs.** A ``get`` with ``"proof": true`` puts on every frame of a value (not on a missing or
deleted key's) its signature material: the same object as ``GET ?proof``'s ``proof`` and SSE's
``event: proof`` (:mod:`statebus.http.proofs`, docs/wire-protocol.md "Proofs"), so a client checks
the author's signature itself instead of trusting this node.

**Yjs.** A ``get`` with ``"yjs": "updates"`` follows a ``yjs`` key as Yjs updates (base64 of the
v1 update bytes in ``yjs_update``): the whole document first (or what ``state_vector`` lacks), then
each op's own update (:class:`statebus.http.yjs.YjsFeed`); other keys still send ``val``.

**Keys.** statebus clients name keys without a leading slash; they live in this node's namespace:
``notes/1`` ↔ ``/~/notes/1``. A key starting with ``/`` is a full node key (``/~/a``, ``/<pubkey>/a``).
Answers carry the key exactly as the client wrote it. Subtrees (``notes/``) cannot be subscribed here
(use SSE). ``current_user`` is answered locally with ``{"client": <connection id>, "owner": bool}``
and never stored.

**Auth.** Same rules as HTTP (:mod:`statebus.http.auth`): the node's login cookie, an
``Authorization: Bearer`` header, ``?token=`` in the URL, or a ``{"token": …}`` message make the
connection the owner's; anonymous connections may read ``/<ns>/public/…`` keys only. A handshake whose
``Origin`` is not one of the node's own (:mod:`statebus.http.origins`: the request's scheme and
``Host``, and ``settings.public_origins``) is refused with 403 before it is accepted, whatever it
carries; clients that send no ``Origin`` (not a browser page) are judged by their credentials alone.

**Back-pressure.** Each subscription is an event stream with the node's bounded buffer, and the
connection has a bounded outgoing queue (``subscriber_buffer`` frames): a socket that does not keep up
is closed with code 1013 (try again later). Changes made by this connection are not echoed back to it.

**Rates.** Every arriving message counts, before it is parsed or answered, against the connection's
budget (``ws_message_rate`` messages and ``ws_byte_rate`` bytes per second; the owner gets
``ws_owner_factor`` times both) and, for anyone but the owner, against the node's request rates of its
key and address. A connection over any of them is closed with 1008 (policy) and the reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import secrets
import time
from typing import Any, Final

from starlette.routing import BaseRoute, WebSocketRoute, websocket_session
from starlette.websockets import WebSocket, WebSocketDisconnect

from statebus.bus import Change
from statebus.config import Settings
from statebus.errors import (
    Forbidden,
    InvalidKey,
    InvalidOp,
    InvalidValue,
    RateLimited,
    StatebusError,
    TooLarge,
    Unauthorized,
)
from statebus.http.auth import ANONYMOUS, Client, OwnerAuth, require_read, require_write
from statebus.http.info import routes as info_routes
from statebus.http.proofs import proof_of
from statebus.http.subscribe import proof_of_change
from statebus.http.ws_budget import ConnectionBudget, Rates
from statebus.http.yjs import YjsFeed, decode_state_vector
from statebus.keys import is_subtree
from statebus.oplog import DELETE, Patch
from statebus.runtime import Node
from statebus.types import Key
from statebus.values import loads_json, parse_range

WS_PATH: Final = "/_connect_to_statebus_/websocket"
CURRENT_USER: Final = "current_user"
CLOSE_TOO_SLOW: Final = 1013
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
MAX_PATCHES: Final = 1000
MAX_REASON_BYTES: Final = 123


def node_key(node: Node, key: Any) -> Key:
    """The node key of a statebus client's key: ``a/b`` → ``/~/a/b``; ``/…`` as it is (checked)."""
    if not isinstance(key, str) or not key:
        raise InvalidKey('a key is a non-empty string, e.g. "notes/1"')
    parsed = node.parse(key if key.startswith("/") else "/~/" + key)
    if is_subtree(parsed):
        raise InvalidKey("the websocket protocol names single keys; follow a subtree with SSE")
    return parsed


def set_message(key: str, change: Change) -> dict[str, Any]:
    """The server's ``set`` frame for ``change`` of the client's ``key`` (whole values, as statebus 7)."""
    if not change.exists:
        return {"set": {"key": key}}
    if change.content_type is not None:
        return {
            "set": {"key": key},
            "error": "not_json",
            "detail": f"the value is {change.content_type} bytes",
        }
    msg: dict[str, Any] = {"set": {"key": key, "val": change.value}}
    if change.version:
        msg["version"] = change.version[0] if len(change.version) == 1 else list(change.version)
    msg["parents"] = list(change.parents)
    return msg


def yjs_feed(node: Node, msg: dict[str, Any]) -> YjsFeed | None:
    """The Yjs feed a ``get`` asks for (``"yjs": "updates"``, ``state_vector``), or None."""
    mode = msg.get("yjs")
    if mode is None:
        return None
    if mode != "updates":
        raise InvalidValue('yjs is "updates" (a Yjs key\'s updates instead of its JSON view)')
    raw = msg.get("state_vector")
    if raw is not None and not isinstance(raw, str):
        raise InvalidValue("state_vector is a base64 string")
    return YjsFeed(node, None if raw is None else decode_state_vector(raw, "state_vector"))


def wants_proof(msg: dict[str, Any]) -> bool:
    """Whether a ``get`` asks for signature material (``"proof": true``)."""
    raw = msg.get("proof", False)
    if not isinstance(raw, bool):
        raise InvalidValue("proof is true or false")
    return raw


def yjs_message(key: str, change: Change, update: bytes) -> dict[str, Any]:
    """The server's ``set`` frame of a ``yjs`` key followed as updates: ``yjs_update`` (base64)."""
    target: dict[str, Any] = {"key": key, "yjs_update": base64.b64encode(update).decode("ascii")}
    if not change.exists:
        target["deleted"] = True
    return {"set": target, "version": list(change.version), "parents": list(change.parents)}


def parse_patches(raw: Any) -> list[Patch]:
    """``[[range, value], [range]]`` (``[range]`` removes) or braid-style ``[{"range", "content"}]``
    (``content`` is JSON text; empty removes)."""
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_PATCHES:
        raise InvalidOp(f"patches is a list of 1 to {MAX_PATCHES} patches")
    out: list[Patch] = []
    for i, item in enumerate(raw, 1):
        if isinstance(item, list) and len(item) in (1, 2) and isinstance(item[0], str):
            parse_range(item[0])
            out.append(Patch(item[0], item[1] if len(item) == 2 else DELETE))
        elif (
            isinstance(item, dict)
            and isinstance(item.get("range"), str)
            and isinstance(item.get("content", ""), str)
        ):
            rng, content = item["range"], item.get("content", "")
            if rng.startswith("json "):
                rng = rng[5:]
            parse_range(rng)
            out.append(Patch(rng, loads_json(content.encode("utf-8")).value if content else DELETE))
        else:
            raise InvalidOp(f'patch {i}: write [range, value], [range] or {{"range", "content"}}')
    return out


def _key_of(msg: Any) -> Any:
    if not isinstance(msg, dict):
        return None
    for name in ("get", "forget", "delete"):
        if name in msg:
            return msg[name]
    target = msg.get("set")
    return target.get("key") if isinstance(target, dict) else target


def short_reason(text: str) -> str:
    """``text`` cut to what a close frame holds (123 bytes of UTF-8)."""
    return text.encode("utf-8")[:MAX_REASON_BYTES].decode("utf-8", "ignore")


async def admit(ws: WebSocket, auth: OwnerAuth) -> Client | None:
    """The client of a websocket handshake (see **Auth.**), or None after refusing it (closed with
    1008 before it was accepted): a foreign ``Origin``, a rate limit, a wrong ``?token=``."""
    try:
        auth.check_origin(ws)
        client = auth.authenticate(ws)
    except StatebusError as exc:
        await ws.close(CLOSE_POLICY, short_reason(exc.detail))
        return None
    token = ws.query_params.get("token")
    if token:
        if not auth.check_token(token):
            await ws.close(CLOSE_POLICY)
            return None
        client = auth.owner_client(client.address)
    return client


class Connection:
    """One websocket client: its subscriptions and its bounded outgoing queue."""

    def __init__(self, ws: WebSocket, node: Node, settings: Settings, auth: OwnerAuth) -> None:
        self.ws = ws
        self.node = node
        self.settings = settings
        self.auth = auth
        self.client: Client = ANONYMOUS
        self.peer = "ws-" + secrets.token_hex(8)
        self.out: asyncio.Queue[str] = asyncio.Queue(maxsize=settings.subscriber_buffer)
        self.subs: dict[str, asyncio.Task[None]] = {}
        self.closed = asyncio.Event()
        self.close_code = 1000
        self.close_reason = ""
        self.budget = ConnectionBudget(Rates.of(settings), time.monotonic())

    def send(self, msg: dict[str, Any]) -> None:
        if self.closed.is_set():
            return
        try:
            self.out.put_nowait(json.dumps(msg, ensure_ascii=False, separators=(",", ":")))
        except asyncio.QueueFull:
            self.close(CLOSE_TOO_SLOW)

    def close(self, code: int, reason: str = "") -> None:
        if not self.closed.is_set():
            self.close_code = code
            self.close_reason = short_reason(reason)
            self.closed.set()

    def over_budget(self, size: int) -> str | None:
        """Count an arriving message against this connection's rates and, for anyone but the owner,
        the node's request rates of its key and address (so reconnecting does not reset them)."""
        reason = self.budget.spend(size, owner=self.client.owner, now=time.monotonic())
        if reason is None and not self.client.owner and self.client.access is not None:
            try:
                app = self.client.app is not None  # an app's page counts as its address
                self.client.access.hit(None if app else self.client.pubkey, self.client.address)
            except RateLimited as exc:
                reason = exc.detail
        return reason

    def error(self, exc: StatebusError, key: Any = None) -> None:
        msg: dict[str, Any] = {"error": exc.code, "detail": exc.detail}
        if isinstance(key, str):
            msg["key"] = key
        self.send(msg)

    async def writer(self) -> None:
        while True:
            text = await self.out.get()
            await self.ws.send_text(text)

    async def reader(self) -> None:
        limit = self.settings.max_body_bytes
        while not self.closed.is_set():
            try:
                text = await self.ws.receive_text()
            except (WebSocketDisconnect, RuntimeError, KeyError):
                self.close(1000)
                return
            raw = text.encode("utf-8")
            if len(raw) > limit:
                self.error(TooLarge(f"a message is at most {limit} bytes"))
                self.close(CLOSE_TOO_BIG, f"a message is at most {limit} bytes")
                return
            reason = self.over_budget(len(raw))
            if reason is not None:
                self.close(CLOSE_POLICY, reason)
                return
            msg: Any = None
            try:
                msg = loads_json(raw, max_bytes=limit, max_depth=self.settings.max_json_depth).value
                if not isinstance(msg, dict):
                    raise InvalidValue('a message is a JSON object such as {"get": "notes/1"}')
                await self.handle(msg)
            except StatebusError as exc:
                self.error(exc, _key_of(msg))
                if isinstance(exc, Forbidden) and "token" in msg:
                    self.close(CLOSE_POLICY)

    async def handle(self, msg: dict[str, Any]) -> None:
        if "token" in msg:
            if not isinstance(msg["token"], str) or not self.auth.check_token(msg["token"]):
                raise Unauthorized("the token is not the owner token")
            self.client = self.auth.owner_client(self.client.address)
        elif "get" in msg:
            self.subscribe(msg["get"], yjs_feed(self.node, msg), wants_proof(msg))
        elif "forget" in msg:
            task = self.subs.pop(msg["forget"], None) if isinstance(msg["forget"], str) else None
            if task is not None:
                task.cancel()
        elif "delete" in msg:
            key = node_key(self.node, msg["delete"])
            require_write(self.client, key)
            self.owner_writes()
            await self.node.delete(key, peer=self.peer)
        elif "set" in msg:
            await self.write(msg)
        else:
            raise InvalidOp("a message has one of get, set, forget, delete, token")

    def owner_writes(self) -> None:
        """Ops made here are authored by the node: only the owner writes over the websocket (a signed
        client with write rights sends its own signed op over HTTP; see docs/trust-model.md)."""
        if not self.client.writes_as_owner:
            raise Forbidden(
                "only the owner (or an app's page) writes over the websocket: other clients PUT signed ops"
            )

    async def write(self, msg: dict[str, Any]) -> None:
        target = msg["set"]
        opts: dict[str, Any] = {"peer": self.peer}
        version, parents = msg.get("version"), msg.get("parents")
        if version is not None:
            if not isinstance(version, str):
                raise InvalidValue("version is a string")
            opts["version"] = version
        if parents is not None:
            if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
                raise InvalidValue("parents is a list of version strings")
            opts["parents"] = tuple(parents)
        if "patches" in msg:
            key_name = (
                target if isinstance(target, str) else target.get("key") if isinstance(target, dict) else None
            )
            key = node_key(self.node, key_name)
            require_write(self.client, key)
            self.owner_writes()
            if parents:  # stale parents are refused, as on the HTTP routes (docs/data-model.md)
                self.node.check_parents(key, opts["parents"], version)
            await self.node.patch(key, parse_patches(msg["patches"]), **opts)
            return
        if not isinstance(target, dict) or "key" not in target:
            raise InvalidOp('set is {"key": …, "val": …}')
        if target["key"] == CURRENT_USER:
            return  # statebus 7 clients announce themselves; nothing to store
        key = node_key(self.node, target["key"])
        require_write(self.client, key)
        self.owner_writes()
        if "val" not in target:
            raise InvalidOp('set needs a val (use {"delete": key} to delete)')
        if parents:
            self.node.check_parents(key, opts["parents"], version)
        await self.node.save(key, target["val"], **opts)

    def subscribe(self, name: Any, yjs: YjsFeed | None = None, proof: bool = False) -> None:
        if name == CURRENT_USER:
            self.send(
                {"set": {"key": CURRENT_USER, "val": {"client": self.peer, "owner": self.client.owner}}}
            )
            return
        key = node_key(self.node, name)
        require_read(self.client, key)
        if not is_subtree(key):
            self.node.check_complete(key)  # a key this replica cannot rebuild: an error, no value
        if name in self.subs and not self.subs[name].done():
            return
        stream = self.client.open_events(self.node)(key, snapshot=True)
        self.subs[name] = asyncio.create_task(self.follow(name, key, stream, yjs, proof))

    async def follow(
        self, name: str, key: Key, stream: Any, yjs: YjsFeed | None = None, proof: bool = False
    ) -> None:
        sent_first = False
        try:
            if len(stream) == 0 and self.node.fetch_or_none(key) is None:
                self.send({"set": {"key": name}})
                sent_first = True
            async for change in stream:
                if sent_first and change.kind == "op" and change.peer == self.peer:
                    continue
                sent_first = True
                if yjs is not None and yjs.carries(change):
                    msg = yjs_message(name, change, yjs(change))
                else:
                    msg = set_message(name, change)
                if proof and change.exists:
                    msg["proof"] = proof_of_change(functools.partial(proof_of, self.node), change)
                self.send(msg)
        except StatebusError as exc:
            self.error(exc, name)
            self.close(CLOSE_TOO_SLOW)
        finally:
            stream.close()

    async def run(self) -> None:
        client = await admit(self.ws, self.auth)
        if client is None:
            return
        self.client = client
        await self.ws.accept()
        tasks = [asyncio.create_task(self.writer()), asyncio.create_task(self.reader())]
        waiter = asyncio.create_task(self.closed.wait())
        try:
            await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in [waiter, *tasks, *self.subs.values()]:
                task.cancel()
            for task in [waiter, *tasks, *self.subs.values()]:
                with contextlib.suppress(BaseException):
                    await task
            with contextlib.suppress(Exception):
                await self.ws.close(self.close_code, self.close_reason or None)


def routes(node: Node, settings: Settings, auth: OwnerAuth) -> list[BaseRoute]:
    """The websocket route and the info route, with the app's owner check and access rules
    (``auth.access``)."""
    if auth.access is None:
        raise InvalidValue("the websocket route needs the node's access rules (OwnerAuth(access=…))")
    access = auth.access

    async def endpoint(ws: WebSocket) -> None:
        await Connection(ws, node, settings, auth).run()

    return [
        WebSocketRoute(WS_PATH, access.gate(websocket_session(endpoint))),
        *info_routes(node, auth),
    ]
