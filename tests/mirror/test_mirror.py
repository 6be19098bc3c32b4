"""The encrypted mirror between real nodes: push, lose the node, restore from the phrase and the mirror."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest

from statebus.config import Settings
from statebus.federation.mirror_restore import restore_from_mirror
from statebus.federation.opset import op_set
from statebus.identity import keystore
from statebus.mirror import objects
from statebus.mirror.client import MirrorClient
from statebus.mirror.crypto import MirrorCipher
from statebus.mirror.push import MirrorTargets, challenge, push, status
from statebus.runtime import Node
from statebus.server import Cluster, RunningNode, build_node

pytestmark = pytest.mark.anyio

SECRET_KEY = "diary-zq7planted"
SECRET_VALUE = "the-vault-code-is-88231-planted"
SHARED_VALUE = "shared-note-planted-4471"
BLOB_MARK = b"blob-bytes-planted-99821"


class Recorder(httpx.AsyncBaseTransport):
    """A real network transport that keeps a copy of every byte sent and received (the traffic)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.seen: list[bytes] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        self.seen.append(str(request.url).encode() + repr(request.headers.raw).encode() + body)
        response = await self.inner.handle_async_request(request)
        data = await response.aread()
        self.seen.append(repr(response.headers.raw).encode() + data)
        return httpx.Response(response.status_code, headers=response.headers, stream=httpx.ByteStream(data))

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _owner(
    cluster: Cluster, tmp_path: Path, **mirror_settings: Any
) -> tuple[str, RunningNode, RunningNode]:
    """Owner A (identity from a phrase) with private and shared keys and a blob; mirror M for A."""
    identity, phrase = keystore.init(tmp_path / "a")
    m = await cluster.add("m", mirror_for=(identity.pubkey,), **mirror_settings)
    a = await cluster.add("a")
    await a.share("/~/notes/")
    for i in range(30):
        await a.node.save(f"/~/notes/{i}", {"text": f"{SHARED_VALUE} {i}"})
    await a.node.delete("/~/notes/4")
    for i in range(3):
        await a.node.save(f"/~/private/{SECRET_KEY}", {"entry": SECRET_VALUE, "n": i})
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {a.token}"}) as http:
        blob = BLOB_MARK * 4000  # ~100 KB: stored as a blob
        r = await http.put(f"{a.url}/~/private/photo", content=blob, headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
    await a.node.flush()
    return phrase, a, m


def _mirror_client(
    a: RunningNode, m: RunningNode, transport: httpx.AsyncBaseTransport | None = None
) -> MirrorClient:
    return MirrorClient(m.url, a.pubkey, a.identity, transport=transport)


async def _push(a: RunningNode, m: RunningNode, **kw: Any) -> Any:
    targets = MirrorTargets(a.settings.data_dir)
    targets.add(m.url)
    return await push(a.node, a.identity, targets, m.url, **kw)


def _state(node: Node) -> dict[str, Any]:
    """Every key of the namespace: existence, value, version; and the op history, byte for byte."""
    ns = f"/{node.local}/"
    keys = {k: node.fetch_or_none(k) for k in node.walk(ns, 10_000)}
    values = {k: (c.exists, c.value, c.version, c.content_type) for k, c in keys.items() if c is not None}
    return {"values": values, "ops": op_set(node, ns).ops}


async def _lose_and_recover(cluster: Cluster, tmp_path: Path, phrase: str) -> tuple[Node, Any]:
    """Stop A, delete its data folder, `statebus init --recover` into it, open the node."""
    await cluster.stop("a")
    shutil.rmtree(tmp_path / "a")
    identity = keystore.recover(tmp_path / "a", phrase)
    return build_node(Settings(data_dir=tmp_path / "a")), identity


def _files(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())


async def test_the_whole_cycle_restores_everything_and_the_mirror_learns_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    phrase, a, m = await _owner(cluster, tmp_path)
    recorder = Recorder()
    async with _mirror_client(a, m, recorder) as client:
        report = await _push(a, m, client=client)
    assert report.error == "" and report.ops == len(op_set(a.node, f"/{a.pubkey}/").ops) and report.blobs == 1
    before = _state(a.node)
    blob_hash = hashlib.sha256(BLOB_MARK * 4000).hexdigest()
    await cluster.stop("m")  # M's store is closed: every byte of its data folder is on disk
    planted = [SECRET_KEY, SECRET_VALUE, SHARED_VALUE, "notes", "private", "photo", "image/png"]
    for haystack, where in (
        (_files(tmp_path / "m"), "M's data folder"),
        (b"".join(recorder.seen), "traffic"),
    ):
        for needle in [*(p.encode() for p in planted), BLOB_MARK, blob_hash.encode()]:
            assert needle not in haystack, f"{needle!r} found in {where}"
    assert len(recorder.seen) > 4  # the traffic really was recorded
    m = await cluster.add("m", mirror_for=(a.pubkey,))
    node, identity = await _lose_and_recover(cluster, tmp_path, phrase)
    try:
        assert node.fetch_or_none(f"/{a.pubkey}/private/{SECRET_KEY}") is None
        lines: list[str] = []
        restored = await restore_from_mirror(
            node, identity, m.url, targets=MirrorTargets(tmp_path / "a"), progress=lines.append
        )
        assert restored.error == "" and restored.rejected == [], restored
        assert restored.applied == len(before["ops"]) and restored.blobs == 1
        assert lines and "applied" in lines[0]
        after = _state(node)
        assert after["ops"] == before["ops"]  # the history, signatures included, byte for byte
        assert after["values"] == before["values"]
        assert node.blobs is not None and node.blobs.read(blob_hash) == BLOB_MARK * 4000
        # it carries on: a new write is on top of the history, and the next push appends a segment
        change = await node.save(f"/~/private/{SECRET_KEY}", {"entry": "after"})
        assert change.op is not None and change.op.parents == before["values"][change.key][2]
        targets = MirrorTargets(tmp_path / "a")
        again = await push(node, identity, targets, m.url)
        assert (again.error, again.ops, again.segments) == ("", 1, 1)
    finally:
        await node.aclose()


async def test_a_tampered_segment_is_refused_and_named(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(objects, "SEGMENT_OPS", 10)
    monkeypatch.setattr("statebus.mirror.push.SEGMENT_OPS", 10)
    phrase, a, m = await _owner(cluster, tmp_path)
    report = await _push(a, m)
    assert report.error == "" and report.segments >= 3
    target = tmp_path / "m" / "mirror" / a.pubkey / MirrorCipher(a.identity).object_id("seg/2")
    data = bytearray(target.read_bytes())
    data[100] ^= 1
    target.write_bytes(bytes(data))
    node, identity = await _lose_and_recover(cluster, tmp_path, phrase)
    try:
        restored = await restore_from_mirror(node, identity, m.url)
        assert restored.failed_object == "seg/2" and "mirror_tampered" in restored.error, restored
        assert "seg/2" in restored.error and restored.segments == 2  # seg/0 and seg/1 went in, nothing after
        assert restored.applied == 20
    finally:
        await node.aclose()


async def test_a_mirror_over_quota_refuses_with_the_reason_and_the_owner_shows_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, a, m = await _owner(cluster, tmp_path, mirror_quota_bytes="12KiB")
    report = await _push(a, m)
    assert "quota_exceeded" in report.error and "mirror_quota_bytes" in report.error, report.error
    (row,) = status(a.node, MirrorTargets(a.settings.data_dir))
    assert "quota_exceeded" in row.last_error and row.lag_ops > 0 and not row.complete
    assert _files(tmp_path / "m" / "mirror") == b""  # nothing was kept past the quota


async def test_a_mirror_that_dropped_or_changed_data_fails_its_next_challenge(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, a, m = await _owner(cluster, tmp_path)
    assert (await _push(a, m)).error == ""
    targets = MirrorTargets(a.settings.data_dir)
    first = await challenge(a.node, a.identity, targets, m.url)
    assert first["ok"] and first["detail"] == "proved", first
    (row,) = status(a.node, targets)
    assert row.complete and row.lag_ops == 0
    folder = tmp_path / "m" / "mirror" / a.pubkey
    cipher = MirrorCipher(a.identity)
    manifest_id = cipher.object_id(objects.MANIFEST)
    kept = [p for p in folder.iterdir() if p.name != manifest_id]
    for p in kept:  # the mirror keeps files of the right size, with other bytes
        p.write_bytes(os.urandom(p.stat().st_size))
    changed = await challenge(a.node, a.identity, targets, m.url)
    assert not changed["ok"] and "wrong answer" in changed["detail"], changed
    for p in kept:
        p.unlink()
    dropped = await challenge(a.node, a.identity, targets, m.url)
    assert not dropped["ok"] and "not_found" in dropped["detail"], dropped
    (row,) = status(a.node, targets)
    assert not row.complete and row.last_proof == dropped


async def test_only_the_owner_or_its_delegated_device_reads_the_mirror(
    cluster: Cluster, tmp_path: Path
) -> None:
    from statebus.identity.delegation import delegate
    from statebus.identity.keys import derive

    _, a, m = await _owner(cluster, tmp_path)
    assert (await _push(a, m)).error == ""
    oid = MirrorCipher(a.identity).object_id(objects.MANIFEST)
    stranger = m.identity  # a real node's key, not the owner's
    async with MirrorClient(m.url, a.pubkey, stranger) as c:
        with pytest.raises(Exception, match="403") as refused:
            await c.get(oid)
    assert "only the owner" in str(refused.value)
    laptop = derive(a.identity, "device/laptop")
    rec = delegate(a.identity, laptop.pubkey, [f"/{a.pubkey}/"], issued=1, expires=int(time.time()) + 3600)
    async with MirrorClient(m.url, a.pubkey, laptop, delegation=rec) as c:
        assert len(await c.get(oid)) >= 4096
    narrow = delegate(a.identity, laptop.pubkey, [f"/{a.pubkey}/notes/"], issued=2)
    async with MirrorClient(m.url, a.pubkey, laptop, delegation=narrow) as c:
        with pytest.raises(Exception, match="403"):
            await c.get(oid)


async def test_a_restored_node_continues_and_followers_take_its_next_write_without_a_fork(
    cluster: Cluster, tmp_path: Path
) -> None:
    from tests.federation.support import wait_until

    phrase, a, m = await _owner(cluster, tmp_path)
    b = await cluster.add("b")
    notes = f"/{a.pubkey}/notes/"
    await b.follow(notes, via=[a.url])
    await wait_until(lambda: _value(b, notes + "29") is not None, what="the follower's copy")
    assert (await _push(a, m)).error == ""
    port = a.port
    node, identity = await _lose_and_recover(cluster, tmp_path, phrase)
    try:
        restored = await restore_from_mirror(node, identity, m.url)
        assert restored.error == ""
        from statebus.runtime import highwater

        highwater.accept(node, tmp_path / "a")
    finally:
        await node.aclose()
    a2 = await cluster.add("a", port=port)
    old = b.node.fetch(notes + "1")
    change = await a2.node.save("/~/notes/1", {"text": "after the restore"})
    assert change.op is not None and change.op.parents == old.version
    await wait_until(lambda: _value(b, notes + "1") == {"text": "after the restore"}, what="the new write")
    mine, theirs = a2.node.fetch(notes + "1"), b.node.fetch(notes + "1")
    assert theirs.version == mine.version == (change.op.version,)  # one head on both: no fork


def _value(node: RunningNode, key: str) -> Any:
    change = node.node.fetch_or_none(key, durable=True)  # as `fetch` reads it: on disk
    return change.value if change is not None and change.exists else None


async def test_a_running_node_pushes_and_challenges_its_mirrors_by_itself(
    cluster: Cluster, tmp_path: Path
) -> None:
    from tests.federation.support import wait_until

    identity, _ = keystore.init(tmp_path / "a")
    m = await cluster.add("m", mirror_for=(identity.pubkey,))
    MirrorTargets(tmp_path / "a").add(m.url)
    a = await cluster.add("a", mirror_push_interval=0.2)
    await a.node.save("/~/private/x", {"n": 1})

    def proved() -> bool:
        state = MirrorTargets(tmp_path / "a").mirrors[m.url]
        return bool(state.last_proof.get("ok")) and state.cursor >= a.node.seq

    await wait_until(proved, timeout=30, what="a push and a proof")
    # /metrics shows it (issue 17: mirror lag among the node's metrics)
    async with httpx.AsyncClient() as client:
        text = (await client.get(a.url + "/metrics", headers={"authorization": f"Bearer {a.token}"})).text
    label = f'{{mirror="{m.url}"}}'
    assert f"statebus_mirror_lag_ops{label} 0.0" in text, text
    assert f"statebus_mirror_proof_ok{label} 1.0" in text
    assert f"statebus_mirror_last_push_timestamp_seconds{label}" in text
    await cluster.stop("a")  # the pusher ends with the node


async def test_a_node_that_lost_its_mirror_state_appends_instead_of_overwriting(
    cluster: Cluster, tmp_path: Path
) -> None:
    phrase, a, m = await _owner(cluster, tmp_path)
    assert (await _push(a, m)).error == ""
    first = len(op_set(a.node, f"/{a.pubkey}/").ops)
    (tmp_path / "a" / "mirrors.json").unlink()  # its record of the mirror is gone, the mirror's copy is not
    await a.node.save("/~/private/later", {"n": 2})
    again = await _push(a, m)
    assert again.error == "" and again.ops == first + 1
    manifest = MirrorTargets(tmp_path / "a").mirrors[m.url].manifest_of(a.pubkey)
    assert [s.index for s in manifest.segments] == [0, 1]  # seg/0 kept, the new pushes after it
    node, identity = await _lose_and_recover(cluster, tmp_path, phrase)
    try:
        restored = await restore_from_mirror(node, identity, m.url)
        assert restored.error == "" and restored.applied == first + 1 and restored.duplicates == first
    finally:
        await node.aclose()


def test_mirrors_json_keeps_what_another_process_added_or_removed(tmp_path: Path) -> None:
    MirrorTargets(tmp_path).add("http://127.0.0.1:1")
    pusher = MirrorTargets(tmp_path)  # the running node's copy, read at the start of a round
    MirrorTargets(tmp_path).add("http://127.0.0.1:2")  # `mirror add` during the push
    MirrorTargets(tmp_path).remove("http://127.0.0.1:1")  # and `mirror remove`
    pusher.save()
    assert set(MirrorTargets(tmp_path).mirrors) == {"http://127.0.0.1:2"}


class CutAfter(httpx.AsyncBaseTransport):
    """The real network, cut (connection refused) after ``puts`` stored objects."""

    def __init__(self, puts: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.left = puts

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            if self.left == 0:
                raise httpx.ConnectError("cut", request=request)
            self.left -= 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_interrupted_push_resumes_after_the_last_stored_segment(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("statebus.mirror.push.SEGMENT_OPS", 10)
    phrase, a, m = await _owner(cluster, tmp_path)
    total = len(op_set(a.node, f"/{a.pubkey}/").ops)
    async with _mirror_client(a, m, CutAfter(2)) as client:
        cut = await _push(a, m, client=client)
    assert cut.error.startswith("peer_unavailable") and cut.segments == 2
    resumed = await _push(a, m)
    assert resumed.error == "" and resumed.ops == total - 20  # nothing pushed twice
    manifest = MirrorTargets(tmp_path / "a").mirrors[m.url].manifest_of(a.pubkey)
    assert [s.index for s in manifest.segments] == list(range(len(manifest.segments)))
    node, identity = await _lose_and_recover(cluster, tmp_path, phrase)
    try:
        restored = await restore_from_mirror(node, identity, m.url)
        assert restored.error == "" and restored.applied == total and restored.duplicates == 0
    finally:
        await node.aclose()


async def test_ops_are_verified_after_decryption_even_with_the_mirror_key(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Someone who had the mirror key (not the signing key) adds a well-sealed segment with a forged
    op and lists it in a well-sealed manifest: the restore still refuses the op."""
    from statebus.identity import Identity, sign_op
    from statebus.oplog import Op, encode_op

    phrase, a, m = await _owner(cluster, tmp_path)
    assert (await _push(a, m)).error == ""
    cipher = MirrorCipher(a.identity)
    manifest = MirrorTargets(tmp_path / "a").mirrors[m.url].manifest_of(a.pubkey)
    forger = Identity.generate()
    evil = Op(f"/{a.pubkey}/private/evil", "1-forged", (), forger.pubkey, 1, "lww", "set", "pwned")
    entry = objects.SegmentEntry(len(manifest.segments), 10**6, 10**6 + 1, 1, "", 0, 0)
    plain = objects.pack_segment(entry.index, entry.after, entry.upto, [encode_op(sign_op(evil, forger))])
    sealed = cipher.seal(objects.segment_name(entry.index), plain)
    entry.sealed_sha256 = hashlib.sha256(sealed).hexdigest()
    manifest.segments.append(entry)
    async with _mirror_client(a, m) as client:
        await client.put(cipher.object_id(objects.segment_name(entry.index)), sealed)
        await client.put(cipher.object_id(objects.MANIFEST), cipher.seal(objects.MANIFEST, manifest.encode()))
    node, identity = await _lose_and_recover(cluster, tmp_path, phrase)
    try:
        restored = await restore_from_mirror(node, identity, m.url)
        assert restored.error == "" and len(restored.rejected) == 1, restored
        assert "is not the owner" in restored.rejected[0] or "bad_signature" in restored.rejected[0]
        assert node.fetch_or_none(f"/{a.pubkey}/private/evil") is None
        assert node.fetch_or_none(f"/{a.pubkey}/private/{SECRET_KEY}") is not None
    finally:
        await node.aclose()


def _records(data_dir: Path, owner: str) -> dict[str, Any]:
    """Every key of the store as it lies on disk: its snapshot's merge state and log base (without
    its local seq) and its ops after the snapshot, byte for byte."""
    from statebus.storage.sqlite import StoreSnapshot

    out: dict[str, Any] = {}
    with StoreSnapshot(data_dir / "store.sqlite3") as store:
        for snap, _ in store.snapshots(f"/{owner}/"):
            raw = json.loads(snap.data)
            raw["log"].pop("seq")
            out[snap.key] = [raw]
        for op in store.ops(f"/{owner}/"):
            out.setdefault(op.key, [None]).append(op.data)
    return out


async def test_history_compacted_between_pushes_comes_back_from_the_snapshots(
    cluster: Cluster, tmp_path: Path
) -> None:
    identity, phrase = keystore.init(tmp_path / "a")
    m = await cluster.add("m", mirror_for=(identity.pubkey,))
    a = await cluster.add("a", history_keep_ops=4)
    doc: pycrdt.Doc = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)

    async def write(n: int) -> None:
        for _ in range(n):
            before = doc.get_state()
            text.insert(len(text), f"{SECRET_VALUE[len(text) % 8]}")
            await a.node.crdt_update("/~/private/doc", bytes(doc.get_update(before)))
            await a.node.save("/~/private/counter", {"n": len(text)})

    await write(3)
    await a.node.flush()
    assert (await _push(a, m)).error == ""
    await write(40)  # folded several times over before the next push: those ops never reach the mirror
    await a.node.flush()
    report = await _push(a, m)
    assert report.error == "" and report.snapshots == 2, report
    assert (await _push(a, m)).snapshots == 0  # only snapshots that changed since are pushed again
    before, records = _state(a.node), _records(tmp_path / "a", a.pubkey)
    assert records[f"/{a.pubkey}/private/doc"][0] is not None  # the key really was compacted
    assert before["values"][f"/{a.pubkey}/private/doc"][1] == {"t": str(text)}
    node, identity = await _lose_and_recover(cluster, tmp_path, phrase)
    try:
        restored = await restore_from_mirror(node, identity, m.url, targets=MirrorTargets(tmp_path / "a"))
        assert restored.error == "" and restored.rejected == [] and restored.snapshots == 2, restored
    finally:
        await node.aclose()
    assert _records(tmp_path / "a", a.pubkey) == records  # snapshots and later ops, byte for byte
    node = build_node(Settings(data_dir=tmp_path / "a", history_keep_ops=4))
    try:
        assert _state(node) == before  # every value and version, rebuilt from the snapshots
        change = await node.save("/~/private/counter", {"n": -1})  # carries on from the restored head
        assert change.op is not None and change.op.parents == before["values"][change.key][2]
    finally:
        await node.aclose()
