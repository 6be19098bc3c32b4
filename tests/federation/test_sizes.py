"""Federation has no size cliffs: a follower of more than 16 MiB of ops syncs (anti-entropy is
paged), and a large binary value travels as a blob, fetched apart, verified against its signed
pointer, without holding up the ops behind it. Two real nodes (uvicorn, port 0, a real DHT)."""

from __future__ import annotations

import hashlib
import os
import time

import httpx
import pytest

from statebus.blobs import BLOB_TYPE, BlobPointer
from statebus.server import Cluster, RunningNode
from statebus.swarm import make_torrent

from .support import has, wait_until

pytestmark = pytest.mark.anyio


def _blob_bytes(node: RunningNode, digest: str) -> bytes | None:
    store = node.node.blobs
    return store.read(digest) if store is not None and store.has(digest) else None


async def test_a_new_follower_of_more_than_16_mib_of_ops_syncs_fully(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    await a.share("/~/big/")
    for i in range(20):  # 20 × 0.9 MB JSON values: 18 MB of ops, over the 16 MiB message cap
        a.node.bus.save(f"/~/big/{i}", {"i": i, "fill": f"{i:02d}" * 450_000})
    await a.node.save("/~/big/last", "done")
    big = f"/{a.pubkey}/big/"
    await b.follow(big)
    follower = next(iter(b.federation.followers.values()))
    keys = [f"{big}{i}" for i in range(20)] + [big + "last"]
    await wait_until(lambda: all(has(b, k) for k in keys), timeout=60, what=f"every key ({follower.reason})")
    for i in range(20):
        assert has(b, f"{big}{i}", {"i": i, "fill": f"{i:02d}" * 450_000})
    await wait_until(lambda: follower.status == "live", what="live")
    assert follower.synced_ops >= 21 and follower.streamed_ops == 0  # all by paged anti-entropy
    assert follower.sync_bytes > 18_000_000


async def test_a_50_mb_blob_does_not_hold_up_a_small_write_and_arrives_verified(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    await a.share("/~/files/")
    files = f"/{a.pubkey}/files/"
    await a.node.save("/~/files/hello", "first")
    await b.follow(files)
    follower = next(iter(b.federation.followers.values()))
    await wait_until(lambda: follower.status == "live", what="live")
    data = os.urandom(50 * 1024 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {a.token}"}, timeout=60) as http:
        r = await http.put(f"{a.url}/~/files/movie", content=data, headers={"content-type": "video/mp4"})
        assert r.status_code == 200, r.text
        r = await http.put(f"{a.url}/~/files/note", json={"after": "the movie"})
        assert r.status_code == 200
    written = time.monotonic()
    await wait_until(
        lambda: has(b, files + "note", {"after": "the movie"}), timeout=10, what="the small write"
    )
    print(f"small write on the follower {time.monotonic() - written:.3f} s after its ack")
    movie = b.node.fetch_or_none(files + "movie")
    assert movie is not None and movie.content_type == BLOB_TYPE
    assert a.node.blobs is not None  # the signed pointer names the blob's torrent (swarm_min_bytes or more)
    torrent = make_torrent(a.node.blobs.path(digest))
    signed = BlobPointer(digest, len(data), "video/mp4", torrent.infohash_v1, torrent.infohash_v2)
    assert BlobPointer.decode(movie.value) == signed
    await wait_until(lambda: _blob_bytes(b, digest) is not None, timeout=60, what="the blob's bytes")
    assert _blob_bytes(b, digest) == data
    assert b.federation.ingest.usage(a.pubkey) >= len(data)  # counted against a's quota on b
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {b.token}"}, timeout=60) as http:
        r = await http.get(f"{b.url}{files}movie", headers={"range": "bytes=1000-1009"})
        assert r.status_code == 206 and r.content == data[1000:1010]
        assert r.headers["content-type"] == "video/mp4"


async def test_a_peer_that_serves_a_tampered_blob_is_refused(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    await a.share("/~/files/")
    files = f"/{a.pubkey}/files/"
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {a.token}"}) as http:
        r = await http.put(f"{a.url}/~/files/pic", content=data, headers={"content-type": "image/png"})
        assert r.status_code == 200
    store = a.node.blobs
    assert store is not None
    tampered = bytearray(data)
    tampered[12345] ^= 0xFF
    store.path(digest).write_bytes(bytes(tampered))  # a's disk (or a relay) now serves other bytes
    await b.follow(files)
    await wait_until(lambda: has(b, files + "pic"), what="the pointer")
    fetcher = b.federation.blobs
    assert fetcher is not None
    await wait_until(lambda: digest in fetcher.failures, what="the refusal")
    assert "bad_blob" in fetcher.failures[digest] and _blob_bytes(b, digest) is None
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {b.token}"}) as http:
        r = await http.get(f"{b.url}{files}pic")
        assert r.status_code == 503 and r.json()["error"] == "blob_pending"
    follower = next(iter(b.federation.followers.values()))
    await follower.persist(force=True)
    assert any("bad_blob" in why for why in follower.state()["blob_failures"])  # type: ignore[union-attr]
    store.path(digest).write_bytes(data)  # the peer serves the right bytes again: the retry takes them
    await wait_until(lambda: _blob_bytes(b, digest) == data, what="the retried fetch")
