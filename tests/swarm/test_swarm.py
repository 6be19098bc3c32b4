"""Blobs over the swarm between real libtorrent sessions on loopback: 1 seeder and 3 fetchers, a peer
serving tampered pieces, a fetcher that leaves, a blob over quota, public discovery off."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import libtorrent as lt
import pytest

from statebus.errors import BadBlob, QuotaExceeded
from statebus.swarm import TorrentMeta, make_torrent, session_settings

from .conftest import MakePeer, Peer

pytestmark = pytest.mark.anyio

NS = "a" * 43


async def origin_with(make_peer: MakePeer, data: bytes) -> tuple[Peer, TorrentMeta]:
    origin = await make_peer()
    info = origin.store.put_bytes(data)
    meta = await origin.swarm.seed(origin.store.path(info.hash))
    return origin, meta


async def test_public_discovery_is_off_in_the_live_session(make_peer: MakePeer) -> None:
    peer = await make_peer()
    live = peer.swarm.settings()
    # libtorrent's defaults turn every one of these on and listen on 0.0.0.0:6881
    defaults = lt.default_settings()
    assert defaults["enable_dht"] and defaults["enable_lsd"] and defaults["enable_upnp"]
    for name in ("enable_dht", "enable_lsd", "enable_upnp", "enable_natpmp", "enable_ip_notifier"):
        assert live[name] is False, name
    assert live["dht_bootstrap_nodes"] == ""
    assert live["listen_interfaces"] == "127.0.0.2:0"
    assert live["outgoing_interfaces"] == "127.0.0.2"
    assert session_settings("127.0.0.2")["enable_dht"] is False
    data = os.urandom(300_000)
    _, meta = await origin_with(make_peer, data)
    torrent = lt.bdecode(meta.data)
    assert not {b"announce", b"announce-list", b"url-list", b"nodes"} & set(torrent)
    assert meta.info().info_hashes().has_v1() and meta.info().info_hashes().has_v2()


async def test_a_torrent_is_deterministic_and_names_its_blob(tmp_path: Path) -> None:
    import hashlib

    data = os.urandom(1 << 20)
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / digest).write_bytes(data)
    one, two = make_torrent(tmp_path / digest), make_torrent(tmp_path / digest)
    assert one == two
    assert TorrentMeta.parse(one.data, hash=digest, size=len(data)) == one
    with pytest.raises(BadBlob):
        TorrentMeta.parse(one.data, hash="0" * 64, size=len(data))
    with pytest.raises(BadBlob):
        TorrentMeta.parse(b"not bencoded", hash=digest, size=len(data))


@pytest.mark.parametrize("size", [1 << 20, 10 << 20])
async def test_one_seeder_and_three_fetchers(make_peer: MakePeer, size: int) -> None:
    data = os.urandom(size)
    origin, meta = await origin_with(make_peer, data)
    fetchers = [await make_peer() for _ in range(3)]
    everyone = [origin.swarm.address, *(f.swarm.address for f in fetchers)]
    seen: list[tuple[int, int, int]] = []
    infos = await asyncio.wait_for(
        asyncio.gather(
            *(
                f.swarm.fetch(meta, everyone, f.store, namespace=NS, progress=lambda *a: seen.append(a))
                for f in fetchers
            )
        ),
        60,
    )
    for f, info in zip(fetchers, infos, strict=True):
        assert info.hash == meta.hash and info.size == size
        assert f.store.read(meta.hash) == data
        assert f.swarm.has(meta.hash)  # everyone who fetched, serves
    assert seen[-1][0] == size and all(done <= total for done, total, _ in seen)
    up = origin.swarm.stats().uploaded
    assert up <= 3 * size + (1 << 20)  # at most one copy per fetcher (and a few pieces twice)
    if size >= 10 << 20:  # the fetchers served each other part of it (on 1 MB the origin may win every race)
        assert up < 3 * size
        assert sum(f.swarm.stats().uploaded for f in fetchers) > 0


async def test_a_peer_serving_tampered_pieces_is_banned_and_the_blob_completes(make_peer: MakePeer) -> None:
    data = os.urandom(4 << 20)
    origin, meta = await origin_with(make_peer, data)
    # a liar: seeds the blob (checked whole), then its bytes are flipped on disk under libtorrent
    liar = await make_peer()
    folder = liar.swarm.work / "liar"
    folder.mkdir()
    (folder / meta.hash).write_bytes(data)
    await liar.swarm.seed(folder / meta.hash, meta, check=True)
    handle = liar.swarm._torrents[meta.hash].handle
    for _ in range(100):
        if handle.status().is_seeding:
            break
        await asyncio.sleep(0.05)
    assert handle.status().is_seeding
    with (folder / meta.hash).open("r+b") as f:
        for i in range(0, len(data), 16 * 1024):
            f.seek(i)
            f.write(bytes([data[i] ^ 0xFF]))
    # the honest origin is slow, so the liar gets to serve pieces first
    origin.swarm._torrents[meta.hash].handle.set_upload_limit(2 << 20)
    fetcher = await make_peer()
    info = await asyncio.wait_for(
        fetcher.swarm.fetch(meta, [liar.swarm.address, origin.swarm.address], fetcher.store), 60
    )
    assert fetcher.store.read(info.hash) == data
    assert fetcher.swarm.hash_failures > 0
    assert fetcher.swarm.bans > 0
    assert liar.swarm.address not in fetcher.swarm.peers_of(meta.hash)


async def test_a_fetcher_that_leaves_mid_transfer_does_not_stall_the_others(make_peer: MakePeer) -> None:
    data = os.urandom(8 << 20)
    origin, meta = await origin_with(make_peer, data)
    origin.swarm._torrents[meta.hash].handle.set_upload_limit(8 << 20)  # about a second per copy
    fetchers = [await make_peer() for _ in range(3)]
    everyone = [origin.swarm.address, *(f.swarm.address for f in fetchers)]
    leaver = fetchers[0]
    halfway = asyncio.Event()

    def watch(done: int, total: int, peers: int) -> None:
        if done > total // 4:
            halfway.set()

    gone = asyncio.ensure_future(leaver.swarm.fetch(meta, everyone, leaver.store, progress=watch))
    stayers = asyncio.gather(*(f.swarm.fetch(meta, everyone, f.store) for f in fetchers[1:]))
    await asyncio.wait_for(halfway.wait(), 30)
    await leaver.swarm.close()
    with pytest.raises(Exception):  # noqa: B017 - the leaver's own fetch fails, any way it likes
        await gone
    await asyncio.wait_for(stayers, 60)
    for f in fetchers[1:]:
        assert f.store.read(meta.hash) == data
    assert not leaver.store.has(meta.hash)


async def test_a_blob_over_quota_is_refused_before_its_bytes_are_written(make_peer: MakePeer) -> None:
    data = os.urandom(2 << 20)
    origin, meta = await origin_with(make_peer, data)
    fetcher = await make_peer(quota=1 << 20)
    with pytest.raises(QuotaExceeded):
        await fetcher.swarm.fetch(meta, [origin.swarm.address], fetcher.store, namespace=NS)
    assert not fetcher.swarm.has(meta.hash)
    assert not (fetcher.swarm.work / "fetch" / meta.hash).exists()
    assert not fetcher.store.has(meta.hash)
    await asyncio.sleep(0.6)
    assert origin.swarm.stats().uploaded == 0


async def test_a_fetched_blob_stops_seeding_when_its_time_is_up(make_peer: MakePeer) -> None:
    data = os.urandom(1 << 20)
    origin, meta = await origin_with(make_peer, data)
    fetcher = await make_peer(seed_seconds=0.2)
    await fetcher.swarm.fetch(meta, [origin.swarm.address], fetcher.store)
    assert fetcher.swarm.has(meta.hash)
    for _ in range(40):
        if not fetcher.swarm.has(meta.hash):
            break
        await asyncio.sleep(0.1)
    assert not fetcher.swarm.has(meta.hash)
    assert fetcher.store.read(meta.hash) == data  # the store keeps it
