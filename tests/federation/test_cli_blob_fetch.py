"""``statebus blob fetch`` against real nodes: a followed key's blob over the swarm with progress and
``--out``, a sha256 from the DHT's seeders alone, the HTTP fallback, and one-line errors."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import httpx
import pytest

from statebus.cli import main
from statebus.server import Cluster, RunningNode

from .support import wait_until

pytestmark = pytest.mark.anyio

SWARM = {"swarm": True, "swarm_min_bytes": 1 << 20}


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # a failure: one line on stderr, status 1
        return int(exc.code or 0)


async def cli(node: RunningNode, *args: str) -> int:
    argv = [*args, "--data", str(node.settings.data_dir), "--url", node.url]
    return await asyncio.to_thread(run, argv)


async def _put_blob(origin: RunningNode, key: str, data: bytes) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {origin.token}"}, timeout=60) as http:
        r = await http.put(f"{origin.url}{key}", content=data, headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text


async def test_blob_fetch_by_key_and_by_sha256_with_progress_and_errors(
    cluster: Cluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a = await cluster.add("a", **SWARM)
    b = await cluster.add("b", **SWARM)
    c = await cluster.add("c", **SWARM)
    await a.share("/~/files/")
    files = f"/{a.pubkey}/files/"
    big, small = os.urandom(3 << 20), os.urandom(200_000)
    digest = hashlib.sha256(big).hexdigest()
    await _put_blob(a, "/~/files/big", big)
    await _put_blob(a, "/~/files/small", small)
    await a.node.save("/~/files/note", "not a blob")
    assert b.federation.blobs is not None
    await b.federation.blobs.stop()  # no background fetches: only the command brings the bytes
    await b.follow(files)
    await wait_until(lambda: b.node.fetch_or_none(files + "small") is not None, what="b has the pointers")
    capsys.readouterr()

    out = tmp_path / "big.png"
    assert await cli(b, "blob", "fetch", files + "big", "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert captured.out == f"fetched {digest} ({len(big)} bytes) over the swarm\n"
    assert f"downloaded {len(big)} of {len(big)} bytes (100%)" in captured.err
    assert out.read_bytes() == big and not Path(str(out) + ".part").exists()
    assert b.node.blobs is not None and b.node.blobs.read(digest) == big

    assert await cli(b, "blob", "fetch", files + "small") == 0  # under swarm_min_bytes: the HTTP fallback
    assert capsys.readouterr().out.endswith(f"({len(small)} bytes) over HTTP\n")
    assert await cli(b, "blob", "fetch", files + "small") == 0
    assert capsys.readouterr().out.endswith("already here\n")

    assert await cli(c, "blob", "fetch", digest) == 0  # c follows nothing: the DHT names a and b
    assert capsys.readouterr().out == f"fetched {digest} ({len(big)} bytes) over the swarm\n"
    assert c.node.blobs is not None and c.node.blobs.read(digest) == big

    bad = [
        (("blob", "fetch", files + "none"), "has no value here"),
        (("blob", "fetch", files + "note"), "does not point to a blob"),
        (("blob", "fetch", files), "not a subtree"),
        (("blob", "fetch", digest.upper()), "64 lowercase hex digits"),
        (("blob", "fetch", digest, "--out", str(tmp_path / "x")), "--out saves a key's bytes"),
        (("blob", "fetch", "0" * 64), "no seeder of blob"),
    ]
    for argv, why in bad:
        assert await cli(b, *argv) == 1, argv
        err = capsys.readouterr().err
        assert why in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "x").exists()
