"""The bulk plane of federation: blobs of ``swarm_min_bytes`` or more move over the node's swarm.

    plane = SwarmPlane(settings, blobs=store, directory=dht)   # settings.swarm must be on
    await plane.start()
    offer = await plane.offer(pointer, "127.0.0.1:6881")          # the origin: torrent + seeders
    info = await plane.fetch(client, url, key, pointer, store, ns)  # a follower; raises to fall back
    await plane.stop()

Rules:

1. The origin makes a blob's torrent when a peer first asks for it (``offer``) and seeds it from the
   blob store. An offer is ``{"torrent": base64, "seeders": ["host:port", …]}``: the origin first,
   then the newest swarm addresses of nodes that asked (at most :data:`MAX_SEEDERS`). An asker's
   address is listed only when its host is the address the request came from, so no peer can send
   the next fetchers to a third party's host.
2. A follower trusts nothing in an offer but what it checks: the torrent must describe exactly the
   pointer's hash and size (``TorrentMeta.parse``), and the fetched bytes must hash to the pointer's
   sha256, which the owner signed (``SwarmSession.fetch``). A seeder address that does not parse is
   skipped.
3. Any failure of the swarm path (no offer, no peer, a timeout, bad bytes) raises; the caller falls
   back to the HTTP fetch. Nothing is kept from a failed swarm fetch.
4. Hot small blobs: a blob under ``swarm_min_bytes`` that peers ask for (``asked``) more often than
   ``swarm_hot_requests`` times in :data:`HOT_WINDOW` seconds becomes a torrent too. From then on a
   peer that names its swarm address is answered ``BlobSwarmed`` (409) instead of the bytes, and its
   fetcher takes the swarm path (offer and DHT); asked without a swarm address the node still
   serves the bytes, which is every fetcher's fallback. A blob stays hot while this node seeds it.
5. Peers through our own DHT (with a directory that keeps provider records,
   ``statebus.federation.dht_provider``): whoever seeds a blob (the origin once it offers it, a
   fetcher as soon as its fetch starts) announces "I seed blob h, torrent ih, at my swarm address",
   signed by its node key, for ``swarm_announce_ttl`` seconds, and re-announces every half of that
   while its session still holds the torrent. A fetcher looks the blob's providers up besides asking
   the node it follows for the offer, and connects to both; with no offer (a relay or an origin
   that does not swarm, an origin that is down) the DHT's info-hash alone is enough: the metadata
   then comes from the peers and is checked like an offer's (``TorrentRef.check``). While a fetch
   runs it looks the seeders up again (0.5 s, then doubling up to 15 s), so fetchers that started
   together find each other.
6. The owner-signed torrent: a pointer that names its torrent's info-hashes (a blob written at
   ``swarm_min_bytes`` or more) is fetched only by that torrent. An offer whose torrent has other
   info-hashes (another blob's bytes, another piece size) is refused (``bad_blob``, logged, counted in
   ``refused``) before a piece is asked for; the fetch then adds the torrent by its signed info-hash
   (the metadata from the peers must have both signed info-hashes, ``TorrentRef.check``) and asks the
   offer's seeders and the DHT's providers of that info-hash (hints: the torrent check makes them
   harmless); with none, the ``BadBlob`` goes up and the caller falls back to HTTP. A pointer without
   info-hashes is fetched as before (rules 2 and 5). A node whose own torrent of a blob is not the
   one its pointer signs (made by another torrent maker) offers none: 404, and its followers fetch
   over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Coroutine
from typing import Any, Protocol, runtime_checkable

from statebus.blobs import BlobInfo, BlobPointer, BlobStore
from statebus.config import Settings
from statebus.errors import BadBlob, InvalidValue, NotFound, StatebusError
from statebus.federation.dht_provider import ProviderRecord
from statebus.swarm import SwarmSession, TorrentMeta, TorrentRef, check_signed
from statebus.swarm.session import LOOPBACK, Progress
from statebus.types import PubKey

log = logging.getLogger("statebus.federation")

MAX_SEEDERS = 20
FETCH_TIMEOUT = 600.0
HOT_WINDOW = 60.0
"""Seconds over which requests for a small blob are counted (``swarm_hot_requests`` per window)."""
MAX_COUNTED = 4096
"""Small blobs whose recent requests are counted at once (the least recently asked are forgotten)."""
METADATA_TIMEOUT = 30.0
"""Seconds a fetch by info-hash alone waits for a peer to send the torrent before it gives up."""
LOOKUP_TIMEOUT = 5.0
REFRESH_FIRST = 0.5
REFRESH_MAX = 15.0
"""Seconds between two lookups of a blob's seeders while it is being fetched (from 0.5 s, doubling)."""
"""Seconds a fetcher waits for the DHT's providers of a blob."""


@runtime_checkable
class ProviderDirectory(Protocol):
    """What the plane asks of the DHT (``KademliaDirectory.announce`` and ``.providers``)."""

    async def announce(self, digest: str, infohash: str, addr: str, ttl: int) -> int: ...

    async def providers(self, digest: str) -> list[ProviderRecord]: ...


@runtime_checkable
class OfferClient(Protocol):
    """What the plane asks of another node (``PeerClient.swarm_offer``)."""

    async def swarm_offer(
        self, base: str, key: str, digest: str, seeder: str, *, pattern: str | None = None
    ) -> dict[str, Any]: ...


def _peer(addr: object) -> tuple[str, int] | None:
    if not isinstance(addr, str):
        return None
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return (host, int(port))


class SwarmPlane:
    """The swarm of one node's federation (the node's one libtorrent session)."""

    def __init__(self, settings: Settings, *, blobs: BlobStore, directory: object = None) -> None:
        host = settings.host
        loopback = host.startswith("127.") or host == "localhost"
        self.blobs = blobs
        self.min_bytes = settings.swarm_min_bytes
        self.session = SwarmSession(
            settings.data_dir / "swarm",
            interface="127.0.0.1" if host == "localhost" else host,
            allow=LOOPBACK if loopback else (("0.0.0.0", "255.255.255.255"),),
            seed_seconds=settings.swarm_seed_seconds,
            upload_budget=settings.swarm_upload_budget_bytes,
        )
        self._seeders: dict[str, OrderedDict[str, None]] = {}
        self.directory = directory if isinstance(directory, ProviderDirectory) else None
        """Where seeders are announced and looked up (rule 4); None: offers only."""
        self.announce_ttl = int(settings.swarm_announce_ttl)
        self.hot_requests = settings.swarm_hot_requests
        self.hot: set[str] = set()
        """Small blobs that became torrents because peers ask for them often (rule 4)."""
        self._asks: OrderedDict[str, deque[float]] = OrderedDict()
        self.announced: dict[str, str] = {}
        """Blobs this node announces as their seeder: sha256 -> v1 info-hash."""
        self.announces = 0
        """Provider records announced (first announces and re-announces)."""
        self.metadata_timeout = METADATA_TIMEOUT
        self.refused = 0
        """Offers refused because their torrent is not the one the owner signed (rule 6)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._reannouncer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.session.start()
        if self.directory is not None:
            self._reannouncer = asyncio.get_running_loop().create_task(
                self._reannounce(), name="swarm announce"
            )

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._reannouncer] if self._reannouncer is not None else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._reannouncer = None
        await self.session.close()

    # ------------------------------------------------------------------ peers through our DHT (rule 4)
    def announce(self, digest: str, infohash: str) -> None:
        """Announce (now, in the background, and again every half TTL) that this node seeds ``digest``."""
        if self.directory is None:
            return
        self.announced[digest] = infohash
        self._spawn(self._announce(digest, infohash))

    async def _announce(self, digest: str, infohash: str) -> None:
        assert self.directory is not None
        try:
            acks = await self.directory.announce(digest, infohash, self.address, self.announce_ttl)
        except StatebusError as exc:
            log.warning("announcing blob %s on the DHT failed: %s", digest, exc.detail)
            return
        self.announces += 1
        log.debug("announced blob %s to %d DHT nodes", digest, acks)

    async def _reannounce(self) -> None:
        while True:
            await asyncio.sleep(self.announce_ttl / 2)
            for digest, infohash in list(self.announced.items()):
                if self.session.has(digest):
                    await self._announce(digest, infohash)
                else:  # no longer seeded here: its record expires on its own
                    del self.announced[digest]

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def providers(self, digest: str) -> list[ProviderRecord]:
        """The seeders of ``digest`` on our DHT, not this node (empty without a directory or in time)."""
        if self.directory is None:
            return []
        try:
            found = await asyncio.wait_for(self.directory.providers(digest), LOOKUP_TIMEOUT)
        except (TimeoutError, StatebusError) as exc:
            log.info("looking up the seeders of %s on the DHT failed: %r", digest, exc)
            return []
        return [r for r in found if r.addr != self.address]

    async def serve_fetched(self, pointer: BlobPointer) -> None:
        """Seed (and announce) a blob this node fetched over HTTP, as a swarm-fetched one: for
        ``swarm_seed_seconds`` within the upload budget ("everyone who fetched, serves")."""
        if not self.wants(pointer) or not self.blobs.has(pointer.hash) or self.session.has(pointer.hash):
            return
        meta = await self.session.seed(self.blobs.path(pointer.hash), fetched=True)
        self.announce(pointer.hash, meta.infohash_v1)

    async def fetch_from_dht(
        self, pointer: BlobPointer, namespace: PubKey | None, progress: Progress | None = None
    ) -> BlobInfo:
        """Fetch the blob from the seeders our DHT names, knowing nothing else (rule 4).

        Raises:
            NotFound: the DHT knows no seeder of it; and what ``SwarmSession.fetch`` raises.
        """
        return await self._fetch(None, pointer, namespace, await self.providers(pointer.hash), (), progress)

    async def _fetch(
        self,
        meta: TorrentMeta | None,
        pointer: BlobPointer,
        namespace: PubKey | None,
        records: list[ProviderRecord],
        peers: tuple[tuple[str, int], ...] = (),
        progress: Progress | None = None,
    ) -> BlobInfo:
        target: TorrentMeta | TorrentRef
        if meta is not None:
            target = meta
        elif pointer.infohash_v1 and (peers or records):  # the torrent the owner signed (rule 6)
            target = TorrentRef(
                pointer.hash, pointer.size, pointer.infohash_v1, infohash_v2=pointer.infohash_v2
            )
        elif records:  # the info-hash most seeders name (a liar's metadata fails TorrentRef.check anyway)
            infohash = Counter(r.infohash for r in records).most_common(1)[0][0]
            target = TorrentRef(pointer.hash, pointer.size, infohash)
        else:
            raise NotFound(f"no seeder of blob {pointer.hash} is known")
        everyone = [*peers, *(r.peer for r in records if r.infohash == target.infohash_v1)]
        if not everyone and meta is None:
            raise NotFound(f"no seeder of the signed torrent of blob {pointer.hash} is known")
        self.announce(pointer.hash, target.infohash_v1)  # a partial seed serves the pieces it has
        refresh = asyncio.ensure_future(self._refresh_peers(pointer.hash, target.infohash_v1))
        try:
            return await self.session.fetch(
                target,
                everyone,
                self.blobs,
                namespace=namespace,
                timeout=FETCH_TIMEOUT,
                progress=progress,
                metadata_timeout=self.metadata_timeout,
            )
        except BaseException:
            self.announced.pop(pointer.hash, None)
            raise
        finally:
            refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresh

    async def _refresh_peers(self, digest: str, infohash: str) -> None:
        """While a fetch runs, look its seeders up again (after :data:`REFRESH_FIRST` seconds, then ever
        less often): fetchers that started at the same time find each other and share pieces."""
        if self.directory is None:
            return
        delay = REFRESH_FIRST
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, REFRESH_MAX)
            found = [r.peer for r in await self.providers(digest) if r.infohash == infohash]
            if self.session.has(digest):
                self.session.add_peers(digest, found)

    @property
    def address(self) -> str:
        host, port = self.session.address
        return f"{host}:{port}"

    def wants(self, pointer: BlobPointer) -> bool:
        """Whether the blob moves over the swarm: big enough, or hot (rule 4)."""
        if pointer.hash in self.hot and not self.session.has(pointer.hash):
            self.hot.discard(pointer.hash)  # no longer seeded here (dropped): cold again
        return pointer.size >= self.min_bytes or pointer.hash in self.hot

    async def asked(self, pointer: BlobPointer, now: float) -> bool:
        """Count a peer's request for the bytes of ``pointer`` at ``now`` (monotonic seconds); True
        when the blob is (now) hot, a torrent the asker should fetch over the swarm (rule 4)."""
        if pointer.size >= self.min_bytes or not self.hot_requests or not self.blobs.has(pointer.hash):
            return False
        if pointer.hash in self.hot:
            return self.wants(pointer)
        times = self._asks.pop(pointer.hash, None) or deque()
        times.append(now)
        while times and times[0] <= now - HOT_WINDOW:
            times.popleft()
        self._asks[pointer.hash] = times
        while len(self._asks) > MAX_COUNTED:
            self._asks.popitem(last=False)
        if len(times) <= self.hot_requests:
            return False
        del self._asks[pointer.hash]
        meta = await self.session.seed(self.blobs.path(pointer.hash))  # a torrent now, and seeded
        self.hot.add(pointer.hash)
        if pointer.hash not in self.announced:
            self.announce(pointer.hash, meta.infohash_v1)
        log.info(
            "blob %s was asked for %d times in %.0f s: swarming it", pointer.hash, len(times), HOT_WINDOW
        )
        return True

    async def offer(self, pointer: BlobPointer, seeder: str, address: str | None = None) -> dict[str, object]:
        """The origin's answer to ``GET /.well-known/statebus/swarm/<hash>`` (rule 1)."""
        if not self.wants(pointer) or not self.blobs.has(pointer.hash):
            raise NotFound(f"blob {pointer.hash} is not offered over the swarm here")
        meta = await self.session.seed(self.blobs.path(pointer.hash))
        try:
            check_signed(pointer, meta.infohash_v1, meta.infohash_v2)
        except BadBlob as exc:  # every fetcher would refuse it (rule 6): offer nothing, seed nothing
            self.session.drop(pointer.hash)
            log.warning("not offering blob %s: %s", pointer.hash, exc.detail)
            raise NotFound(f"blob {pointer.hash} is not offered over the swarm here: {exc.detail}") from None
        if pointer.hash not in self.announced:
            self.announce(pointer.hash, meta.infohash_v1)
        known = self._seeders.setdefault(pointer.hash, OrderedDict())
        listed = [self.address, *reversed(known)][: MAX_SEEDERS + 1]
        asker = _peer(seeder)
        if asker is not None and asker[0] == address and seeder != self.address:
            known.pop(seeder, None)
            known[seeder] = None
            while len(known) > MAX_SEEDERS:
                known.popitem(last=False)
        return {"torrent": base64.b64encode(meta.data).decode(), "seeders": listed}

    async def fetch(
        self,
        client: OfferClient,
        url: str,
        key: str,
        pointer: BlobPointer,
        namespace: PubKey | None,
        progress: Progress | None = None,
        *,
        pattern: str | None = None,
    ) -> BlobInfo:
        """Fetch the blob over the swarm (rules 2-4): raises on any failure, keeping nothing. With
        ``pattern``, the blob is the newest signed snapshot of that subtree (``key`` is unused)."""
        lookup = asyncio.ensure_future(self.providers(pointer.hash))
        try:
            offer = await client.swarm_offer(url, key, pointer.hash, self.address, pattern=pattern)
        except StatebusError as exc:
            records = await lookup
            if not records:
                raise
            log.info(
                "no swarm offer for %s (%s); fetching from %d DHT seeders",
                pointer.hash,
                exc.code,
                len(records),
            )
            return await self._fetch(None, pointer, namespace, records, (), progress)
        except BaseException:
            lookup.cancel()
            raise
        raw = offer.get("seeders")
        peers = [p for p in (_peer(a) for a in (raw if isinstance(raw, list) else [])) if p is not None]
        meta: TorrentMeta | None = None
        refused: BadBlob | None = None
        try:
            data = base64.b64decode(str(offer.get("torrent", "")), validate=True)
            meta = TorrentMeta.parse(data, hash=pointer.hash, size=pointer.size)
            check_signed(pointer, meta.infohash_v1, meta.infohash_v2)
        except BadBlob as exc:
            if not pointer.infohash_v1:
                lookup.cancel()
                raise
            meta, refused = None, exc  # rule 6: the signed torrent, from the same seeders and the DHT's
        except (binascii.Error, ValueError):
            lookup.cancel()
            raise InvalidValue("the swarm offer's torrent is not base64") from None
        except BaseException:
            lookup.cancel()
            raise
        records = await lookup
        if refused is not None:
            self.refused += 1
            log.warning(
                "swarm: refused the offer of %s from %s: bad_blob: %s", pointer.hash, url, refused.detail
            )
            if not peers and not any(r.infohash == pointer.infohash_v1 for r in records):
                raise refused
        return await self._fetch(meta, pointer, namespace, records, tuple(peers), progress)
