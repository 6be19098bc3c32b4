"""The bulk plane of federation: blobs of ``swarm_min_bytes`` or more move over the node's swarm.

    plane = SwarmPlane(settings)            # settings.swarm must be on
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
"""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from typing import Any, Protocol, runtime_checkable

from statebus.blobs import BlobInfo, BlobPointer, BlobStore
from statebus.config import Settings
from statebus.errors import InvalidValue, NotFound
from statebus.swarm import SwarmSession, TorrentMeta
from statebus.swarm.session import LOOPBACK
from statebus.types import PubKey

MAX_SEEDERS = 20
FETCH_TIMEOUT = 600.0


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

    def __init__(self, settings: Settings, *, blobs: BlobStore) -> None:
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

    async def start(self) -> None:
        await self.session.start()

    async def stop(self) -> None:
        await self.session.close()

    @property
    def address(self) -> str:
        host, port = self.session.address
        return f"{host}:{port}"

    def wants(self, pointer: BlobPointer) -> bool:
        return pointer.size >= self.min_bytes

    async def offer(self, pointer: BlobPointer, seeder: str, address: str | None = None) -> dict[str, object]:
        """The origin's answer to ``GET /.well-known/statebus/swarm/<hash>`` (rule 1)."""
        if not self.wants(pointer) or not self.blobs.has(pointer.hash):
            raise NotFound(f"blob {pointer.hash} is not offered over the swarm here")
        meta = await self.session.seed(self.blobs.path(pointer.hash))
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
        *,
        pattern: str | None = None,
    ) -> BlobInfo:
        """Fetch the blob over the swarm (rules 2, 3): raises on any failure, keeping nothing. With
        ``pattern``, the blob is the newest signed snapshot of that subtree (``key`` is unused)."""
        offer = await client.swarm_offer(url, key, pointer.hash, self.address, pattern=pattern)
        try:
            data = base64.b64decode(str(offer.get("torrent", "")), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidValue("the swarm offer's torrent is not base64") from None
        meta = TorrentMeta.parse(data, hash=pointer.hash, size=pointer.size)
        raw = offer.get("seeders")
        peers = [p for p in (_peer(a) for a in (raw if isinstance(raw, list) else [])) if p is not None]
        return await self.session.fetch(meta, peers, self.blobs, namespace=namespace, timeout=FETCH_TIMEOUT)
