"""Peers through our own DHT (issue 14 item 3): seeders announce signed provider records on a real
kademlia DHT (loopback, port 0), a fetcher that knows only the DHT finds them and completes over real
libtorrent sessions, records expire, and a holder's provider storage refuses bad records and is bounded."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kademlia.node import Node

from statebus.blobs import BlobPointer, BlobStore
from statebus.config import Settings
from statebus.errors import BadBlob, BadSignature, InvalidValue, NotFound, QuotaExceeded, StatebusError
from statebus.federation.dht import KademliaDirectory
from statebus.federation.dht_provider import (
    MAX_PROVIDER_TTL,
    ProviderLimits,
    ProviderStorage,
    make_provider,
    provider_key,
)
from statebus.federation.swarm import SwarmPlane
from statebus.swarm import TorrentRef

from .conftest import MakePeer

pytestmark = pytest.mark.anyio

SECRET = b"provider-test-secret"
DHT = "prov"


class Clock:
    """The DHT's unix clock, moved by the test (records carry signed expiries)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Member:
    directory: KademliaDirectory
    plane: SwarmPlane | None


async def _wait(predicate: object, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


@pytest.fixture
async def members(tmp_path: Path) -> AsyncIterator[tuple[Clock, list[Member]]]:
    """5 DHT nodes on 127.0.0.2-6 (ksize 3, so lookups take hops); the first three have a swarm on the
    same address (a holder takes a provider record only from the host it names)."""
    clock = Clock()
    made: list[Member] = []
    bootstrap: list[tuple[str, int]] = []
    try:
        for i in range(5):
            host = f"127.0.0.{i + 2}"
            directory = KademliaDirectory(
                os.urandom(32), DHT, SECRET, interface=host, ksize=3, wait_timeout=0.5, clock=clock
            )
            await directory.start(bootstrap)
            bootstrap = bootstrap or [(host, directory.port)]
            plane = None
            if i < 3:
                root = tmp_path / f"n{i}"
                settings = Settings(
                    data_dir=root, host=f"127.0.0.{i + 2}", swarm=True, swarm_announce_ttl=120
                )
                store = BlobStore(root / "blobs", max_bytes=64 << 20, fsync=False)
                plane = SwarmPlane(settings, blobs=store, directory=directory)
                await plane.start()
            made.append(Member(directory, plane))
        yield clock, made
    finally:
        for m in made:
            if m.plane is not None:
                await m.plane.stop()
            await m.directory.stop()


async def test_a_fetcher_that_knows_only_the_dht_finds_seeders_and_completes(
    members: tuple[Clock, list[Member]],
) -> None:
    clock, (origin, first, second, _, asker) = members
    assert origin.plane is not None and first.plane is not None and second.plane is not None
    data = os.urandom(2 << 20)
    info = origin.plane.blobs.put_bytes(data)
    pointer = BlobPointer(info.hash, info.size, "image/png")
    with pytest.raises(NotFound):  # nobody seeds it yet
        await first.plane.fetch_from_dht(pointer, None)
    await origin.plane.offer(pointer, seeder="")  # the origin seeds it and announces itself
    await _wait(lambda: origin.plane.announces == 1, "the origin announced")  # type: ignore[union-attr]

    got = await asyncio.wait_for(first.plane.fetch_from_dht(pointer, None), 30)
    assert got.hash == info.hash and first.plane.blobs.read(info.hash) == data
    assert origin.plane.session.stats().uploaded >= len(data) // 2  # it came from the origin
    await _wait(lambda: first.plane.announces >= 1, "the fetcher announced itself")  # type: ignore[union-attr]

    seeders = await asker.directory.providers(info.hash)  # a node with no swarm asks the DHT
    assert {r.pubkey for r in seeders} == {origin.directory.pubkey, first.directory.pubkey}
    assert {r.addr for r in seeders} == {origin.plane.address, first.plane.address}
    got = await asyncio.wait_for(second.plane.fetch_from_dht(pointer, None), 30)
    assert second.plane.blobs.read(info.hash) == data
    assert second.plane.session.stats().torrents[0].role == "fetched"

    assert sum(len(m.directory.provider_storage) for m in members[1]) >= 4  # 2 records on 3 closest, and here
    clock.now += 121  # every record's signed expiry passes; nobody re-announced in time
    assert await asker.directory.providers(info.hash) == []
    for m in members[1]:
        assert len(m.directory.provider_storage) == 0


async def test_a_holder_refuses_a_provider_record_that_names_another_host(
    members: tuple[Clock, list[Member]],
) -> None:
    clock, (origin, _, _, holder, _) = members
    digest = hashlib.sha256(b"x").hexdigest()
    key = provider_key(DHT, digest)
    liar = make_provider(
        os.urandom(32), digest, "ab" * 20, "127.0.0.9:6881", expires=int(clock()) + 60, dht_name=DHT
    )
    protocol = origin.directory.protocol
    target = holder.directory
    node = Node(target.protocol.source_node.id, target.interface, target.port)
    ok, accepted = await protocol.call_add_provider(node, key, liar)  # sent from 127.0.0.2, names .9
    assert ok and accepted is False
    honest = make_provider(
        os.urandom(32), digest, "ab" * 20, "127.0.0.2:6881", expires=int(clock()) + 60, dht_name=DHT
    )
    ok, accepted = await protocol.call_add_provider(node, key, honest)
    assert ok and accepted is True
    assert [r.addr for r in holder.directory.provider_storage.records(key)] == ["127.0.0.2:6881"]


def _record(seed: bytes, digest: str, now: float, *, ttl: int = 60, addr: str = "127.0.0.1:7000") -> bytes:
    return make_provider(seed, digest, "cd" * 20, addr, expires=int(now) + ttl, dht_name=DHT)


def test_bad_provider_records_are_refused() -> None:
    clock = Clock()
    storage = ProviderStorage(DHT, clock=clock)
    digest = hashlib.sha256(b"y").hexdigest()
    key = provider_key(DHT, digest)
    seed = os.urandom(32)
    good = _record(seed, digest, clock())
    forged = good[:10] + bytes([good[10] ^ 1]) + good[11:]
    cases: list[tuple[object, bytes, type[StatebusError]]] = [
        (forged, key, BadSignature),
        (good, provider_key(DHT, "0" * 64), InvalidValue),  # under another blob's key
        (good, provider_key("other", digest), InvalidValue),
        (_record(seed, digest, clock() - 120), key, InvalidValue),  # expired
        (_record(seed, digest, clock(), ttl=MAX_PROVIDER_TTL + 60), key, InvalidValue),  # lives too long
        (good[:64] + b'{"not":"a record"}', key, InvalidValue),
        ("text", key, InvalidValue),
    ]
    for value, under, error in cases:
        with pytest.raises(error):
            storage.store(under, value, "127.0.0.1", "127.0.0.1")
    with pytest.raises(InvalidValue):  # a STORE from another address than the record names
        storage.store(key, good, "127.0.0.5", "127.0.0.5")
    with pytest.raises(InvalidValue):
        make_provider(seed, digest, "cd" * 20, "example.org:80", expires=int(clock()) + 60, dht_name=DHT)
    assert len(storage) == 0 and storage.rejected == len(cases) + 1
    storage.store(key, good, "127.0.0.1", "127.0.0.1")
    with pytest.raises(InvalidValue):  # an older record of the same publisher does not roll it back
        storage.store(key, _record(seed, digest, clock(), ttl=30), "127.0.0.1", "127.0.0.1")
    storage.store(key, _record(seed, digest, clock(), ttl=90), "127.0.0.1", "127.0.0.1")
    assert len(storage) == 1 and storage.records(key)[0].expires == int(clock()) + 90


def test_provider_storage_is_bounded_per_blob_publisher_source_and_in_all() -> None:
    clock = Clock()
    limits = ProviderLimits(max_records=6, max_per_blob=3, max_per_publisher=2, max_per_source=1)
    storage = ProviderStorage(DHT, clock=clock, limits=limits)
    blobs = [hashlib.sha256(bytes([i])).hexdigest() for i in range(8)]
    for i in range(3):
        storage.store(provider_key(DHT, blobs[0]), _record(os.urandom(32), blobs[0], clock()), f"10.0.0.{i}")
    with pytest.raises(QuotaExceeded):  # a 4th seeder of one blob
        storage.store(provider_key(DHT, blobs[0]), _record(os.urandom(32), blobs[0], clock()), "10.0.0.9")
    one = os.urandom(32)
    storage.store(provider_key(DHT, blobs[1]), _record(one, blobs[1], clock()), "10.0.1.1")
    storage.store(provider_key(DHT, blobs[2]), _record(one, blobs[2], clock()), "10.0.1.2")
    with pytest.raises(QuotaExceeded):  # a 3rd record of one publisher key
        storage.store(provider_key(DHT, blobs[3]), _record(one, blobs[3], clock()), "10.0.1.3")
    storage.store(provider_key(DHT, blobs[3]), _record(os.urandom(32), blobs[3], clock()), "10.0.2.1")
    with pytest.raises(QuotaExceeded):  # a 2nd record from one source address
        storage.store(provider_key(DHT, blobs[4]), _record(os.urandom(32), blobs[4], clock()), "10.0.2.1")
    assert len(storage) == 6 and storage.refused_full == 3
    # full: a new record displaces the one that expires first
    storage.store(
        provider_key(DHT, blobs[7]), _record(os.urandom(32), blobs[7], clock(), ttl=600), "10.0.3.1"
    )
    assert len(storage) == 6
    assert storage.records(provider_key(DHT, blobs[7]))
    clock.now += 61
    storage.cull()
    assert len(storage) == 1  # only the 600 s record is left


async def test_metadata_from_peers_that_is_not_the_blob_is_refused_before_any_piece(
    make_peer: MakePeer,
) -> None:
    """A provider record only names an info-hash: a liar that announces its own torrent under another
    blob's sha256 gets its metadata refused (``TorrentRef.check``) before a piece is asked for."""
    liar, fetcher = await make_peer(), await make_peer()
    wanted, other = os.urandom(1 << 20), os.urandom(1 << 20)
    info = liar.store.put_bytes(other)
    meta = await liar.swarm.seed(liar.store.path(info.hash))
    digest = hashlib.sha256(wanted).hexdigest()
    refs = (
        TorrentRef(digest, len(wanted), meta.infohash_v1),  # another blob's torrent
        TorrentRef(info.hash, len(other) - 1, meta.infohash_v1),  # the right name, the wrong size
        TorrentRef(info.hash, 0, meta.infohash_v1, max_size=1000),  # by sha256 alone: over the limit
    )
    for ref in refs:
        fetch = asyncio.ensure_future(fetcher.swarm.fetch(ref, [liar.swarm.address], fetcher.store))
        await asyncio.sleep(0.05)
        time.sleep(1.0)  # the loop (which checks the metadata) is held; libtorrent's threads run on
        with pytest.raises(BadBlob):
            await asyncio.wait_for(fetch, 20)
        assert not fetcher.store.has(ref.hash) and not fetcher.swarm.has(ref.hash)
    assert fetcher.swarm.stats().downloaded == 0
    assert not any((fetcher.swarm.work / "fetch").iterdir())
    got = await asyncio.wait_for(  # by sha256 alone within the limit: the size comes from the torrent
        fetcher.swarm.fetch(TorrentRef(info.hash, 0, meta.infohash_v1), [liar.swarm.address], fetcher.store),
        20,
    )
    assert got.size == len(other) and fetcher.store.read(info.hash) == other
