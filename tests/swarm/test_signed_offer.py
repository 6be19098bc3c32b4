"""The owner-signed offer (issue 14): a pointer of ``swarm_min_bytes`` or more names its torrent's
info-hashes under the owner's signature, and a fetcher refuses an offer of any other torrent before it
asks for a piece, then completes from an honest seeder by the signed info-hash. Real libtorrent
sessions (one ``SwarmPlane`` each) on 127.0.0.2-4, port 0; the offers come from a client in the test."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest

from statebus.blobs import BlobPointer, BlobStore
from statebus.config import Settings
from statebus.errors import BadBlob, NotFound, SwarmFailed
from statebus.federation.swarm import SwarmPlane
from statebus.swarm import TorrentMeta, TorrentRef, make_torrent, signed_pointer

pytestmark = pytest.mark.anyio

MB = 1 << 20


class Offers:
    """Another node's swarm route as the test makes it answer: one offer per blob hash."""

    def __init__(self) -> None:
        self.offers: dict[str, dict[str, Any]] = {}

    async def swarm_offer(
        self, base: str, key: str, digest: str, seeder: str, *, pattern: str | None = None
    ) -> dict[str, Any]:
        return self.offers[digest]


def _offer(meta: TorrentMeta, *seeders: SwarmPlane) -> dict[str, Any]:
    return {"torrent": base64.b64encode(meta.data).decode(), "seeders": [s.address for s in seeders]}


def _torrent_with_pieces(path: Path, piece_bytes: int) -> TorrentMeta:
    """The blob's torrent as ``make_torrent`` makes it, but with another piece size."""
    size = path.stat().st_size
    ct = lt.create_torrent([lt.create_file_entry(path.name, size)], piece_bytes, 0)
    lt.set_piece_hashes(ct, str(path.parent))
    entry = ct.generate()
    data = bytes(lt.bencode(entry))
    return TorrentMeta.parse(data, hash=path.name, size=size)


@pytest.fixture
async def planes(tmp_path: Path) -> AsyncIterator[list[SwarmPlane]]:
    """An honest origin, a liar and a fetcher, each a started swarm plane with a store of its own."""
    made: list[SwarmPlane] = []
    try:
        for i in range(3):
            root = tmp_path / f"n{i}"
            settings = Settings(data_dir=root, host=f"127.0.0.{i + 2}", swarm=True)
            plane = SwarmPlane(settings, blobs=BlobStore(root / "blobs", max_bytes=64 * MB, fsync=False))
            plane.metadata_timeout = 3.0
            await plane.start()
            made.append(plane)
        yield made
    finally:
        for plane in made:
            await plane.stop()


async def _signed(origin: SwarmPlane, data: bytes) -> BlobPointer:
    info = origin.blobs.put_bytes(data)
    pointer = await asyncio.to_thread(
        signed_pointer, BlobPointer(info.hash, info.size, "image/png"), origin.blobs.path(info.hash)
    )
    await origin.offer(pointer, seeder="")  # the origin seeds it
    return pointer


async def test_a_hostile_offer_is_refused_before_any_piece_and_the_fetch_completes_from_the_owner_torrent(
    planes: list[SwarmPlane], tmp_path: Path
) -> None:
    origin, liar, fetcher = planes
    offers = Offers()
    wanted = os.urandom(MB)
    pointer = await _signed(origin, wanted)
    meta = make_torrent(origin.blobs.path(pointer.hash))
    assert (pointer.infohash_v1, pointer.infohash_v2) == (meta.infohash_v1, meta.infohash_v2)

    # 1. a valid torrent of other bytes under the blob's name and size, seeded by the liar
    fake = tmp_path / "fake" / pointer.hash
    fake.parent.mkdir()
    fake.write_bytes(os.urandom(MB))
    other = make_torrent(fake)
    await liar.session.seed(fake, other)
    offers.offers[pointer.hash] = _offer(other, liar, origin)
    got = await asyncio.wait_for(fetcher.fetch(offers, "http://liar", "/k", pointer, None), 20)
    assert got.hash == pointer.hash and fetcher.blobs.read(pointer.hash) == wanted
    assert fetcher.refused == 1
    assert [t.hash for t in fetcher.session.stats().torrents] == [pointer.hash]  # the signed torrent only

    # 2. the same bytes with another piece size (a torrent of its own, splitting the swarm)
    second = os.urandom(MB)
    pointer2 = await _signed(origin, second)
    liar.blobs.put_bytes(second)
    split = _torrent_with_pieces(liar.blobs.path(pointer2.hash), 512 * 1024)
    assert split.infohash_v1 != pointer2.infohash_v1
    await liar.session.seed(liar.blobs.path(pointer2.hash), split)
    offers.offers[pointer2.hash] = _offer(split, liar, origin)
    await asyncio.wait_for(fetcher.fetch(offers, "http://liar", "/k2", pointer2, None), 20)
    assert fetcher.blobs.read(pointer2.hash) == second and fetcher.refused == 2

    await asyncio.sleep(1.5)  # libtorrent moves its byte counters about once a second
    assert liar.session.stats().uploaded == 0  # not one piece came from the liar's torrents
    assert fetcher.session.stats().downloaded == 2 * MB


async def test_a_hostile_offer_with_no_honest_seeder_fails_with_bad_blob_and_keeps_nothing(
    planes: list[SwarmPlane], tmp_path: Path
) -> None:
    origin, liar, fetcher = planes
    offers = Offers()
    info = origin.blobs.put_bytes(os.urandom(MB))
    pointer = await asyncio.to_thread(
        signed_pointer, BlobPointer(info.hash, info.size, "image/png"), origin.blobs.path(info.hash)
    )
    fake = tmp_path / "fake" / pointer.hash
    fake.parent.mkdir()
    fake.write_bytes(os.urandom(MB))
    other = make_torrent(fake)
    await liar.session.seed(fake, other)
    offers.offers[pointer.hash] = _offer(other)  # no seeder at all: nothing else to try
    with pytest.raises(BadBlob, match="not the one its owner signed"):
        await asyncio.wait_for(fetcher.fetch(offers, "http://liar", "/k", pointer, None), 20)
    offers.offers[pointer.hash] = _offer(other, liar)  # only the liar, who has no signed torrent
    with pytest.raises(SwarmFailed, match="no peer sent the torrent"):
        await asyncio.wait_for(fetcher.fetch(offers, "http://liar", "/k", pointer, None), 20)
    assert (
        fetcher.refused == 2 and not fetcher.blobs.has(pointer.hash) and not fetcher.session.has(pointer.hash)
    )
    assert fetcher.session.stats().downloaded == 0 and not any((fetcher.session.work / "fetch").iterdir())


async def test_a_pointer_without_info_hashes_still_fetches_over_the_offer(planes: list[SwarmPlane]) -> None:
    origin, _, fetcher = planes
    data = os.urandom(MB)
    info = origin.blobs.put_bytes(data)
    old = BlobPointer(info.hash, info.size, "image/png")  # as written before pointers named torrents
    assert BlobPointer.decode(old.encode()) == old and b"infohash" not in old.encode()
    offers = Offers()
    offers.offers[info.hash] = await origin.offer(old, seeder="")
    await asyncio.wait_for(fetcher.fetch(offers, "http://origin", "/k", old, None), 20)
    assert fetcher.blobs.read(info.hash) == data and fetcher.refused == 0


async def test_a_node_whose_torrent_is_not_the_signed_one_offers_none(planes: list[SwarmPlane]) -> None:
    origin = planes[0]
    info = origin.blobs.put_bytes(os.urandom(MB))
    signed_elsewhere = BlobPointer(info.hash, info.size, "image/png", "ab" * 20, "cd" * 32)
    with pytest.raises(NotFound, match="not the one its owner signed"):
        await origin.offer(signed_elsewhere, seeder="")
    assert not origin.session.has(info.hash) and not origin.announced  # nothing seeded or announced


def test_metadata_from_peers_must_have_the_signed_v2_info_hash_too(tmp_path: Path) -> None:
    path = tmp_path / hashlib.sha256(b"x" * MB).hexdigest()
    path.write_bytes(b"x" * MB)
    meta = make_torrent(path)
    TorrentRef(meta.hash, MB, meta.infohash_v1, infohash_v2=meta.infohash_v2).check(meta.info())
    with pytest.raises(BadBlob, match="v2 info-hash"):
        TorrentRef(meta.hash, MB, meta.infohash_v1, infohash_v2="0" * 64).check(meta.info())


def test_a_pointer_names_both_info_hashes_or_neither() -> None:
    digest = hashlib.sha256(b"y").hexdigest()
    signed = BlobPointer(digest, 1, "image/png", "ab" * 20, "cd" * 32)
    assert BlobPointer.decode(signed.encode()) == signed
    assert signed.encode() == (
        b'{"hash":"'
        + digest.encode()
        + b'","infohash_v1":"'
        + b"ab" * 20
        + b'","infohash_v2":"'
        + b"cd" * 32
        + b'","size":1,"type":"image/png"}'
    )
    for bad in (
        b'{"hash":"%s","infohash_v1":"%s","size":1,"type":"a/b"}' % (digest.encode(), b"ab" * 20),
        b'{"hash":"%s","infohash_v1":"%s","infohash_v2":"%s","size":1,"type":"a/b"}'
        % (digest.encode(), b"AB" * 20, b"cd" * 32),
        b'{"hash":"%s","infohash_v1":"%s","infohash_v2":"%s","size":1,"type":"a/b"}'
        % (digest.encode(), b"ab" * 20, b"cd" * 20),
        b'{"hash":"%s","infohash_v1":1,"infohash_v2":"%s","size":1,"type":"a/b"}'
        % (digest.encode(), b"cd" * 32),
    ):
        with pytest.raises(BadBlob):
            BlobPointer.decode(bad)
    long_type = BlobPointer(digest, 1, "t" * 255, "ab" * 20, "cd" * 32)
    assert BlobPointer.decode(long_type.encode()) == long_type
