"""A damaged or lost store is noticed at start, under a real ``statebus serve``.

- Flipped pages: the node refuses the store with one clear line and exit status 1.
- A store deleted while the identity is kept: the node starts, but refuses local writes (409
  ``store_behind``, pointing at ``statebus restore``) until the owner restores it or accepts the loss.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from statebus.config import Settings
from statebus.errors import StoreBehind, StoreDamaged
from statebus.identity import keystore
from statebus.runtime import Node, highwater
from statebus.server import build_node
from statebus.storage.sqlite import STORE_FILE, SqliteStorage
from tests.support.served import START_TIMEOUT, ServedNode

PAGE = 4096


def fill_store(data: Path, n: int = 300) -> None:
    node = ServedNode(data)
    try:
        token = keystore.load_owner_token(data)
        with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            for i in range(n):
                assert c.put(f"/~/notes/{i}", json={"n": i, "text": "x" * 200}).status_code == 200
    finally:
        node.close()


def flip_page(path: Path, page: int) -> None:
    with path.open("r+b") as f:
        f.seek(page * PAGE)
        block = bytearray(f.read(PAGE))
        f.seek(page * PAGE)
        f.write(bytes(b ^ 0x5A for b in block))


def serve_until_exit(data: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "statebus",
        "serve",
        "--port",
        "0",
        "--dht-port",
        "0",
        "--data",
        str(data),
    ]
    env = {k: v for k, v in os.environ.items() if k != "STATEBUS_DATA_DIR"}
    proc = subprocess.Popen(
        [*command, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        out, err = proc.communicate(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=15)
        raise AssertionError(f"statebus serve started on a damaged store: {out[-500:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_store_with_flipped_pages_is_refused_at_start(tmp_path: Path) -> None:
    data = tmp_path / "node"
    fill_store(data)
    store = data / STORE_FILE
    pages = store.stat().st_size // PAGE
    assert pages > 8
    flip_page(store, pages // 2)
    done = serve_until_exit(data)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("statebus: error: the store ") and "is damaged" in last, done.stderr[-2000:]
    assert "statebus restore" in last and "Traceback" not in done.stderr


def test_the_store_check_refuses_damage_and_releases_the_store(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILE
    store = SqliteStorage(path)
    from statebus.storage.base import StoredOp

    store.append([StoredOp(seq=i, key=f"/ns/k{i}", version=f"{i}-v", data=b"x" * 300) for i in range(1, 400)])
    store.close()
    pages = path.stat().st_size // PAGE
    flip_page(path, pages // 2)
    for check in ("quick", "full"):
        with pytest.raises(StoreDamaged, match="is damaged"):
            SqliteStorage(path, check=check)
    SqliteStorage(path, check="none").close()  # the lock was released each time


def _put(url: str, token: str, key: str, value: object) -> httpx.Response:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        return c.put(key, json=value)


def test_a_deleted_store_refuses_local_writes_until_the_loss_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "node"
    fill_store(data, n=5)
    token = keystore.load_owner_token(data)
    for name in os.listdir(data):
        if name.startswith(STORE_FILE):
            (data / name).unlink()

    node = ServedNode(data)
    try:
        r = _put(node.url, token, "/~/notes/1", {"n": "after the loss"})
        assert r.status_code == 409, r.text
        assert r.json()["error"] == "store_behind"
        assert "statebus restore" in r.json()["detail"]
        assert _put(node.url, token, "/~/brand-new", 1).status_code == 409
        with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            assert c.get("/.well-known/statebus").json()["storage"] == "behind"
    finally:
        node.close()

    monkeypatch.setenv("STATEBUS_ACCEPT_STORE_LOSS", "true")
    node = ServedNode(data)
    try:
        assert _put(node.url, token, "/~/notes/1", {"n": "start over"}).status_code == 200
    finally:
        node.close()
    monkeypatch.delenv("STATEBUS_ACCEPT_STORE_LOSS")
    node = ServedNode(data)  # the owner accepted it once: no flag needed any more
    try:
        assert _put(node.url, token, "/~/notes/2", {"n": "still fine"}).status_code == 200
    finally:
        node.close()


async def _restore_lifts_the_refusal(data: Path) -> None:
    node: Node = build_node(Settings(data_dir=data))
    assert node.local_refused is not None
    with pytest.raises(StoreBehind, match="statebus restore"):
        await node.save("/~/x", 1)
    highwater.accept(node, data)
    await node.save("/~/x", 2)
    await node.aclose()
    node = build_node(Settings(data_dir=data))
    assert node.local_refused is None
    await node.aclose()


def test_the_mark_follows_commits_and_a_restore_accepts_the_store(tmp_path: Path) -> None:
    import asyncio

    data = tmp_path / "node"

    async def write(n: int) -> None:
        node = build_node(Settings(data_dir=data))
        for i in range(n):
            await node.save(f"/~/k{i}", i)
        await node.aclose()

    asyncio.run(write(3))
    assert highwater.HighWater(data).read() == 3  # written at close, even within INTERVAL
    (data / STORE_FILE).unlink()
    asyncio.run(_restore_lifts_the_refusal(data))
