"""Restore: an owner who lost its data folder takes its namespace back from a follower, verified."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import sys
from pathlib import Path

import pytest

from statebus.config import Settings
from statebus.errors import InvalidValue, StoreBehind
from statebus.federation.client import PeerClient
from statebus.federation.opset import op_set
from statebus.federation.policy import follow_id
from statebus.federation.restore import restore
from statebus.identity import Identity, keystore, sign_op
from statebus.oplog import Op, decode_op, encode_op
from statebus.runtime import Node
from statebus.server import Cluster, RunningNode, build_node
from statebus.storage.base import StoredOp

from .support import FAST, has, wait_until

pytestmark = pytest.mark.anyio


async def _owner_and_follower(cluster: Cluster, tmp_path: Path) -> tuple[str, RunningNode, str]:
    """A (identity from a phrase) writes notes; B follows them; A's disk is then "lost"."""
    _, phrase = keystore.init(tmp_path / "a")
    a, b = await cluster.add("a"), await cluster.add("b")
    await a.share("/~/notes/")
    for i in range(25):
        await a.node.save(f"/~/notes/{i}", {"text": f"note {i}", "tags": []})
    await a.node.delete("/~/notes/4")
    await a.node.save("/~/private/diary", "never shared")
    notes = f"/{a.pubkey}/notes/"
    await b.follow(notes)
    await wait_until(functools.partial(has, b, notes + "24"), what="the follower's copy")
    await wait_until(lambda: not has(b, notes + "4"), what="the delete")
    await cluster.stop("a")
    return phrase, b, a.pubkey


def _recovered(tmp_path: Path, phrase: str) -> tuple[Node, Identity]:
    """`statebus init --recover` into a new, empty data folder, then the node on it."""
    identity = keystore.recover(tmp_path / "a2", phrase)
    return build_node(Settings(data_dir=tmp_path / "a2")), identity


async def test_restore_takes_the_namespace_back_from_a_follower(cluster: Cluster, tmp_path: Path) -> None:
    phrase, b, owner = await _owner_and_follower(cluster, tmp_path)
    notes = f"/{owner}/notes/"
    node, identity = _recovered(tmp_path, phrase)
    assert node.local == owner
    client = PeerClient(identity)
    try:
        assert node.bus.fetch_or_none(notes + "1") is None
        (report,) = await restore(node, client, [b.url])
        held = op_set(b.node, notes)
        everything = op_set(b.node, f"/{owner}/")  # the notes, and the owner's share record with them
        assert report.error == "" and report.server == b.pubkey
        assert report.applied == len(everything.ops) == len(held.ops) + 1 and report.rejected == []
        assert node.bus.fetch(f"/{owner}/.shares/{follow_id(notes)}").value == {"pattern": notes}
        for key in (notes + str(i) for i in range(25)):
            mine, theirs = node.bus.fetch_or_none(key), b.node.bus.fetch_or_none(key)
            assert mine is not None and theirs is not None
            assert (mine.exists, mine.value, mine.version) == (theirs.exists, theirs.value, theirs.version)
        deleted = node.bus.fetch_or_none(notes + "4")
        assert deleted is not None and not deleted.exists  # the delete came back too
        assert node.bus.fetch_or_none(f"/{owner}/private/diary") is None  # B never had it
        assert op_set(node, notes).index.ids() == held.index.ids()
        # again: nothing is moved twice
        (again,) = await restore(node, client, [b.url], "/~/notes/")
        assert (again.received, again.applied) == (0, 0)
        # the restored node writes on top of its history: the new write wins everywhere
        change = await node.save(notes + "1", {"text": "after the restore"})
        before = max(op.clock for op in map(decode_op, held.ops.values()) if op.key == notes + "1")
        assert change.op is not None and change.op.clock > before
        assert node.bus.fetch(notes + "1").value == {"text": "after the restore"}
        with pytest.raises(InvalidValue, match="own namespace"):
            await restore(node, client, [b.url], f"/{b.pubkey}/")
        unreachable = (await restore(node, client, ["http://127.0.0.1:9"]))[0]
        assert unreachable.error.startswith("peer_unavailable")
    finally:
        await client.aclose()
        await node.aclose()


async def test_a_hostile_source_cannot_forge_or_alter_ops(cluster: Cluster, tmp_path: Path) -> None:
    phrase, b, owner = await _owner_and_follower(cluster, tmp_path)
    notes = f"/{owner}/notes/"
    # B's disk now serves, next to the real ops: an op under A's name signed by B, and a real op
    # of A's whose value was changed (its signature no longer covers it).
    await b.federation.stop()  # B stops following (and writing); its peer endpoints still answer
    genuine = decode_op(op_set(b.node, notes).ops.popitem()[1])
    forged = sign_op(Op(notes + "evil", "1-forged", (), b.pubkey, 99, "lww", "set", "pwned"), b.identity)
    tampered = dataclasses.replace(genuine, version="9-tampered", body={"text": "altered"})
    seq = b.node.bus.seq + 1000
    b.node.bus.storage.append(
        [StoredOp(seq + i, op.key, op.version, encode_op(op)) for i, op in enumerate((forged, tampered))]
    )
    node, identity = _recovered(tmp_path, phrase)
    client = PeerClient(identity)
    try:
        (report,) = await restore(node, client, [b.url])
        assert len(report.rejected) == 2, report.rejected
        reasons = " | ".join(report.rejected)
        assert "bad_signature" in reasons and "is not the owner" in reasons, reasons
        assert report.applied == report.received - 2 > 0
        assert node.bus.fetch_or_none(notes + "evil") is None
        assert all(
            change.value != {"text": "altered"}
            for key in node.bus.walk(notes, 100)
            if (change := node.bus.fetch_or_none(key)) is not None and change.exists
        )
    finally:
        await client.aclose()
        await node.aclose()


async def test_a_throttled_source_is_waited_for(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, dht_secret=os.urandom(16), **FAST)
    try:
        _, phrase = keystore.init(tmp_path / "a")
        a = await cluster.add("a")
        b = await cluster.add("b", rate_limit_per_client="1/2 seconds")
        await a.share("/~/notes/")
        for i in range(300):
            a.node.bus.save(f"/~/notes/{i}", {"text": f"note {i}"})
        await a.node.flush()
        notes = f"/{a.pubkey}/notes/"
        await b.follow(notes)
        await wait_until(functools.partial(has, b, notes + "299"), what="the follower's copy")
        await cluster.stop("a")
        node, identity = _recovered(tmp_path, phrase)
        client = PeerClient(identity)
        try:
            (first,) = await restore(node, client, [b.url])  # spends B's budget for our key
            assert first.error == "" and first.applied == len(op_set(b.node, f"/{a.pubkey}/").ops)
            assert node.bus.fetch(notes + "299").value == {"text": "note 299"}
            (again,) = await restore(node, client, [b.url])  # answered 429 first, then served
            assert again.error == "" and again.throttled >= 1 and again.received == 0, again
        finally:
            await client.aclose()
            await node.aclose()
    finally:
        await cluster.aclose()


async def test_restore_cli(cluster: Cluster, tmp_path: Path) -> None:
    phrase, b, owner = await _owner_and_follower(cluster, tmp_path)
    data = tmp_path / "a2"
    no_identity = await _cli("restore", "--from", b.url, "--data", str(tmp_path / "empty"))
    assert no_identity[0] == 1 and "statebus init --recover" in no_identity[2]
    keystore.recover(data, phrase)
    holder = build_node(Settings(data_dir=data))  # a node running on the folder: restore must refuse
    try:
        busy = await _cli("restore", "--from", b.url, "--data", str(data))
        assert busy[0] == 1 and "stop that node first" in busy[2]
    finally:
        await holder.aclose()
    code, out, err = await _cli("restore", "--from", b.url, "--data", str(data))
    held = len(op_set(b.node, f"/{owner}/").ops)  # the notes and the owner's share record
    assert code == 0, err
    assert f"restored {held} ops (0 already here, 0 refused" in out
    node = build_node(Settings(data_dir=data))
    try:
        assert node.bus.fetch(f"/{owner}/notes/7").value == {"text": "note 7", "tags": []}
    finally:
        await node.aclose()


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "statebus",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "STATEBUS_DATA_DIR": "/nonexistent-statebus-test"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_store_lost_under_a_kept_identity_refuses_writes_until_restored(
    cluster: Cluster, tmp_path: Path
) -> None:
    """The owner's store is deleted but its identity kept: writes to existing keys would restart
    their clocks and lose to the follower's older copies, so they are refused until a restore."""
    _, b, owner = await _owner_and_follower(cluster, tmp_path)
    data = tmp_path / "a"
    for name in os.listdir(data):
        if name.startswith("store.sqlite3"):
            (data / name).unlink()
    node = build_node(Settings(data_dir=data))
    try:
        with pytest.raises(StoreBehind, match="statebus restore"):
            await node.save("/~/notes/7", {"text": "after the loss"})
    finally:
        await node.aclose()
    code, _, err = await _cli("restore", "--from", b.url, "--data", str(data))
    assert code == 0, err
    node = build_node(Settings(data_dir=data))
    try:
        key = f"/{owner}/notes/7"
        restored = max(int(v.split("-", 1)[0]) for v in node.fetch(key).version)  # "<clock>-<hash>"
        new = await node.save("/~/notes/7", {"text": "edit after the restore"})
        assert new.op is not None and new.op.clock > restored  # it wins over the follower's copy
        assert node.bus.fetch(key).value == {"text": "edit after the restore"}
    finally:
        await node.aclose()
