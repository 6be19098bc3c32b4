"""Blobs sealed at rest (statebus/blobs/sealed.py): range reads open only the chunks they touch, nothing
on disk names or shows the content, and a changed, cut or swapped file is refused."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from statebus.blobs import BlobSealer, BlobStore
from statebus.blobs.sealed import CHUNK, HEADER, plain_size, sealed_size
from statebus.errors import BadBlob, NotFound

PLANT = b"planted-blob-bytes-7f3a"
SEALER = BlobSealer(b"s" * 32, b"n" * 32)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sealed_store(root: Path) -> BlobStore:
    return BlobStore(root, max_bytes=1 << 30, fsync=False, sealer=SEALER)


def sealed_file(root: Path, hash: str) -> Path:
    name = SEALER.name(hash)
    return root / "sealed" / name[:2] / name


def everything_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_sealed_sizes_invert() -> None:
    for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17]:
        assert plain_size(sealed_size(size)) == size


def test_range_reads_of_a_sealed_blob_match_the_plaintext(tmp_path: Path) -> None:
    rng = random.Random(7)
    data = PLANT + os.urandom(3 * CHUNK + 1234) + PLANT
    store = sealed_store(tmp_path / "blobs")
    info = store.put_bytes(data)
    assert info.hash == hashlib.sha256(data).hexdigest() and store.size(info.hash) == len(data)
    for _ in range(200):
        start = rng.randrange(len(data))
        end = rng.randrange(start, len(data) + 10)
        assert store.read(info.hash, start, end) == data[start:end]
    for start in (CHUNK - 3, 2 * CHUNK, len(data) - 1, len(data), len(data) + 5):  # chunk edges, the end
        assert store.read(info.hash, start, start + 7) == data[start : start + 7]
    with store.open(info.hash) as f:  # the HTTP range path: seek, then read in pieces
        f.seek(CHUNK + 5)
        assert f.read(10) == data[CHUNK + 5 : CHUNK + 15]
        assert f.tell() == CHUNK + 15
    assert store.read(info.hash) == data
    assert list(store.hashes()) == [info.hash]


def test_nothing_on_disk_names_or_shows_a_sealed_blob(tmp_path: Path) -> None:
    sealed, plain = (
        sealed_store(tmp_path / "sealed"),
        BlobStore(tmp_path / "plain", max_bytes=1 << 30, fsync=False),
    )
    data = PLANT * 5000
    h = sealed.put_bytes(data).hash
    plain.put_bytes(data)
    names = [p.name for p in (tmp_path / "sealed").rglob("*")]
    assert h not in " ".join(names) and h[:2] not in names
    assert PLANT not in everything_under(tmp_path / "sealed")
    assert PLANT in everything_under(tmp_path / "plain")  # the control: the same put, unsealed, shows it
    assert h in [p.name for p in (tmp_path / "plain").rglob("*")]
    with pytest.raises(NotFound):
        sealed.path(h)  # no plaintext file to hand to the swarm


@pytest.mark.anyio
async def test_streamed_puts_and_adopt_are_sealed_too(tmp_path: Path) -> None:
    store = sealed_store(tmp_path / "blobs")
    data = PLANT + os.urandom(2 * CHUNK) + PLANT

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 5000):
            yield data[i : i + 5000]

    info = await store.put(chunks(), size=len(data))
    assert store.read(info.hash) == data
    src = tmp_path / "download"
    other = PLANT * 3 + b"adopted"
    src.write_bytes(other)
    adopted = store.adopt(src, expect=hashlib.sha256(other).hexdigest())
    assert store.read(adopted.hash) == other
    assert src.read_bytes() == other  # left in place
    assert PLANT not in everything_under(tmp_path / "blobs")
    empty = store.put_bytes(b"")
    assert store.read(empty.hash) == b"" and store.size(empty.hash) == 0


def test_a_changed_cut_or_swapped_sealed_file_is_refused(tmp_path: Path) -> None:
    store = sealed_store(tmp_path / "blobs")
    a = os.urandom(2 * CHUNK + 10)
    b = os.urandom(2 * CHUNK + 10)
    ha, hb = store.put_bytes(a).hash, store.put_bytes(b).hash
    file_a, file_b = sealed_file(tmp_path / "blobs", ha), sealed_file(tmp_path / "blobs", hb)
    original = file_a.read_bytes()

    changed = bytearray(original)
    changed[HEADER + CHUNK + 60] ^= 1  # a byte of chunk 1
    file_a.write_bytes(bytes(changed))
    assert store.read(ha, 0, 100) == a[:100]  # chunk 0 still opens: only the chunks touched are read
    with pytest.raises(BadBlob, match="chunk 1"):
        store.read(ha, CHUNK, CHUNK + 10)

    file_a.write_bytes(original[: HEADER + 2 * (CHUNK + 40)])  # cut at a chunk boundary
    with pytest.raises(BadBlob):
        store.read(ha)

    file_a.write_bytes(file_b.read_bytes())  # another blob's file under this name
    with pytest.raises(BadBlob, match="holds another blob"):
        store.read(ha, 0, 10)
