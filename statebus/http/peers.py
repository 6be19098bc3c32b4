"""Server-to-server endpoints: what a node serves to other nodes (followers, relays).

    GET  /.well-known/statebus/node                       {"v": 1, "pubkey": …}   (unsigned)
    GET  /.well-known/statebus/ops?pattern=P&since=N      NDJSON stream of signed ops (signed request)
    POST /.well-known/statebus/sync                       one anti-entropy round    (signed request)
    GET  /.well-known/statebus/blob/<sha256>?key=K        a blob's bytes, ranges too (signed request)
    GET  /.well-known/statebus/snapshot?pattern=P         the newest signed snapshot of P (signed request)
    GET  /.well-known/statebus/swarm/<sha256>?key=K       a blob's torrent, seeders (?pattern=P: a snapshot's)

Every request but ``node`` carries an HTTP Message Signature (RFC 9421, ``statebus.identity.httpsig``)
by the calling node's key, checked by the node's one request verifier (``AccessControl.signatures``:
authority, age, nonce store); a missing or bad signature, an old ``created`` or a replayed nonce is 401.
The caller may read a pattern only when the service says so (``PeerService.view``, the policy in
``statebus.federation.policy.PeerView``: for another namespace, its owner's replicated rules, never the
mere fact that this node follows it); otherwise 403. Every op is then checked again key by key, as of
the moment it is sent, so a grant the owner withdraws stops an open stream too.

Peers get the speed bumps clients get, from the same objects (``statebus.access.control.AccessControl``),
each refusal a JSON error that changes nothing:

* every request counts against its IP address's rate (``rate_limit_per_ip``) before anything else, so
  floods of bad signatures are throttled too, and a signed one against its key's rate
  (``rate_limit_per_client``) once verified: 429 + ``Retry-After``;
* an ops stream holds one open-subscription slot of the calling key and one of its address
  (``ip:<address>``, shared with anonymous clients), each at most ``max_subscriptions_per_client``: 429;
* a sync body is at most ``max_sync_body_bytes`` (413, before it is read past the limit); a malformed
  one is 400 with the reason;
* all peers together hold at most ``max_peer_streams`` ops streams (0: no cap). Past it a new ops
  stream, or a sync of a peer that holds no stream here, is **shed**: 503 ``shed`` with
  ``Retry-After`` and ``relays``, this node's signed list of the followers that relay it
  (``PeerService.relay_list``; ``statebus.federation.relays``). A peer reading its own namespace is
  never shed. A follower that offers to relay names its address in ``relay=`` on its ops stream;
  it is listed only when that address's host is the one its request came from.

The node's own key (the owner) is exempt from the key rate and the stream count, as on key routes.

The ops stream, one JSON object a line (``application/x-ndjson``)::

    {"op": {…canonical op, signature included…}, "seq": 41}   an op; 41 is the cursor after it
    {"live": true, "seq": 41}                                    caught up; live ops follow
    {"ping": true, "seq": 41}                                    heartbeat (every sse_ping_interval)
    {"reset": "compacted" | "cursor_ahead", "seq": 41}           resume impossible: run anti-entropy,
                                                                 then resume from seq
A blob (``statebus.blobs``) is served to a peer that may receive the ops of ``K`` (``PeerView.key``),
while ``K``'s value here points to that blob; 503 ``blob_pending`` while this node (a relay) is still
fetching it, 404 when ``K`` points elsewhere. The fetching node checks the sha256 itself.

Cursors are this node's sequence numbers (``Statebus-Node`` names the node). ``live=0`` ends the
stream after the backlog. This module does not import ``statebus.federation`` (layering): the server
passes a :class:`PeerService`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any, Protocol
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from statebus.access.control import AccessControl
from statebus.blobs import BLOB_TYPE, BlobPointer, check_hash
from statebus.config import Settings
from statebus.errors import (
    Forbidden,
    InvalidKey,
    InvalidValue,
    NotFound,
    RateLimited,
    Shed,
    StatebusError,
    TooLarge,
)
from statebus.http.blobs import serve_blob
from statebus.http.errors import statebus_error_response
from statebus.http.value_headers import FALLBACK_TYPE, NOSNIFF
from statebus.keys import is_subtree, namespace_of, parse_key
from statebus.runtime import Node
from statebus.storage.base import StoredOp
from statebus.types import Key, PubKey, Seq

log = logging.getLogger("statebus.http")

WELL_KNOWN = "/.well-known/statebus"
MAX_PATTERNS = 8
SCAN_CHUNK = 500
STREAM_RETRY_AFTER = 5.0
"""Retry-After of an ops stream refused for holding too many open streams."""
SHED_RETRY_AFTER = 10.0
"""Retry-After of a peer shed because every peer stream slot is taken (``max_peer_streams``)."""
SHED_RETRY_EMPTY = 3.0
"""The same when the relay list is empty (relays may be catching up: ask again soon)."""
JOIN_HOLD = 10.0
"""Seconds a peer's first sync holds a stream slot for it, until its stream opens."""
NDJSON = "application/x-ndjson"
MAX_OP_BYTES = 16 * 1024 * 1024 - 64 * 1024
"""The largest op the ops stream sends (``statebus.federation.sync.MAX_OP_BYTES``, which this module
may not import): a larger one would be a line no follower reads, so it is left out, logged."""
VIEW_TTL = 1.0
"""How long a stream reuses a peer's read view (the shares and follows records; ACL checks are live)."""


class PeerReadView(Protocol):
    """What one peer may read (``statebus.federation.policy.PeerView``)."""

    @property
    def filters_keys(self) -> bool:
        """Whether :meth:`key` may refuse keys inside a pattern :meth:`pattern` allows."""
        ...

    def pattern(self, pattern: Key) -> bool: ...

    def key(self, key: Key) -> bool: ...


class PeerService(Protocol):
    """What the endpoints need from federation (``statebus.federation.service.Federation``)."""

    def view(self, peer: PubKey) -> PeerReadView:
        """What node ``peer`` may read here, as of now."""
        ...

    async def answer_sync(self, peer: PubKey, body: bytes) -> bytes:
        """Answer one anti-entropy round (``statebus.federation.sync.SyncRequest`` bytes)."""
        ...

    async def blob_asked(self, pointer: BlobPointer, seeder: str) -> None:
        """Count a peer's request for the bytes of a blob; BlobSwarmed when it is hot and the peer,
        which named its swarm address ``seeder``, should fetch it over the swarm."""
        ...

    async def swarm_offer(self, pointer: BlobPointer, seeder: str, address: str | None) -> dict[str, object]:
        """The torrent of a blob and its current seeders (``statebus.federation.swarm``); ``seeder``
        is the asking node's swarm address (``host:port``, or empty), listed to later askers only
        when its host is ``address``, the request's own. NotFound when not swarmed."""
        ...

    def relay_list(self, peer: PubKey, patterns: list[Key]) -> dict[str, object]:
        """This node's signed list of the relays ``peer`` may follow for ``patterns`` instead."""
        ...

    def relay_opened(self, peer: PubKey, url: str, patterns: list[Key], stream: StreamSlot) -> None:
        """``peer`` opened an ops stream of ``patterns`` and offers to relay them at ``url``."""

    async def subtree_snapshot(self, peer: PubKey, pattern: Key) -> BlobPointer:
        """The blob of the newest signed snapshot of ``pattern`` (``statebus.federation.snapshots``),
        for ``peer``, who must be allowed to read every key it holds. NotFound when there is none."""
        ...


class StreamSlot:
    """One open ops stream: counted by ``SubscriptionCounter`` (held weakly) until ``closed``, and
    registered with the app's stream registry, whose :meth:`interrupt` (graceful shutdown) ends it.
    ``seq`` is its cursor and ``live`` whether it caught up once (how current a relay is)."""

    __slots__ = ("__weakref__", "closed", "live", "peer", "seq", "stop")

    def __init__(self, peer: PubKey = "", seq: Seq = 0) -> None:
        self.closed = False
        self.live = False
        self.peer = peer
        self.seq = seq
        self.stop = asyncio.Event()

    def interrupt(self, why: str) -> None:
        """End the stream soon (``statebus.http.pump.StreamRegistry.close_all`` calls this)."""
        self.stop.set()


def _line(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _op_line(stored: StoredOp) -> bytes:
    return b'{"op":' + stored.data + b',"seq":' + str(stored.seq).encode() + b"}\n"


def scan_patterns(node: Node, patterns: list[Key], after: Seq) -> list[StoredOp]:
    """The next stored ops after ``after`` under any of ``patterns``, merged in sequence order."""
    found: dict[Seq, StoredOp] = {}
    limit: Seq | None = None
    for p in patterns:
        chunk = node.scan(p, after, SCAN_CHUNK)
        for s in chunk:
            found[s.seq] = s
        if len(chunk) == SCAN_CHUNK:
            limit = chunk[-1].seq if limit is None else min(limit, chunk[-1].seq)
    return [found[s] for s in sorted(found) if limit is None or s <= limit]


class PeerEndpoints:
    """The handlers; one per app."""

    def __init__(self, node: Node, settings: Settings, service: PeerService, access: AccessControl) -> None:
        self.node = node
        self.settings = settings
        self.service = service
        self.access = access
        self.stopping = asyncio.Event()
        self.peer_streams: weakref.WeakSet[StreamSlot] = weakref.WeakSet()
        """Open ops streams of other nodes (``max_peer_streams`` caps them)."""
        self.sent_bytes = 0
        """Bytes of ops streams and sync answers sent to peers (the node's federation egress)."""
        self.shed = 0
        """Peer requests shed (answered 503 ``shed``)."""
        self.joining: dict[PubKey, float] = {}
        """Peers that synced but have not opened their stream yet: monotonic time their slot is held until."""

    def open_streams(self) -> list[StreamSlot]:
        """The ops streams other nodes hold open here now."""
        return [s for s in list(self.peer_streams) if not s.closed]

    def check_slots(self, peer: PubKey, patterns: list[Key], *, stream: bool) -> None:
        """Shed ``peer`` when every peer stream slot is taken: a new stream always, a sync only when
        the peer holds no stream here. A peer's first sync holds a slot for it for
        :data:`JOIN_HOLD` seconds (until its stream opens), so followers that all come at once are
        shed before they pull the backlog, not after. The node's own key and a peer reading its own
        namespace are never shed.

        Raises:
            Shed: (503) with ``Retry-After`` and this node's signed relay list.
        """
        cap = self.settings.max_peer_streams
        if cap <= 0 or peer == self.node.local or all(namespace_of(p) == peer for p in patterns):
            return
        held = self.open_streams()
        streaming = {s.peer for s in held}
        now = time.monotonic()
        self.joining = {p: t for p, t in self.joining.items() if t > now and p not in streaming}
        if not stream and (peer in streaming or peer in self.joining):
            return
        if len(held) + len(self.joining) - (peer in self.joining) < cap:
            if stream:
                self.joining.pop(peer, None)  # its slot is the stream now
            else:
                self.joining[peer] = now + JOIN_HOLD
            return
        relays = self.service.relay_list(peer, patterns)
        listed = isinstance(relays, dict) and bool(relays.get("relays"))
        raise Shed(
            f"this node serves {cap} peer streams already (max_peer_streams): follow one of the relays "
            "it lists, or retry later",
            retry_after=SHED_RETRY_AFTER if listed else SHED_RETRY_EMPTY,
            relays=relays,
        )

    def shed_response(self, exc: Shed) -> Response:
        """503 ``shed``: ``Retry-After`` and the signed relay list beside the error."""
        self.shed += 1
        body = {"error": exc.code, "detail": exc.detail, "relays": exc.relays}
        headers = {"retry-after": str(max(1, round(exc.retry_after))), "cache-control": "no-store"}
        return JSONResponse(body, status_code=503, headers=headers)

    @staticmethod
    def relay_address(text: str, address: str | None) -> str | None:
        """The relay URL a follower offered (``?relay=``), if its host is the request's own address
        (so no peer can send shed followers to a third party's host). Raises InvalidValue."""
        if len(text) > 200 or not text.startswith(("http://", "https://")):
            raise InvalidValue("relay is this node's http(s) URL")
        try:
            host = urlsplit(text).hostname
        except ValueError:
            raise InvalidValue("relay is this node's http(s) URL") from None
        return text if address is not None and host == address else None

    def close_all(self) -> None:
        """End every open ops stream (call before a graceful shutdown)."""
        self.stopping.set()

    @staticmethod
    def address(request: Request) -> str | None:
        """The remote IP address of ``request`` (None when the server does not know it)."""
        return request.client.host if request.client is not None else None

    def count_address(self, request: Request) -> str | None:
        """Count ``request`` against its address's rate; return the address. Raises RateLimited."""
        address = self.address(request)
        self.access.count_address(address)
        return address

    async def authenticate(self, request: Request, body: bytes) -> PubKey:
        """The calling node's public key, counted against its key's rate (the node's own key is
        exempt). Raises BadSignature (401) or RateLimited (429, also when the nonce store is full)."""
        peer = self.access.signatures.verify(request.scope, body)
        self.access.hit(peer, None)
        return peer

    def reserve_stream(self, peer: PubKey, address: str | None) -> list[str]:
        """The subscription-counter names an ops stream of ``peer`` from ``address`` takes a slot of.

        Raises:
            RateLimited: (429) the key or the address already holds ``max_subscriptions_per_client``
                open streams.
        """
        if peer == self.node.local:
            return []
        subs = self.access.subscriptions
        names = [(peer, f"node {peer}")]
        if address:
            names.append((f"ip:{address}", f"address {address}"))
        for name, who in names:
            if subs.count(name) >= subs.limit:
                raise RateLimited(
                    f"{who} already holds {subs.limit} open streams here (max_subscriptions_per_client); "
                    "close one first",
                    retry_after=STREAM_RETRY_AFTER,
                )
        return [name for name, _ in names]

    async def read_body(self, request: Request) -> bytes:
        """The request body, at most ``max_sync_body_bytes`` (refused before reading past it)."""
        limit = self.settings.max_sync_body_bytes
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise TooLarge(f"a sync message is at most {limit} bytes (max_sync_body_bytes)")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"a sync message is at most {limit} bytes (max_sync_body_bytes)")
            chunks.append(chunk)
        return b"".join(chunks)

    def _sync_pattern(self, body: bytes) -> list[Key]:
        """The pattern a sync message names (empty when it names none: ``answer_sync`` refuses it)."""
        try:
            pattern = json.loads(body).get("pattern")
            return [parse_key(pattern, self.node.local)] if isinstance(pattern, str) else []
        except (ValueError, AttributeError, StatebusError):
            return []

    async def node_info(self, request: Request) -> Response:
        try:
            self.count_address(request)
        except StatebusError as exc:
            return statebus_error_response(exc)
        return JSONResponse({"v": 1, "pubkey": self.node.local})

    def _patterns(self, request: Request, peer: PubKey) -> list[Key]:
        raw = request.query_params.getlist("pattern")
        if not 1 <= len(raw) <= MAX_PATTERNS:
            raise InvalidValue(f"give 1 to {MAX_PATTERNS} pattern parameters")
        out = []
        for text in raw:
            p = parse_key(text, self.node.local)
            if not is_subtree(p):
                raise InvalidValue("a pattern is a subtree: it ends in '/'")
            if not self.service.view(peer).pattern(p):
                raise Forbidden(f"node {peer} may not read {p} here")
            out.append(p)
        return out

    async def ops(self, request: Request) -> Response:
        try:
            address = self.count_address(request)
            peer = await self.authenticate(request, b"")
            patterns = self._patterns(request, peer)
            since_text = request.query_params.get("since", "0")
            if not since_text.isdigit() or len(since_text) > 16:
                raise InvalidValue("since is a cursor (a non-negative integer)")
            since = int(since_text)
            live = request.query_params.get("live", "1") != "0"
            offered = request.query_params.get("relay")
            relay = self.relay_address(offered, address) if offered is not None else None
            self.check_slots(peer, patterns, stream=True)
            slots = self.reserve_stream(peer, address)
        except Shed as exc:
            return self.shed_response(exc)
        except StatebusError as exc:
            return statebus_error_response(exc)
        headers = {"statebus-node": self.node.local, "cache-control": "no-store", "x-accel-buffering": "no"}
        registry = getattr(request.app.state, "streams", None)
        slot = StreamSlot(peer, since)
        if registry is not None:
            try:
                registry.check_open()  # 503 while shutting down
            except StatebusError as exc:
                return statebus_error_response(exc)
            registry.open(slot)  # the app's shutdown ends this stream too
        for name in slots:  # no await since reserve_stream: the counts still hold
            self.access.subscriptions.add(name, slot)
        if peer != self.node.local:
            self.peer_streams.add(slot)
            if relay is not None:
                self.service.relay_opened(peer, relay, patterns, slot)
        body = self._stream(peer, patterns, since, live, registry, slot)
        return StreamingResponse(body, media_type=NDJSON, headers=headers)

    async def _stream(
        self,
        peer: PubKey,
        patterns: list[Key],
        since: Seq,
        live: bool,
        registry: Any,
        slot: StreamSlot,
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._lines(peer, patterns, since, live, slot.stop, slot):
                self.sent_bytes += len(chunk)
                yield chunk
        finally:
            slot.closed = True
            if registry is not None:
                registry.release(slot)

    async def _lines(
        self,
        peer: PubKey,
        patterns: list[Key],
        since: Seq,
        live: bool,
        stop: asyncio.Event | None,
        slot: StreamSlot | None = None,
    ) -> AsyncIterator[bytes]:
        node = self.node
        horizon = max(node.horizon(p) for p in patterns)
        if since > node.durable_seq:
            yield _line({"reset": "cursor_ahead", "seq": node.durable_seq})
            return
        if since < horizon:
            yield _line({"reset": "compacted", "seq": node.durable_seq})
            return
        wake = asyncio.Event()

        def durable(seq: Seq) -> None:
            wake.set()

        node.on_durable.append(durable)
        cursor = since
        announced = False
        view: PeerReadView | None = None
        view_at = 0.0
        try:
            while not self.stopping.is_set() and not node.closing and not (stop and stop.is_set()):
                wake.clear()
                upto = node.durable_seq
                batch = scan_patterns(node, patterns, cursor)
                if batch:
                    cursor = batch[-1].seq
                    if view is None or time.monotonic() - view_at > VIEW_TTL:
                        view, view_at = self.service.view(peer), time.monotonic()
                    if view.filters_keys:  # the ACL decides key by key (checked as of now)
                        batch = [s for s in batch if view.key(s.key)]
                    if any(len(s.data) > MAX_OP_BYTES for s in batch):
                        for big in (s for s in batch if len(s.data) > MAX_OP_BYTES):
                            log.warning("ops stream: %s at seq %d is over the per-op cap", big.key, big.seq)
                        batch = [s for s in batch if len(s.data) <= MAX_OP_BYTES]
                    if batch:
                        yield b"".join(_op_line(s) for s in batch)
                    continue
                cursor = max(cursor, upto)  # nothing under the patterns up to here
                if not live:
                    return
                if slot is not None:
                    slot.seq, slot.live = cursor, True
                if not announced:
                    announced = True
                    yield _line({"live": True, "seq": cursor})
                try:
                    await asyncio.wait_for(self._woken(wake, stop), self.settings.sse_ping_interval)
                except TimeoutError:
                    yield _line({"ping": True, "seq": cursor})
        finally:
            if durable in node.on_durable:
                node.on_durable.remove(durable)

    async def _woken(self, wake: asyncio.Event, stop: asyncio.Event | None) -> None:
        events = [self.stopping, wake] + ([stop] if stop is not None else [])
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def pointed_blob(self, request: Request, peer: PubKey) -> BlobPointer:
        """The pointer of the blob ``<sha256>`` (path) that ``?key=`` points to now, for ``peer``, who
        must be allowed to read that key (the blob and swarm routes)."""
        digest = check_hash(request.path_params["hash"])
        raw = request.query_params.get("key", "")
        key = parse_key(raw, self.node.local) if raw else ""
        if not key or is_subtree(key):
            raise InvalidKey("name the one key that points to the blob: ?key=/<pubkey>/…")
        if not self.service.view(peer).key(key):
            raise Forbidden(f"node {peer} may not read {key} here")
        self.node.check_complete(key)
        change = self.node.fetch(key)
        if change.content_type != BLOB_TYPE or BlobPointer.decode(change.value).hash != digest:
            raise NotFound(f"{key} does not point to blob {digest} here (now)")
        return BlobPointer.decode(change.value)

    async def blob(self, request: Request) -> Response:
        """``GET /.well-known/statebus/blob/<sha256>?key=K``: the bytes of the blob ``K`` points to."""
        try:
            self.count_address(request)
            peer = await self.authenticate(request, b"")
            pointer = self.pointed_blob(request, peer)
            await self.service.blob_asked(pointer, request.query_params.get("seeder", ""))
            out = {"statebus-node": self.node.local, "accept-ranges": "bytes", NOSNIFF[0]: NOSNIFF[1]}
            return serve_blob(self.node.blobs, pointer, FALLBACK_TYPE, out, request.headers.get("range"))
        except StatebusError as exc:
            return statebus_error_response(exc)

    async def swarm(self, request: Request) -> Response:
        """``GET /.well-known/statebus/swarm/<sha256>?key=K&seeder=host:port``: the torrent of the blob
        ``K`` points to and its seeders, for a peer that may read ``K`` (as ``blob``)."""
        try:
            address = self.count_address(request)
            peer = await self.authenticate(request, b"")
            if "pattern" in request.query_params:  # the newest signed snapshot of a subtree
                pointer = await self.snapshot_pointer(request, peer)
                if pointer.hash != check_hash(request.path_params["hash"]):
                    raise NotFound(
                        f"blob {request.path_params['hash']} is not the newest snapshot here (now)"
                    )
            else:
                pointer = self.pointed_blob(request, peer)
            offer = await self.service.swarm_offer(pointer, request.query_params.get("seeder", ""), address)
        except StatebusError as exc:
            return statebus_error_response(exc)
        return JSONResponse(offer, headers={"statebus-node": self.node.local})

    async def snapshot_pointer(self, request: Request, peer: PubKey) -> BlobPointer:
        """The blob of the newest signed snapshot of ``?pattern=`` for ``peer`` (the snapshot and
        swarm routes)."""
        pattern = parse_key(request.query_params.get("pattern", ""), self.node.local)
        if not is_subtree(pattern):
            raise InvalidValue("a snapshot's pattern is a subtree: it ends in '/'")
        if not self.service.view(peer).pattern(pattern):
            raise Forbidden(f"node {peer} may not read {pattern} here")
        return await self.service.subtree_snapshot(peer, pattern)

    async def snapshot(self, request: Request) -> Response:
        """``GET /.well-known/statebus/snapshot?pattern=P``: the newest signed snapshot of the subtree
        ``P`` (``statebus.federation.subtree``), served from the blob store (ranges too); with
        ``&info=1`` only ``{"hash", "size", "type"}`` (what a swarm fetch asks for first)."""
        try:
            self.count_address(request)
            peer = await self.authenticate(request, b"")
            pointer = await self.snapshot_pointer(request, peer)
            if request.query_params.get("info") == "1":
                info = {"hash": pointer.hash, "size": pointer.size, "type": pointer.type}
                return JSONResponse(info, headers={"statebus-node": self.node.local})
            out = {"statebus-node": self.node.local, "accept-ranges": "bytes", NOSNIFF[0]: NOSNIFF[1]}
            return serve_blob(self.node.blobs, pointer, pointer.type, out, request.headers.get("range"))
        except StatebusError as exc:
            return statebus_error_response(exc)

    async def sync(self, request: Request) -> Response:
        try:
            self.count_address(request)
            body = await self.read_body(request)
            peer = await self.authenticate(request, body)
            if self.settings.max_peer_streams > 0:
                self.check_slots(peer, self._sync_pattern(body), stream=False)
            out = await self.service.answer_sync(peer, body)
        except Shed as exc:
            return self.shed_response(exc)
        except StatebusError as exc:
            return statebus_error_response(exc)
        self.sent_bytes += len(out)
        return Response(out, media_type="application/json", headers={"statebus-node": self.node.local})


def routes(node: Node, settings: Settings, service: PeerService, endpoints: PeerEndpoints) -> list[BaseRoute]:
    """The peer routes of ``endpoints``; give them to ``build_app(extra_routes=…)``. Open ops streams
    end when the app's ``state.streams`` registry closes them (graceful shutdown) or on
    ``endpoints.close_all()``."""
    ep = endpoints
    return [
        Route(f"{WELL_KNOWN}/node", ep.node_info, methods=["GET"]),
        Route(f"{WELL_KNOWN}/ops", ep.ops, methods=["GET"]),
        Route(f"{WELL_KNOWN}/sync", ep.sync, methods=["POST"]),
        Route(f"{WELL_KNOWN}/blob/{{hash}}", ep.blob, methods=["GET"]),
        Route(f"{WELL_KNOWN}/swarm/{{hash}}", ep.swarm, methods=["GET"]),
        Route(f"{WELL_KNOWN}/snapshot", ep.snapshot, methods=["GET"]),
    ]
