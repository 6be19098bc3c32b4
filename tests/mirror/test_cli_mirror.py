"""`statebus mirror …` and `statebus restore --from-mirror` as a person runs them (subprocesses)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from statebus.config import Settings
from statebus.identity import keystore
from statebus.server import Cluster, build_node
from tests.federation.support import FAST

pytestmark = pytest.mark.anyio


async def _cli(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "statebus",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "STATEBUS_DATA_DIR": "/nonexistent-statebus-test", **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


SECRET = "mirror-test-dht-secret"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Nodes in a DHT whose invite secret is text, so the CLI can be given it (STATEBUS_DHT_SECRET)."""
    c = Cluster(tmp_path, dht_name="mirrors", dht_secret=SECRET.encode(), **FAST)
    try:
        yield c
    finally:
        await c.aclose()


async def test_mirror_commands_push_report_and_restore(cluster: Cluster, tmp_path: Path) -> None:
    data = tmp_path / "a"
    identity, phrase = keystore.init(data)
    good = await cluster.add("good", mirror_for=(identity.pubkey,))
    small = await cluster.add("small", mirror_for=(identity.pubkey,), mirror_quota_bytes="12KiB")
    stranger = await cluster.add("stranger")
    assert good.directory is not None
    dht = {
        "STATEBUS_DHT_NAME": "mirrors",
        "STATEBUS_DHT_SECRET": SECRET,
        "STATEBUS_DHT_BOOTSTRAP": f"127.0.0.1:{good.directory.port}",
    }
    node = build_node(Settings(data_dir=data))
    try:
        for i in range(40):
            await node.save(f"/~/journal/{i}", {"text": f"entry {i}"})
    finally:
        await node.aclose()
    d = ("--data", str(data))
    code, _, err = await _cli("mirror", "add", stranger.url, *d)
    assert code == 1 and "refuses to mirror for" in err and "mirror_for" in err, err
    code, out, err = await _cli("mirror", "add", good.pubkey, *d, env=dht)  # found through the DHT
    assert (
        code == 0 and f"mirror {good.url} added: it keeps up to 1073741824 bytes for us and holds 0" in out
    ), err
    assert (await _cli("mirror", "add", small.url, "--quota", "1MiB", *d))[0] == 0
    code, out, _ = await _cli("mirror", "list", *d)
    assert good.url in out and f"{small.url}" in out and "quota 1048576 bytes" in out
    code, out, err = await _cli("mirror", "push", *d)
    assert code == 1, (out, err)
    assert f"{small.url}: push failed: quota_exceeded" in out and "12288 bytes (mirror_quota_bytes)" in out
    assert f"{good.url}: pushed 40 ops in 1 segments" in out and ": proved" in out
    placed = {
        "STATEBUS_MIRROR_PLACEMENT": "/~/journal/=2",
        "STATEBUS_MIRROR_DEVICES": f"{stranger.pubkey}@{stranger.url}",
    }
    code, out, err = await _cli("mirror", "status", "--copies", "3", *d, env=placed)
    assert code == 0, err
    assert "0 ops behind" in out and "error      quota_exceeded" in out
    assert "copies of /~/: 2 of 3 wanted" in out and "UNDER-REPLICATED: 1 more needed" in out, out
    assert f"copies of /~/journal/: 2 of 2 wanted (this node, mirror {good.url}): ok" in out, out
    assert f"device {stranger.pubkey} {stranger.url} /~/journal/: no delegation of ours" in out, out
    code, _, err = await _cli("mirror", "status", *d, env={"STATEBUS_MIRROR_PLACEMENT": "/~/journal/"})
    assert code != 0 and "STATEBUS_MIRROR_PLACEMENT: write each entry as SUBTREE=N" in err, err
    shutil.rmtree(data)
    code, out, err = await _cli("init", "--recover", *d, stdin=phrase)
    assert code == 0 and identity.pubkey in out, err
    code, out, err = await _cli("restore", "--from-mirror", good.pubkey, *d, env=dht)
    assert code == 0 and "restored 40 ops from 1 segments" in out, (out, err)
    assert "segment 1/1: 40 ops, 40 applied" in err
    node = build_node(Settings(data_dir=data))
    try:
        assert node.fetch(f"/{identity.pubkey}/journal/39").value == {"text": "entry 39"}
    finally:
        await node.aclose()
    # the restored node knows the mirror it came from (and only that one), and pushes on after it
    code, out, _ = await _cli("mirror", "remove", good.url, *d)
    assert code == 0 and "removed" in out
