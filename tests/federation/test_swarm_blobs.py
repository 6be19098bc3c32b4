"""Blobs between real nodes over the swarm (setting ``swarm``): the origin offers a blob's torrent and
its seeders, a follower fetches it over libtorrent checked against the signed pointer, the next
follower is told about the first, and a follower of an origin that does not swarm falls back to HTTP.
Real nodes (uvicorn, port 0, a real DHT) in this process."""

from __future__ import annotations

import hashlib
import os
import re

import httpx
import pytest

from statebus.blobs import BlobPointer
from statebus.server import Cluster, RunningNode
from statebus.swarm import make_torrent

from .support import wait_until

pytestmark = pytest.mark.anyio

SWARM = {"swarm": True, "swarm_min_bytes": 1 << 20}


def _fetched(node: RunningNode, digest: str) -> bool:
    """The store holds the blob *and* the fetcher has counted it (the store has it a loop turn earlier)."""
    blobs = node.federation.blobs
    return _blob_bytes(node, digest) is not None and blobs is not None and blobs.fetched >= 1


def _blob_bytes(node: RunningNode, digest: str) -> bytes | None:
    store = node.node.blobs
    return store.read(digest) if store is not None and store.has(digest) else None


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, flags=re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


async def _put_blob(origin: RunningNode, key: str, data: bytes) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {origin.token}"}, timeout=60) as http:
        r = await http.put(f"{origin.url}{key}", content=data, headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text


async def test_a_blob_travels_over_the_swarm_and_the_next_follower_is_told_of_the_first(
    cluster: Cluster,
) -> None:
    a = await cluster.add("a", **SWARM)
    b = await cluster.add("b", **SWARM)
    c = await cluster.add("c", **SWARM)
    await a.share("/~/files/")
    files = f"/{a.pubkey}/files/"
    data = os.urandom(3 << 20)
    digest = hashlib.sha256(data).hexdigest()
    await _put_blob(a, "/~/files/picture", data)
    await b.follow(files)
    await wait_until(lambda: _fetched(b, digest), timeout=60, what="b has the blob")
    assert _blob_bytes(b, digest) == data
    assert b.federation.blobs is not None and b.federation.blobs.swarmed == 1
    assert a.federation.swarm is not None and b.federation.swarm is not None
    roles = {t.hash: t.role for t in a.federation.swarm.session.stats().torrents}
    assert roles == {digest: "origin"}
    assert [t.role for t in b.federation.swarm.session.stats().torrents] == ["fetched"]  # b serves it now
    swarm = b.federation.swarm
    # libtorrent moves its byte counters on its own tick (once a second, later on a loaded machine)
    await wait_until(lambda: swarm.session.stats().downloaded >= len(data), what="b's byte counters")
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {b.token}"}, timeout=10) as http:
        metrics = (await http.get(f"{b.url}/metrics")).text
    assert _metric(metrics, 'statebus_swarm_torrents{role="fetched"}') == 1
    assert _metric(metrics, "statebus_swarm_fetched_total") == 1
    assert _metric(metrics, "statebus_swarm_downloaded_bytes_total") >= len(data)
    await c.follow(files)
    await wait_until(lambda: _fetched(c, digest), timeout=60, what="c has the blob")
    assert _blob_bytes(c, digest) == data
    assert c.federation.blobs is not None and c.federation.blobs.swarmed == 1
    assert c.directory is not None  # both fetchers announced themselves on the DHT, as the origin did
    # in the background: an announce can end after the fetch that started it (on a slow DHT)
    await wait_until(lambda: a.federation.swarm.announces >= 1, what="a announced the blob")  # type: ignore[union-attr]
    await wait_until(lambda: swarm.announces >= 1, what="b announced the blob")
    seeders = {r.pubkey: r.addr for r in await c.directory.providers(digest)}
    assert seeders[a.pubkey] == a.federation.swarm.address and seeders[b.pubkey] == b.federation.swarm.address
    pointer = BlobPointer.decode(a.node.fetch(files + "picture").value)
    assert (
        a.node.blobs is not None
    )  # the owner signed the blob's torrent in its pointer, and it is the offer's
    meta = make_torrent(a.node.blobs.path(digest))
    assert (pointer.infohash_v1, pointer.infohash_v2) == (meta.infohash_v1, meta.infohash_v2)
    assert b.federation.swarm.refused == 0 and c.federation.swarm.refused == 0
    offer = await a.federation.swarm_offer(pointer, "", None)
    assert offer["seeders"][0] == a.federation.swarm.address
    assert b.federation.swarm.address in offer["seeders"] and c.federation.swarm.address in offer["seeders"]
    # an asker can list only its own host, not send the next fetchers elsewhere
    await a.federation.swarm_offer(pointer, "10.9.9.9:6881", "127.0.0.1")
    await a.federation.swarm_offer(pointer, "127.0.0.1:6999", "127.0.0.1")
    listed = (await a.federation.swarm_offer(pointer, "", None))["seeders"]
    assert "10.9.9.9:6881" not in listed and "127.0.0.1:6999" in listed


async def test_a_follower_of_an_origin_that_does_not_swarm_fetches_over_http_and_the_next_from_it(
    cluster: Cluster,
) -> None:
    a = await cluster.add("a")  # swarm off
    b = await cluster.add("b", **SWARM)
    c = await cluster.add("c", **SWARM)
    await a.share("/~/files/")
    data = os.urandom(2 << 20)
    digest = hashlib.sha256(data).hexdigest()
    await _put_blob(a, "/~/files/picture", data)
    await b.follow(f"/{a.pubkey}/files/")
    await wait_until(lambda: _fetched(b, digest), timeout=60, what="b has the blob")
    assert _blob_bytes(b, digest) == data
    assert b.federation.blobs is not None
    assert b.federation.blobs.fetched == 1 and b.federation.blobs.swarmed == 0
    # b serves what it fetched over HTTP, and says so on the DHT: c, whose origin offers no swarm
    # (404), finds b there alone and fetches from it over the swarm
    assert b.federation.swarm is not None
    await wait_until(lambda: b.federation.swarm.announces >= 1, what="b announced the blob")  # type: ignore[union-attr]
    assert [t.role for t in b.federation.swarm.session.stats().torrents] == ["fetched"]
    await c.follow(f"/{a.pubkey}/files/")
    await wait_until(lambda: _fetched(c, digest), timeout=60, what="c has the blob")
    assert _blob_bytes(c, digest) == data
    assert c.federation.blobs is not None and c.federation.blobs.swarmed == 1
    pointer = BlobPointer.decode(c.node.fetch(f"/{a.pubkey}/files/picture").value)
    assert pointer.infohash_v1  # an origin that does not swarm signs the torrent too: c took that one


async def test_a_small_blob_asked_for_often_becomes_a_torrent_and_the_next_follower_swarms_it(
    cluster: Cluster,
) -> None:
    hot = {**SWARM, "swarm_hot_requests": 2}  # more than 2 requests a minute: hot
    a = await cluster.add("a", **hot)
    await a.share("/~/files/")
    files = f"/{a.pubkey}/files/"
    data = os.urandom(300_000)  # a blob (over blob_threshold_bytes), far under swarm_min_bytes
    digest = hashlib.sha256(data).hexdigest()
    await _put_blob(a, "/~/files/small", data)
    followers = [await cluster.add(name, **hot) for name in ("b", "c", "d")]
    for f in followers:
        await f.follow(files)
        await wait_until(
            lambda f=f: _fetched(f, digest), timeout=60, what=f"{f.identity.pubkey} has the blob"
        )
        assert _blob_bytes(f, digest) == data
    swarmed = [f.federation.blobs.swarmed for f in followers if f.federation.blobs is not None]
    assert swarmed == [0, 0, 1]  # the 3rd request made it hot: d was sent to the swarm
    assert a.federation.swarm is not None and a.federation.swarm.hot == {digest}
    assert [t.hash for t in a.federation.swarm.session.stats().torrents] == [digest]
    d = followers[2]
    assert d.directory is not None and d.federation.swarm is not None
    # a (once the blob is hot) and d (as its fetch starts) announce in the background
    await wait_until(lambda: a.federation.swarm.announces >= 1, what="a announced the blob")  # type: ignore[union-attr]
    await wait_until(lambda: d.federation.swarm.announces >= 1, what="d announced the blob")  # type: ignore[union-attr]
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {a.token}"}, timeout=10) as http:
        metrics = (await http.get(f"{a.url}/metrics")).text
    assert _metric(metrics, "statebus_swarm_hot_blobs") == 1
    assert _metric(metrics, "statebus_swarm_announces_total") >= 1
    seeders = {r.pubkey for r in await d.directory.providers(digest)}  # the DHT says so too
    assert {a.pubkey, d.pubkey} <= seeders
    # a peer that does not swarm (no seeder address) is still served the bytes of a hot blob
    pointer = BlobPointer.decode(a.node.fetch(files + "small").value)
    assert not pointer.infohash_v1  # made a torrent later: its fetchers rely on the signed sha256
    got = b"".join([c async for c in d.federation._own_client.blob(a.url, files + "small", pointer.hash)])
    assert got == data
