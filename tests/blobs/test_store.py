"""The blob store: content-addressed, whole or absent, capped before bytes are kept, quota'd, gc'd."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from statebus.access.limits import QuotaTracker
from statebus.blobs import BlobStore, check_hash
from statebus.errors import BadBlob, InvalidValue, NotFound, QuotaExceeded, TooLarge

pytestmark = pytest.mark.anyio

NS = "a" * 52


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "tmp").iterdir())


async def test_put_stores_by_sha256_and_reads_ranges(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs", max_bytes=1 << 20)
    data = os.urandom(200_000)
    info = await store.put(chunks(data[:70_000], data[70_000:]), size=len(data))
    assert info.hash == hashlib.sha256(data).hexdigest() and info.size == len(data)
    assert store.has(info.hash) and store.size(info.hash) == len(data)
    assert store.path(info.hash) == tmp_path / "blobs" / "sha256" / info.hash[:2] / info.hash
    assert store.read(info.hash, 100, 164) == data[100:164]
    with store.open(info.hash) as f:
        f.seek(len(data) - 5)
        assert f.read() == data[-5:]
    assert list(store.hashes()) == [info.hash] and leftovers(tmp_path / "blobs") == []
    assert store.put_bytes(data).hash == info.hash  # the same bytes: the same blob, stored once


async def test_a_declared_size_over_the_cap_is_refused_before_any_byte_is_read(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "b", max_bytes=1000)
    read: list[int] = []

    async def watched() -> AsyncIterator[bytes]:
        read.append(1)
        yield b"x"

    with pytest.raises(TooLarge):
        await store.put(watched(), size=1001)
    assert read == [] and list(store.hashes()) == []


async def test_a_stream_past_the_cap_is_cut_and_nothing_is_kept(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "b", max_bytes=1000)
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        while True:
            sent.append(400)
            yield b"y" * 400

    with pytest.raises(TooLarge):
        await store.put(endless())
    assert sum(sent) == 1200  # cut at the chunk that passed the cap
    assert list(store.hashes()) == [] and leftovers(tmp_path / "b") == []
    with pytest.raises(TooLarge):
        await store.put(chunks(b"z" * 600), limit=500)


async def test_bytes_that_do_not_match_the_expected_hash_or_size_are_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "b", max_bytes=1 << 20)
    good = hashlib.sha256(b"good").hexdigest()
    with pytest.raises(BadBlob):
        await store.put(chunks(b"evil"), expect=good)
    with pytest.raises(BadBlob):
        await store.put(chunks(b"shor"), size=10)
    with pytest.raises(BadBlob):
        await store.put(chunks(b"longer than four"), size=4)
    with pytest.raises(BadBlob):
        store.put_bytes(b"evil", expect=good)
    assert list(store.hashes()) == [] and leftovers(tmp_path / "b") == []
    assert (await store.put(chunks(b"go", b"od"), expect=good)).hash == good


async def test_hashes_are_checked_so_no_path_escapes_the_store(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "b", max_bytes=10)
    for bad in ["../../etc/passwd", "A" * 64, "a" * 63, ""]:
        with pytest.raises(InvalidValue):
            store.has(bad)
        with pytest.raises(InvalidValue):
            check_hash(bad)
    with pytest.raises(NotFound):
        store.open("0" * 64)
    assert store.size("0" * 64) is None


async def test_quota_is_charged_once_per_namespace_and_released_by_gc(tmp_path: Path) -> None:
    quota = QuotaTracker(limit=1500)
    store = BlobStore(tmp_path / "b", max_bytes=1 << 20, quota=quota)
    one = await store.put(chunks(b"1" * 1000), namespace=NS)
    await store.put(chunks(b"1" * 1000), namespace=NS)  # already charged to NS: no second charge
    assert quota.used(NS) == 1000 and store.usage() == {NS: 1000}
    with pytest.raises(QuotaExceeded):
        await store.put(chunks(b"2" * 1000), namespace=NS)
    assert quota.used(NS) == 1000 and len(list(store.hashes())) == 1  # refused: nothing kept
    assert store.gc(set(), grace=0.0) == [one]
    assert quota.used(NS) == 0 and list(store.hashes()) == [] and store.usage() == {}


async def test_gc_keeps_live_and_young_blobs(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "b", max_bytes=1 << 20)
    live = store.put_bytes(b"live")
    young = store.put_bytes(b"young")
    dead = store.put_bytes(b"dead")
    old = os.path.getmtime(store.path(dead.hash)) - 120
    for info in (live, dead):
        os.utime(store.path(info.hash), (old, old))
    assert store.gc({live.hash}, grace=60.0) == [dead]
    assert store.has(live.hash) and store.has(young.hash) and not store.has(dead.hash)


async def test_a_crash_mid_put_leaves_no_blob_and_stale_temp_files_are_swept(tmp_path: Path) -> None:
    root = tmp_path / "b"
    BlobStore(root, max_bytes=10)
    stale = root / "tmp" / "put-dead"
    stale.write_bytes(b"half a blob")
    os.utime(stale, (1, 1))
    fresh = root / "tmp" / "put-live"
    fresh.write_bytes(b"being written")
    store = BlobStore(root, max_bytes=10)
    assert leftovers(root) == ["put-live"] and list(store.hashes()) == []


def test_adopt_links_a_finished_download_in_after_checking_it(tmp_path: Path) -> None:
    quota = QuotaTracker(limit=1500)
    store = BlobStore(tmp_path / "blobs", max_bytes=1 << 20, quota=quota, fsync=False)
    data = os.urandom(1000)
    digest = hashlib.sha256(data).hexdigest()
    download = tmp_path / "download"
    download.write_bytes(data)
    with pytest.raises(BadBlob):
        store.adopt(download, expect="0" * 64, namespace=NS)
    assert not store.has("0" * 64) and not store.has(digest) and quota.used(NS) == 0
    info = store.adopt(download, expect=digest, namespace=NS)
    assert info.hash == digest and store.read(digest) == data and quota.used(NS) == 1000
    assert download.read_bytes() == data  # left in place: the swarm goes on serving it
    assert os.stat(download).st_ino == os.stat(store.path(digest)).st_ino  # a link, not a copy
    other = tmp_path / "other"
    other.write_bytes(os.urandom(1000))
    with pytest.raises(QuotaExceeded):
        store.adopt(other, expect=hashlib.sha256(other.read_bytes()).hexdigest(), namespace=NS)
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
