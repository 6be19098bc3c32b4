"""Federation of one node: its DHT presence, the peer endpoints' policy, and its followers.

    fed = Federation(node, identity, settings, directory=dht)   # dht: a started Directory, or None
    await fed.start(["http://127.0.0.1:8000"])                   # publish where we are; start following
    ...
    await fed.stop()

The owner follows by writing ``/~/.follows/<id>`` (``statebus follow``, or the web page); the
federation watches that subtree and starts or stops :class:`~statebus.federation.follow.Follower`\\ s.
It implements ``statebus.http.peers.PeerService`` for the server-to-server endpoints, and keeps the
book of the followers that offered to relay (``statebus.federation.relays``): when the node's peer
stream slots are full, the endpoints shed new followers to them with :meth:`Federation.relay_list`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence

from statebus.access.op_gate import OpGate
from statebus.blobs import BLOB_TYPE, BlobInfo, BlobPointer
from statebus.blobs.store import check_hash
from statebus.bus import Change, Subscription
from statebus.config import Settings
from statebus.errors import (
    BlobSwarmed,
    Forbidden,
    InvalidKey,
    InvalidOp,
    InvalidValue,
    NotFound,
    StatebusError,
)
from statebus.federation.blobs import BlobFetcher
from statebus.federation.client import PeerClient
from statebus.federation.courier import NoticeCourier, QueueLimits
from statebus.federation.dht import Directory
from statebus.federation.follow import Backoff, FollowClient, FollowContext, Follower, IngestHook
from statebus.federation.ingest import Ingest
from statebus.federation.opset import OpSet, narrowed, op_set
from statebus.federation.policy import FOLLOWS, Follow, PeerView, ReadCheck, follows
from statebus.federation.relays import HEAD_WINDOW, META, RelayBook, StreamState, make_list
from statebus.federation.snapshots import SnapshotKeeper
from statebus.federation.swarm import SwarmPlane
from statebus.federation.sync import SyncRequest, answer
from statebus.identity import Identity
from statebus.keys import namespace_of, segments
from statebus.keys.paths import is_subtree, key_matches, parse_key
from statebus.oplog import decode_op
from statebus.runtime import Node
from statebus.swarm.session import Progress
from statebus.types import Key, PubKey, Version

log = logging.getLogger("statebus.federation")

RESOLVE_TIMEOUT = 5.0


def as_url(addr: str) -> str:
    """A DHT address as a base URL (``host:port`` → ``http://host:port``)."""
    return addr if addr.startswith(("http://", "https://")) else f"http://{addr}"


class Federation:
    """Everything one node does with other nodes.

    Args:
        node: the node.
        identity: the node's key (signs requests; the DHT record is signed by the directory).
        settings: ``quota_bytes_per_remote_namespace`` is read from here.
        directory: a started DHT directory, or None (then only ``via`` and known addresses are used).
        backoff_base, backoff_cap: reconnect delays in seconds (exponential, with jitter).
        access: the node's access rules (the one ``AccessControl`` the composition root made):
            what a peer may read of this node's namespace besides what the owner shared.
        gate: the node's one gate for remote ops (``AccessControl.op_gate``), so federation and the
            signed-op HTTP route share one quota counter; None makes one for this federation.
        client: how to call other nodes (default: a :class:`PeerClient` signing as ``identity``).
    """

    def __init__(
        self,
        node: Node,
        identity: Identity,
        settings: Settings,
        *,
        directory: Directory | None = None,
        backoff_base: float = 0.25,
        backoff_cap: float = 30.0,
        read_timeout: float | None = None,
        access: ReadCheck | None = None,
        gate: OpGate | None = None,
        client: FollowClient | None = None,
    ) -> None:
        if identity.pubkey != node.local:
            raise Forbidden("the federation identity must be the node's own key")
        self.node = node
        self.identity = identity
        self.settings = settings
        self.directory = directory
        self.access = access
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        if gate is None:
            gate = OpGate.for_node(node, settings.quota_bytes_per_remote_namespace)
        self.ingest = Ingest(node, gate, self.is_followed, clock_leeway=settings.max_clock_skew)
        timeout = read_timeout if read_timeout is not None else max(10.0, 3 * settings.sse_ping_interval)
        self._own_client = PeerClient(identity, read_timeout=timeout)
        self.client: FollowClient = client if client is not None else self._own_client
        self.known: dict[PubKey, list[str]] = {}
        self.urls: tuple[str, ...] = ()
        self.followers: dict[str, Follower] = {}
        self.on_ingest: list[IngestHook] = []
        self.swarm = (
            SwarmPlane(settings, blobs=node.blobs, directory=directory)
            if settings.swarm
            and node.blobs is not None
            and not node.blobs.sealed  # no plaintext files to seed
            else None
        )
        """The node's swarm (setting ``swarm``): blobs of ``swarm_min_bytes`` or more move over it."""
        self.blobs = BlobFetcher(node, self._own_client, swarm=self.swarm) if node.blobs is not None else None
        """Fetches the bytes of blob pointers followers take (None: the node stores no blobs)."""
        self.snapshots = SnapshotKeeper(
            node, identity, keep=settings.snapshot_keep, interval=settings.snapshot_interval
        )
        """The signed subtree snapshots this node keeps: its own, and those it installed."""
        node.blob_roots.append(self.snapshots.hashes)
        self.context = FollowContext(
            node,
            self.client,
            self.ingest,
            self.locate,
            Backoff(backoff_base, backoff_cap),
            self.on_ingest,
            self.blobs,
            snapshots=self.snapshots,
        )
        """What each follower sees of this federation."""
        self.courier = NoticeCourier(
            identity,
            self._own_client,
            self.addresses,
            node,
            QueueLimits(
                settings.notice_queue_max,
                settings.notice_queue_bytes,
                settings.notice_expiry,
                settings.notice_retry_max,
            ),
            backoff_base=backoff_base,
        )
        """Delivers hosted apps' notices to other namespaces' nodes (``send`` grants)."""
        self._followed: set[PubKey] = set()
        self._watch: Subscription | None = None
        self._reconcile_lock = asyncio.Lock()
        self._pending: asyncio.Task[None] | None = None
        self._dirty = False
        self._opsets: dict[Key, tuple[int, OpSet]] = {}
        self.relays = RelayBook()
        """The followers streaming from this node that offered to relay (shedding, setting relay)."""
        self.started = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self, urls: Sequence[str] = ()) -> None:
        """Start following what the owner follows, then publish ``urls`` in the DHT (if any)."""
        self.urls = tuple(urls)
        self.started = True
        self.context.own_urls = self.urls
        if self.settings.relay and self.urls:
            self._own_client.relay_url = self.urls[0]  # our follow streams offer to relay
        if self.swarm is not None:
            await self.swarm.start()
        if self.blobs is not None:
            self.blobs.start()
        prefix = f"/{self.node.local}/{FOLLOWS}/"
        self._watch = self.node.observe(prefix, self._follows_changed, snapshot=False)
        await self.reconcile()  # followers first: a restart reconnects while the record is published
        await self.courier.start()  # the notices an earlier run left waiting
        if self.directory is not None and self.urls:
            try:
                await self.directory.publish(list(self.urls))
            except BaseException:
                await self.stop()
                raise

    async def stop(self) -> None:
        """Stop every follower (their state is stored) and close the HTTP client."""
        self.started = False
        if self._watch is not None:
            self._watch.close("federation stopping")
        if self._pending is not None:
            await asyncio.gather(self._pending, return_exceptions=True)
        for follower in list(self.followers.values()):
            await follower.stop()
        self.followers.clear()
        if self.blobs is not None:
            await self.blobs.stop()
        await self.snapshots.aclose()
        if self.swarm is not None:
            await self.swarm.stop()
        await self.courier.aclose()
        await self._own_client.aclose()

    def _follows_changed(self, change: Change) -> None:
        if not self.started:
            return
        self._dirty = True
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(self._reconcile_while_dirty())

    async def _reconcile_while_dirty(self) -> None:
        while self._dirty and self.started:
            self._dirty = False  # a change during the pass below marks it dirty again
            await self.reconcile()

    async def reconcile(self) -> None:
        """Start followers for new follow records, stop those whose record is gone."""
        async with self._reconcile_lock:
            await asyncio.sleep(0)  # let the write that woke us finish its commit
            wanted = follows(self.node)
            self._followed = {f.owner for f in wanted.values()}
            for fid in list(self.followers):
                if fid not in wanted or wanted[fid] != self.followers[fid].follow:
                    await self.followers.pop(fid).stop()
            for fid, follow in wanted.items():
                if fid not in self.followers and self.started:
                    follower = Follower(self.context, follow)
                    self.followers[fid] = follower
                    follower.start()

    # ------------------------------------------------------------------ consent and addresses

    def is_followed(self, ns: PubKey) -> bool:
        return ns in self._followed

    def allow_namespace(self, ns: PubKey) -> None:
        """Accept ops of ``ns`` without following it (an invitation)."""
        self.ingest.allow_namespace(ns)

    def add_peer(self, pubkey: PubKey, urls: Sequence[str]) -> None:
        """Remember where ``pubkey`` can be reached (an invite, a configured peer)."""
        known = self.known.setdefault(pubkey, [])
        known.extend(u for u in urls if u not in known)

    async def locate(self, follow: Follow) -> list[str]:
        """Where to fetch ``follow`` from, best first: the owner (DHT), ``via``, known addresses."""
        return await self.addresses(follow.owner, follow.via)

    async def addresses(self, owner: PubKey, via: Sequence[str] = ()) -> list[str]:
        """Where ``owner``'s node is, best first: its DHT record, ``via``, then addresses this node
        knows (invites, and the ``via`` of any follow of ``owner``); never this node's own."""
        urls: list[str] = []
        if self.directory is not None:
            try:
                record = await asyncio.wait_for(self.directory.resolve(owner), RESOLVE_TIMEOUT)
            except (TimeoutError, StatebusError, OSError) as exc:
                log.info("DHT lookup of %s failed: %s", owner, type(exc).__name__)
                record = None
            if record is not None:
                urls.extend(as_url(a) for a in record.addrs)
        urls.extend(via)
        urls.extend(self.known.get(owner, ()))
        for follower in self.followers.values():
            if follower.follow.owner == owner:
                urls.extend(follower.follow.via)
        own = set(self.urls)
        return [u for u in dict.fromkeys(urls) if u not in own]

    # ------------------------------------------------------------------ PeerService

    def view(self, peer: PubKey) -> PeerView:
        """What ``peer`` may read here, as of now."""
        return PeerView(self.node, peer, self.access)

    def may_read(self, peer: PubKey, pattern: Key) -> bool:
        return self.view(peer).pattern(pattern)

    def op_set(self, pattern: Key) -> OpSet:
        """The stored ops under ``pattern`` (cached until the next write)."""
        seq = self.node.durable_seq  # read first: the set holds at least everything up to it
        cached = self._opsets.get(pattern)
        if cached is not None and cached[0] == seq:
            return cached[1]
        found = op_set(self.node, pattern)
        if len(self._opsets) > 64:
            self._opsets.clear()
        self._opsets[pattern] = (seq, found)
        return found

    def blob_target(self, target: str) -> tuple[str, BlobPointer, str | None]:
        """What ``statebus blob fetch TARGET`` names: ``(key, pointer, url)``. ``target`` is a key that
        points to a blob (``url``: the node it came from, when a follow brought it) or a sha256 (key
        empty, size 0: the DHT's seeders only).

        Raises:
            InvalidKey / InvalidValue: ``target`` is neither, or the key does not point to a blob.
            NotFound: no such key here, or this node stores no blobs.
        """
        if self.blobs is None:
            raise NotFound("this node stores no blobs")
        if len(target) == 64 and all(c in "0123456789abcdefABCDEF" for c in target):
            return "", BlobPointer(check_hash(target), 0, ""), None
        key = parse_key(target, self.node.local)
        if is_subtree(key):
            raise InvalidKey("name one key that points to a blob, not a subtree")
        change = self.node.fetch_or_none(key)
        if change is None or not change.exists:
            raise NotFound(f"{key} has no value here")
        if change.content_type != BLOB_TYPE:
            raise InvalidValue(f"{key} does not point to a blob (its value is {change.content_type})")
        url = next(
            (
                f.url
                for f in self.followers.values()
                if f.url is not None and key_matches(f.follow.pattern, key)
            ),
            None,
        )
        return key, BlobPointer.decode(change.value), url

    async def fetch_blob(self, target: str, progress: Progress | None = None) -> tuple[BlobInfo, str]:
        """Fetch the blob ``target`` names (:meth:`blob_target`) now, for the owner: over the swarm
        first, then over HTTP (``BlobFetcher.fetch_now``). Returns it and how it came (``local``,
        ``swarm``, ``http``)."""
        key, pointer, url = self.blob_target(target)
        assert self.blobs is not None
        return await self.blobs.fetch_now(key, pointer, url, progress)

    async def blob_asked(self, pointer: BlobPointer, seeder: str) -> None:
        """Count a peer's request for a blob's bytes; raises BlobSwarmed when the blob is hot and the
        peer swarms (it named its swarm address, ``seeder``): ``statebus.federation.swarm``, rule 4."""
        if self.swarm is not None and await self.swarm.asked(pointer, time.monotonic()) and seeder:
            raise BlobSwarmed(
                f"blob {pointer.hash} is hot: fetch it over the swarm (the offer lists its seeders)"
            )

    async def swarm_offer(self, pointer: BlobPointer, seeder: str, address: str | None) -> dict[str, object]:
        """The torrent and seeders of a blob (``statebus.federation.swarm``); NotFound without a swarm."""
        if self.swarm is None:
            raise NotFound("this node does not swarm blobs (setting swarm is off)")
        return await self.swarm.offer(pointer, seeder, address)

    def relay_opened(self, peer: PubKey, url: str, patterns: list[Key], stream: StreamState) -> None:
        """``peer`` streams ``patterns`` from this node and offers to relay them at ``url``."""
        self.relays.opened(peer, url, patterns, stream)

    def depth(self, namespace: PubKey) -> int:
        """Hops between this node and the owner of ``namespace`` (0: our own; else our follower's)."""
        if namespace == self.node.local:
            return 0
        hops = [f.depth for f in self.followers.values() if f.follow.owner == namespace]
        return min(hops) if hops else 1

    def _head(self, peer: PubKey, namespace: PubKey) -> tuple[Key, Version] | None:
        """The newest op of ``namespace`` among this node's last ``HEAD_WINDOW`` writes that ``peer``
        may read (not a delegation or rule record), as (key, version); None if there is none."""
        upto = self.node.durable_seq
        recent = self.node.scan(f"/{namespace}/", max(0, upto - HEAD_WINDOW), HEAD_WINDOW)
        view = self.view(peer)
        for stored in reversed(recent):
            parts = segments(stored.key)
            if len(parts) >= 2 and parts[1] in META:
                continue
            if view.key(stored.key):
                return stored.key, decode_op(stored.data).version
        return None

    def relay_list(self, peer: PubKey, patterns: list[Key]) -> dict[str, object]:
        """This node's signed list of the relays ``peer`` may follow instead of this node, for the
        namespace of ``patterns`` (``statebus.federation.relays``)."""
        namespace = namespace_of(patterns[-1]) if patterns else self.node.local
        listed = self.relays.relays(namespace, self.node.durable_seq, exclude=(peer,))
        head = self._head(peer, namespace)
        return make_list(self.identity, namespace, self.depth(namespace), listed, head).to_json()

    async def subtree_snapshot(self, peer: PubKey, pattern: Key) -> BlobPointer:
        """The newest signed snapshot of ``pattern`` (``statebus.federation.snapshots`` rules 1, 2).

        Raises:
            NotFound: (404) nothing under it was compacted, or none is held here.
            Forbidden: (403) ``peer`` may not read every key it holds.
        """
        kept = await self.snapshots.newest(pattern)
        view = self.view(peer)
        if view.filters_keys and not all(view.key(k) for k in kept.keys):
            raise Forbidden(f"the snapshot of {pattern} holds keys node {peer} may not read here")
        return kept.pointer

    async def answer_sync(self, peer: PubKey, body: bytes) -> bytes:
        """One anti-entropy round for ``peer``. Pushed ops are taken only if this node would accept
        them anyway (a followed namespace, verified); our own namespace never is.

        Raises:
            InvalidValue, InvalidKey, InvalidOp: (400) a malformed message, or a pushed op that is not
                an op of the request's pattern; nothing is taken then.
            Forbidden: (403) ``peer`` may not read the pattern.
        """
        request = SyncRequest.decode(body)
        view = self.view(peer)
        if not view.pattern(request.pattern):
            raise Forbidden(f"node {peer} may not read {request.pattern} here")
        if request.ops:
            pushed = [(decode_op(raw), raw) for raw in request.ops]  # all well-formed, or nothing is taken
            outside = next((op.key for op, _ in pushed if not op.key.startswith(request.pattern)), None)
            if outside is not None:
                raise InvalidOp(f"a pushed op is for {outside}, outside the pattern {request.pattern}")
            await self.ingest.take(pushed, peer=peer)
        seq = self.node.durable_seq
        found = self.op_set(request.pattern)
        if view.filters_keys:
            found = narrowed(found, view.key)
        return dataclasses.replace(answer(found.index, found.ops, request), seq=seq).encode()
