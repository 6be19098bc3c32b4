"""The DNS for public keys: find a node's current addresses from its Ed25519 public key.

Other layers see only :class:`Directory`. :class:`KademliaDirectory` implements it on the
``kademlia`` package, hardened (see :mod:`statebus.federation.dht_protocol` and
docs/federation-dht.md)::

    directory = KademliaDirectory(seed, "alpha", invite_secret)
    await directory.start([("127.0.0.1", 4000)])       # the inviter's DHT address
    await directory.publish(["http://127.0.0.1:8000"])  # signed, seq bumped, republished
    record = await directory.resolve(their_pubkey)      # NodeRecord | None
    await directory.stop()

Only the owner of a key writes its record. Holders keep records until their signed expiry and
never re-STORE them on their own; the owner republishes every ``republish_interval`` seconds
(and well before expiry), and at once when its addresses change.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from kademlia.network import Server
from kademlia.node import Node
from nacl.signing import SigningKey

from statebus.errors import Forbidden, InvalidValue, StatebusError
from statebus.federation.dht_crawl import NodeCrawl, RecordCrawl
from statebus.federation.dht_protocol import NODE_ID_BYTES, DirectoryProtocol, network_tag_key
from statebus.federation.dht_provider import (
    ProviderLimits,
    ProviderRecord,
    ProviderStorage,
    make_provider,
    provider_key,
    verify_provider,
)
from statebus.federation.dht_record import (
    NodeRecord,
    check_addrs,
    check_dht_name,
    dht_key,
    make_record,
    pubkey_of,
    signing_key_of,
    verify_record,
)
from statebus.federation.dht_storage import RecordStorage, StorageLimits
from statebus.keys.paths import decode_pubkey
from statebus.types import PubKey

log = logging.getLogger(__name__)

TABLE_REFRESH_INTERVAL = 3600.0
MAX_CACHED_RECORDS = 1024
"""Records of other nodes :meth:`KademliaDirectory.resolve` keeps (the last good one of each key)."""


class Directory(Protocol):
    """Maps public keys to node records. The only DHT interface the rest of statebus uses."""

    @property
    def port(self) -> int:
        """The UDP port this node listens on (the real one when started on port 0)."""
        ...

    async def start(self, bootstrap: list[tuple[str, int]]) -> None:
        """Listen, then join the DHT through ``bootstrap`` (an empty list starts a new DHT)."""
        ...

    async def publish(self, addrs: Sequence[str]) -> NodeRecord:
        """Sign and publish a new record of this node's addresses (with a higher seq)."""
        ...

    async def resolve(self, pubkey: PubKey) -> NodeRecord | None:
        """The newest valid record of ``pubkey`` the DHT holds, or ``None``."""
        ...

    def cached(self, pubkey: PubKey) -> NodeRecord | None:
        """The last record of ``pubkey`` a resolve found, while it has not expired (no network)."""
        ...

    async def stop(self) -> None:
        """Stop republishing and close the socket."""
        ...


class _DirectoryServer(Server):  # type: ignore[misc]
    """kademlia ``Server`` with our protocol, safe crawls, and no holder re-STOREs or pickle."""

    protocol: DirectoryProtocol

    def __init__(
        self,
        storage: RecordStorage,
        *,
        tag_key: bytes,
        wait_timeout: float,
        ksize: int,
        alpha: int,
        providers: ProviderStorage,
    ) -> None:
        super().__init__(ksize=ksize, alpha=alpha, node_id=storage.node_id, storage=storage)
        self.storage = storage  # upstream's ``storage or ForgetfulStorage()`` drops an empty one
        self.providers = providers
        self._tag_key = tag_key
        self._wait_timeout = wait_timeout
        self._refresh_task: asyncio.Task[None] | None = None

    def _create_protocol(self) -> DirectoryProtocol:
        return DirectoryProtocol(
            self.node,
            self.storage,
            self.ksize,
            tag_key=self._tag_key,
            wait_timeout=self._wait_timeout,
            providers=self.providers,
        )

    def refresh_table(self, interval: float = TABLE_REFRESH_INTERVAL) -> None:
        # upstream re-arms itself without ``interval``, falling back to 3600 s after the first run
        self._refresh_task = asyncio.ensure_future(self._refresh_table())
        self.refresh_loop = asyncio.get_running_loop().call_later(interval, self.refresh_table, interval)

    async def _refresh_table(self) -> None:
        """Refresh lonely buckets. Unlike upstream, holders do not re-STORE every record hourly."""
        crawls = []
        for node_id in self.protocol.get_refresh_ids():
            node = Node(node_id)
            nearest = self.protocol.router.find_neighbors(node, self.alpha)
            crawls.append(NodeCrawl(self.protocol, node, nearest, self.ksize, self.alpha).find())
        await asyncio.gather(*crawls)

    async def bootstrap(self, addrs: list[tuple[str, int]]) -> list[Node]:
        found = await asyncio.gather(*(self.bootstrap_node(addr) for addr in addrs))
        nodes = [node for node in found if node is not None]
        result: list[Node] = await NodeCrawl(self.protocol, self.node, nodes, self.ksize, self.alpha).find()
        return result

    async def bootstrap_node(self, addr: tuple[str, int]) -> Node | None:
        started = time.monotonic()
        ok, node_id = await self.protocol.ping(addr, self.node.id)
        if ok:  # time the first replies, so the first lookup's rounds probe with a short timeout
            self.protocol.observe_rtt(time.monotonic() - started)
        if not ok or not isinstance(node_id, bytes) or len(node_id) != NODE_ID_BYTES:
            return None
        if node_id == self.node.id:
            return None
        return Node(node_id, addr[0], addr[1])

    def stop(self) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()
        if self.protocol is not None:
            self.protocol.close()
        super().stop()

    def save_state(self, fname: Any) -> None:
        raise Forbidden("kademlia state files use pickle; statebus never writes or reads them")

    @classmethod
    async def load_state(cls, fname: Any, port: Any, interface: Any = None) -> Any:
        raise Forbidden("kademlia state files use pickle; statebus never writes or reads them")


class KademliaDirectory:
    """A :class:`Directory` node on a kademlia DHT (one per DHT a statebus node joins).

    Args:
        signing_key: this node's Ed25519 key (nacl ``SigningKey`` or 32-byte seed).
        dht_name: the DHT's name; it is part of every record and of every DHT key.
        invite_secret: the DHT's shared secret; with the name it keys the datagram tag.
        interface: the IP address to bind (default loopback).
        port: the UDP port (0: any free port; read :attr:`port`).
        ksize: kademlia k (bucket size and replication factor).
        alpha: kademlia alpha (parallel requests per lookup round).
        wait_timeout: seconds to wait for one RPC reply.
        record_ttl: lifetime of each published record, in seconds.
        republish_interval: the owner republishes this often (and at least twice per ``record_ttl``).
        self_check_interval: this often the owner looks itself up, and republishes at once when
            fewer than half the nodes that took its last record still hold it.
        limits: how many records this node holds for others (per source address, per key prefix).
        provider_limits: how many provider records (seeders of blobs) it holds for others.
        clock: unix-seconds clock (tests inject one).
    """

    def __init__(
        self,
        signing_key: SigningKey | bytes,
        dht_name: str,
        invite_secret: bytes,
        *,
        interface: str = "127.0.0.1",
        port: int = 0,
        ksize: int = 20,
        alpha: int = 3,
        wait_timeout: float = 1.0,
        record_ttl: int = 3600,
        republish_interval: float = 1800.0,
        self_check_interval: float = 300.0,
        limits: StorageLimits | None = None,
        provider_limits: ProviderLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = signing_key_of(signing_key)
        self.pubkey: PubKey = pubkey_of(self._key)
        self.dht_name = check_dht_name(dht_name)
        if not isinstance(invite_secret, bytes):
            raise InvalidValue("the invite secret is bytes")
        if record_ttl < 60 or republish_interval <= 0 or self_check_interval <= 0:
            raise InvalidValue("record_ttl is at least 60 s, and the republish and check intervals positive")
        self.interface = interface
        self.record_ttl = record_ttl
        self.republish_interval = min(republish_interval, record_ttl / 2)
        self.self_check_interval = self_check_interval
        self.clock = clock
        self._requested_port = port
        self._storage = RecordStorage(
            self.dht_name, clock=clock, limits=limits, node_id=os.urandom(NODE_ID_BYTES)
        )
        self._server = _DirectoryServer(
            self._storage,
            tag_key=network_tag_key(self.dht_name, invite_secret),
            wait_timeout=wait_timeout,
            ksize=ksize,
            alpha=alpha,
            providers=ProviderStorage(self.dht_name, clock=clock, limits=provider_limits),
        )
        self._addrs: tuple[str, ...] | None = None
        self._seq = 0
        self._republisher: asyncio.Task[None] | None = None
        self._published_at = 0.0
        self._publishing = asyncio.Lock()
        self.record: NodeRecord | None = None
        """The record this node last published."""
        self.signed: bytes | None = None
        """The wire bytes (signature || body) of :attr:`record`."""
        self.published_at: float | None = None
        """When :attr:`record` was published (unix seconds, :attr:`clock`)."""
        self.last_acks = 0
        """How many nodes accepted the last publish."""
        self.last_holders: int | None = None
        """How many nodes held the current record at the last self-check."""
        self.checked_at: float | None = None
        """When the last self-check ran (unix seconds)."""
        self.early_republishes = 0
        """Republishes a self-check started because too few nodes held the record."""
        self._cache: dict[PubKey, NodeRecord] = {}
        self._signed: dict[PubKey, bytes] = {}

    def __repr__(self) -> str:
        return f"KademliaDirectory(dht={self.dht_name!r}, pubkey={self.pubkey[:8]}…, port={self.port})"

    @property
    def port(self) -> int:
        transport = self._server.transport
        if transport is None:
            return 0
        port: int = transport.get_extra_info("sockname")[1]
        return port

    @property
    def protocol(self) -> DirectoryProtocol:
        """The underlying kademlia protocol (for diagnostics: ``dropped``, ``storage.rejected``)."""
        if self._server.protocol is None:
            raise InvalidValue("the directory is not started")
        return self._server.protocol

    async def start(self, bootstrap: list[tuple[str, int]]) -> None:
        """Listen on ``interface:port``, then join the DHT through ``bootstrap`` (may be empty).

        Raises:
            InvalidValue: a bootstrap address is not an ``(ip, port)`` pair.
        """
        for host, port in bootstrap:
            try:
                ipaddress.ip_address(host)
            except ValueError as exc:
                raise InvalidValue("a bootstrap address is an (ip, port) pair") from exc
            if not isinstance(port, int) or not 0 < port < 65536:
                raise InvalidValue("a bootstrap port is 1-65535")
        if self._server.transport is not None:
            raise InvalidValue("the directory is already started")
        await self._server.listen(self._requested_port, interface=self.interface)
        peers = [(h, p) for h, p in bootstrap if (h, p) != (self.interface, self.port)]
        if peers:
            await self._server.bootstrap(peers)

    def neighbours(self) -> int:
        """How many contacts the routing table holds."""
        return sum(len(b) for b in self.protocol.router.buckets)

    async def publish(self, addrs: Sequence[str]) -> NodeRecord:
        """Sign a record of ``addrs`` with a higher seq, store it on the k closest nodes.

        The seq is the clock in milliseconds (so it keeps growing across restarts), and is always
        above the seq of any record of ours found in the DHT.

        Raises:
            InvalidValue / TooLarge: ``addrs`` is malformed or the record would be over 1 KB.
        """
        addrs = check_addrs(addrs)
        async with self._publishing:
            return await self._publish(addrs)

    async def _publish(self, addrs: tuple[str, ...]) -> NodeRecord:
        if self._seq == 0:
            held = await self.resolve(self.pubkey)
            self._seq = held.seq if held is not None else 0
        self._seq = max(self._seq + 1, int(self.clock() * 1000))
        expires = int(self.clock()) + self.record_ttl
        blob = make_record(self._key, addrs, seq=self._seq, expires=expires, dht_name=self.dht_name)
        record = verify_record(blob, self.clock(), self.dht_name)
        key = record.key
        self._storage.pinned = key
        self._storage[key] = blob
        protocol = self.protocol
        nearest = protocol.router.find_neighbors(Node(key))
        acks = 0
        if nearest:
            crawl = NodeCrawl(protocol, Node(key), nearest, self._server.ksize, self._server.alpha)
            nodes = await crawl.find()
            results = await asyncio.gather(*(protocol.call_store(n, key, blob) for n in nodes))
            acks = sum(1 for ok, accepted in results if ok and accepted is True)
        self._addrs, self.record, self.signed, self.last_acks = addrs, record, blob, acks
        self.published_at, self.last_holders = self.clock(), None
        self._published_at = asyncio.get_running_loop().time()
        if self._republisher is None:
            self._republisher = asyncio.ensure_future(self._republish_loop())
        log.debug("published seq %d to %d nodes", record.seq, acks)
        return record

    async def _republish_loop(self) -> None:
        """Republish every ``republish_interval``; in between, look ourselves up every
        ``self_check_interval`` and republish at once if the record went missing."""
        loop = asyncio.get_running_loop()
        while True:
            due = self._published_at + self.republish_interval
            await asyncio.sleep(max(0.0, min(self.self_check_interval, due - loop.time())))
            if self._addrs is None:
                continue
            try:
                if loop.time() >= self._published_at + self.republish_interval:
                    await self.publish(self._addrs)
                elif not await self.findable():
                    log.info("own DHT record held by %s nodes; republishing early", self.last_holders)
                    await self.publish(self._addrs)
                    self.early_republishes += 1
            except StatebusError as exc:
                log.warning("republish failed: %s", exc)

    async def findable(self) -> bool:
        """Look our own record up in the DHT (the local copy does not count).

        True if at least half of the nodes that accepted the last publish (at least one) still
        serve it, or if there is nothing to check (never published, or no other node known).
        """
        record = self.record
        if record is None:
            return True
        protocol = self.protocol
        nearest = protocol.router.find_neighbors(Node(record.key))
        if not nearest:
            return True
        crawl = RecordCrawl(
            protocol,
            Node(record.key),
            nearest,
            self._server.ksize,
            self._server.alpha,
            dht_name=self.dht_name,
            clock=self.clock,
        )
        await crawl.find_record()
        self.last_holders = sum(1 for found, _ in crawl.found.values() if found.seq >= record.seq)
        self.checked_at = self.clock()
        ksize: int = self._server.ksize
        return self.last_holders >= max(1, min(self.last_acks, ksize) // 2)

    def cached(self, pubkey: PubKey) -> NodeRecord | None:
        """The last good record :meth:`resolve` found for ``pubkey``, until its signed expiry."""
        record = self._cache.get(pubkey)
        if record is not None and record.expires <= self.clock():
            del self._cache[pubkey]
            self._signed.pop(pubkey, None)
            return None
        return record

    def signed_record(self, pubkey: PubKey) -> bytes | None:
        """The wire bytes (signature || body) of :meth:`cached`'s record, so anyone can check it."""
        return self._signed.get(pubkey) if self.cached(pubkey) is not None else None

    def _remember(self, pubkey: PubKey, found: tuple[NodeRecord, bytes] | None) -> NodeRecord | None:
        """Keep ``found`` as the last good one; with none found, fall back on the cached one."""
        if found is None:
            return self.cached(pubkey)
        record, blob = found
        old = self._cache.pop(pubkey, None)
        if old is not None and old.seq > record.seq and old.expires > self.clock():
            record, blob = old, self._signed[pubkey]  # a lookup that missed the newest holders keeps it
        self._cache[pubkey] = record
        self._signed[pubkey] = blob
        while len(self._cache) > MAX_CACHED_RECORDS:
            oldest = next(iter(self._cache))
            del self._cache[oldest]
            self._signed.pop(oldest, None)
        return record

    async def resolve(self, pubkey: PubKey) -> NodeRecord | None:
        """Ask the DHT for ``pubkey``'s newest valid record (the local copy and the last good record
        found, until it expires, compete by seq).

        Raises:
            InvalidKey: ``pubkey`` is not a 52-character public key.
        """
        return self._remember(pubkey, await self._resolve(pubkey))

    async def _resolve(self, pubkey: PubKey) -> tuple[NodeRecord, bytes] | None:
        decode_pubkey(pubkey)
        key = dht_key(self.dht_name, pubkey)
        protocol = self.protocol
        held = self._storage.record(key)
        local = (held, self._storage[key]) if held is not None else None
        nearest = protocol.router.find_neighbors(Node(key))
        if not nearest:
            return local
        crawl = RecordCrawl(
            protocol,
            Node(key),
            nearest,
            self._server.ksize,
            self._server.alpha,
            dht_name=self.dht_name,
            clock=self.clock,
        )
        found = await crawl.find_record()
        if found is None:
            return local
        record, blob = found
        if local is not None and local[0].seq >= record.seq:
            return local
        if local is not None:
            with contextlib.suppress(StatebusError):
                self._storage[key] = blob  # we hold this key: keep our copy current
        return record, blob

    # ------------------------------------------------------------------ provider records (the swarm's peers)
    @property
    def provider_storage(self) -> ProviderStorage:
        """The provider records this node holds for others."""
        storage: ProviderStorage = self._server.providers
        return storage

    async def announce(self, digest: str, infohash: str, addr: str, ttl: int) -> int:
        """Sign a provider record "this node seeds blob ``digest`` (torrent ``infohash``) at swarm
        address ``addr``" for ``ttl`` seconds and store it on the k nodes closest to the blob's
        provider key (and here). The caller re-announces before ``ttl`` runs out.

        Returns:
            How many other nodes accepted it.

        Raises:
            InvalidValue: a field is malformed (``dht_provider``, rule 1).
        """
        blob = make_provider(
            self._key, digest, infohash, addr, expires=int(self.clock()) + ttl, dht_name=self.dht_name
        )
        key = provider_key(self.dht_name, digest)
        self.provider_storage.store(key, blob, "local")
        protocol = self.protocol
        nearest = protocol.router.find_neighbors(Node(key))
        if not nearest:
            return 0
        nodes = await NodeCrawl(protocol, Node(key), nearest, self._server.ksize, self._server.alpha).find()
        results = await asyncio.gather(*(protocol.call_add_provider(n, key, blob) for n in nodes))
        return sum(1 for ok, accepted in results if ok and accepted is True)

    async def providers(self, digest: str) -> list[ProviderRecord]:
        """The seeders of blob ``digest`` the DHT knows (the get_peers of our DHT): the records held
        by the k nodes closest to its provider key, and here, each verified; one per publisher."""
        key = provider_key(self.dht_name, digest)
        found: dict[PubKey, ProviderRecord] = {r.pubkey: r for r in self.provider_storage.records(key)}
        protocol = self.protocol
        nearest = protocol.router.find_neighbors(Node(key))
        if nearest:
            nodes = await NodeCrawl(
                protocol, Node(key), nearest, self._server.ksize, self._server.alpha
            ).find()
            replies = await asyncio.gather(*(protocol.call_get_providers(n, key) for n in nodes))
            for ok, blobs in replies:
                if not ok or not isinstance(blobs, list):
                    continue
                for blob in blobs[:32]:
                    try:
                        record = verify_provider(blob, self.clock(), self.dht_name, key=key)
                    except StatebusError:
                        continue
                    held = found.get(record.pubkey)
                    if held is None or held.expires < record.expires:
                        found[record.pubkey] = record
        return sorted(found.values(), key=lambda r: -r.expires)

    async def stop(self) -> None:
        """Stop republishing and close the socket. Idempotent."""
        if self._republisher is not None:
            self._republisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._republisher
            self._republisher = None
        self._server.stop()
