"""Blob values end to end: a large binary PUT is stored by its sha256, the op holds the pointer, and
GET serves the bytes with their type, the value headers, byte ranges and ``?download``."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from statebus.blobs import BLOB_TYPE, BlobPointer
from statebus.swarm import make_torrent
from statebus.testing.live_server import LiveServer, live_server

THRESHOLD = 64 * 1024


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("blobs") / "node", max_blob_bytes=8 * 1024 * 1024) as server:
        yield server


def test_a_large_binary_put_is_a_blob_and_the_op_holds_its_pointer(node: LiveServer) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # over max_value_bytes (1 MiB): blobs are not bound by it
    r = httpx.put(
        f"{node.url}/~/files/big.bin", content=data, headers={**node.auth, "content-type": "image/png"}
    )
    assert r.status_code == 200, r.text
    digest = hashlib.sha256(data).hexdigest()
    assert node.node.blobs is not None and node.node.blobs.read(digest) == data
    stored = node.node.fetch_or_none(f"/{node.local}/files/big.bin")
    assert stored is not None and stored.content_type == BLOB_TYPE
    torrent = make_torrent(
        node.node.blobs.path(digest)
    )  # swarm_min_bytes (1 MiB) or more: it names its torrent
    signed = BlobPointer(digest, len(data), "image/png", torrent.infohash_v1, torrent.infohash_v2)
    assert BlobPointer.decode(stored.value) == signed
    got = httpx.get(f"{node.url}/~/files/big.bin", headers=node.auth)
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-type"] == "image/png" and got.headers["accept-ranges"] == "bytes"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-security-policy"] == "sandbox"
    assert "content-disposition" not in got.headers  # an inert image is shown inline
    assert got.headers["version"] == r.headers["version"]


def test_a_chunked_put_streams_and_ranges_and_download_work(node: LiveServer) -> None:
    data = os.urandom(500_000)

    def parts() -> Iterator[bytes]:  # no Content-Length: chunked
        for i in range(0, len(data), 70_000):
            yield data[i : i + 70_000]

    r = httpx.put(
        f"{node.url}/~/page.html", content=parts(), headers={**node.auth, "content-type": "text/html"}
    )
    assert r.status_code == 200, r.text
    url = f"{node.url}/~/page.html"
    one = httpx.get(url, headers={**node.auth, "range": "bytes=1000-1999"})
    assert one.status_code == 206 and one.content == data[1000:2000]
    assert one.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    assert one.headers["content-disposition"] == "attachment"  # html: a download, never a page
    tail = httpx.get(url, headers={**node.auth, "range": "bytes=-10"})
    assert tail.content == data[-10:]
    multi = httpx.get(url, headers={**node.auth, "range": "bytes=0-3, 10-13"})
    assert multi.status_code == 206 and multi.headers["content-type"].startswith("multipart/byteranges")
    assert data[0:4] in multi.content and data[10:14] in multi.content
    bad = httpx.get(url, headers={**node.auth, "range": f"bytes={len(data)}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(data)}"
    down = httpx.get(f"{url}?download", headers=node.auth)
    assert down.headers["content-disposition"] == "attachment; filename*=UTF-8''page.html"
    assert down.content == data


def test_small_binary_values_stay_inline_and_json_is_untouched(node: LiveServer) -> None:
    small = os.urandom(THRESHOLD)
    r = httpx.put(f"{node.url}/~/small", content=small, headers={**node.auth, "content-type": "image/gif"})
    assert r.status_code == 200
    stored = node.node.fetch_or_none(f"/{node.local}/small")
    assert stored is not None and stored.content_type == "image/gif" and stored.value == small
    assert httpx.get(f"{node.url}/~/small", headers=node.auth).content == small

    def chunked() -> Iterator[bytes]:
        yield small[:100]
        yield small[100:200]

    httpx.put(f"{node.url}/~/small2", content=chunked(), headers={**node.auth, "content-type": "image/gif"})
    stored = node.node.fetch_or_none(f"/{node.local}/small2")
    assert stored is not None and stored.content_type == "image/gif" and stored.value == small[:200]
    body = json.dumps({"a": "x" * 100_000})
    r = httpx.put(
        f"{node.url}/~/doc", content=body, headers={**node.auth, "content-type": "application/json"}
    )
    assert (
        r.status_code == 200
        and httpx.get(f"{node.url}/~/doc", headers=node.auth).json()["a"] == "x" * 100_000
    )


def test_a_blob_over_max_blob_bytes_is_refused_and_nothing_is_kept(node: LiveServer) -> None:
    assert node.node.blobs is not None
    before = set(node.node.blobs.hashes())
    big = b"\0" * (8 * 1024 * 1024 + 1)
    r = httpx.put(f"{node.url}/~/huge", content=big, headers={**node.auth, "content-type": "video/mp4"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"

    def endless() -> Iterator[bytes]:
        for _ in range(20):
            yield b"\1" * (1024 * 1024)

    try:
        r = httpx.put(
            f"{node.url}/~/huge", content=endless(), headers={**node.auth, "content-type": "video/mp4"}
        )
        assert r.status_code == 413
    except httpx.HTTPError:
        pass  # the server may close the connection while we still send: refused either way
    assert httpx.get(f"{node.url}/~/huge", headers=node.auth).status_code == 404
    assert set(node.node.blobs.hashes()) == before
    assert list((node.settings.data_dir / "blobs" / "tmp").iterdir()) == []


def test_the_blob_route_serves_a_reader_of_a_key_that_points_to_it(node: LiveServer) -> None:
    data = os.urandom(100_000)
    httpx.put(f"{node.url}/~/pub/b", content=data, headers={**node.auth, "content-type": "application/zip"})
    digest = hashlib.sha256(data).hexdigest()
    key = f"/{node.local}/pub/b"
    ok = httpx.get(f"{node.url}/.blobs/{digest}", params={"key": key}, headers=node.auth)
    assert ok.status_code == 200 and ok.content == data
    assert ok.headers["content-type"] == "application/octet-stream"
    part = httpx.get(
        f"{node.url}/.blobs/{digest}", params={"key": key}, headers={**node.auth, "range": "bytes=5-9"}
    )
    assert part.status_code == 206 and part.content == data[5:10]
    other = httpx.get(f"{node.url}/.blobs/{'0' * 64}", params={"key": key}, headers=node.auth)
    assert other.status_code == 404
    assert httpx.get(f"{node.url}/.blobs/../etc", params={"key": key}, headers=node.auth).status_code == 400
    anon = httpx.get(f"{node.url}/.blobs/{digest}", params={"key": key})
    assert anon.status_code in (401, 403)  # private by default: the key's read rules apply


def test_a_restarted_node_serves_its_blobs(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    with live_server(tmp_path / "n") as srv:
        httpx.put(f"{srv.url}/~/keep", content=data, headers={**srv.auth, "content-type": "audio/ogg"})
    with live_server(tmp_path / "n") as srv:
        got = httpx.get(f"{srv.url}/~/keep", headers=srv.auth)
        assert got.status_code == 200 and got.content == data and got.headers["content-type"] == "audio/ogg"


def test_blob_gc_removes_only_what_nothing_points_to(tmp_path: Path) -> None:
    live_data, old_data = os.urandom(100_000), os.urandom(100_000)
    with live_server(tmp_path / "gc") as srv:
        store = srv.node.blobs
        assert store is not None
        headers = {**srv.auth, "content-type": "application/pdf"}
        httpx.put(f"{srv.url}/~/doc", content=old_data, headers=headers)
        httpx.put(f"{srv.url}/~/doc", content=live_data, headers=headers)  # the old one: history only
        orphan = store.put_bytes(os.urandom(100_000))  # stored, no op points to it (a failed write)
        assert srv.node.collect_blobs(grace=60.0) == []  # too young to tell from a write in flight
        removed = srv.node.collect_blobs(grace=0.0)
        assert [b.hash for b in removed] == [orphan.hash]
        assert store.has(hashlib.sha256(live_data).hexdigest())
        assert store.has(hashlib.sha256(old_data).hexdigest())  # a stored op still points to it
        assert httpx.get(f"{srv.url}/~/doc", headers=srv.auth).content == live_data
