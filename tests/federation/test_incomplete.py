"""A follower never claims a state it does not have (issue 18, defect 1), and completes it from the
owner's signed subtree snapshot (issue 14, item 5).

The owner compacts its history; a follower that starts afterwards gets only the ops the owner still
holds. For a key those ops cannot rebuild (patches on a value folded away, Yjs updates on a
document folded away) the follower fetches the owner's signed snapshot of the subtree, checks it
and installs the bases, then takes the op tail: every key is complete and byte-identical to the
owner's. When the snapshot does not check (tampered, or signed by a key that may not sign for the
owner) it is refused whole: the key stays 503 ``incomplete`` with no ``Version``, and its follow
state says why. A key whose kept ops hold a whole new value (an lww ``set``) is complete anyway.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from pycrdt import Doc, Text
from websockets.asyncio.client import connect

from statebus.errors import RemoteError
from statebus.federation.snapshots import Kept
from statebus.federation.subtree import BaseRow, SubtreeSnapshot, pack
from statebus.http.websocket import WS_PATH
from statebus.identity import Identity
from statebus.oplog.events import Patch
from statebus.server import Cluster, RunningNode

from .support import has, live, wait_until

pytestmark = pytest.mark.anyio

KEEP = 4
"""``history_keep_ops`` of the owner: compaction runs every ``2 * KEEP`` ops of a key."""


async def _owner_writes(a: RunningNode, n: int) -> bytes:
    """``n`` patches on one lww key, ``n`` Yjs updates on one document, ``n`` sets on another key:
    each compacted many times. Returns the Yjs document as one update."""
    node = a.node
    await node.save("/~/lc/patched", {"n": 0})
    for i in range(1, n + 1):
        await node.patch("/~/lc/patched", [Patch(".n", i)])
        await node.save("/~/lc/counter", i)
    doc: Doc = Doc()
    text = doc.get("t", type=Text)
    for i in range(n):
        before = doc.get_state()
        text += f"{i % 10}"
        await node.crdt_update("/~/yc/doc", doc.get_update(before))
    return bytes(doc.get_update())


async def _tamper(a: RunningNode, pattern: str, how: str) -> None:
    """Make the owner serve a snapshot of ``pattern`` that must be refused: a base changed after it
    was signed (``tampered``), or rows signed by a key that may not sign for the owner (``stranger``)."""
    keeper = a.federation.snapshots
    kept = await keeper.newest(pattern)
    assert a.node.blobs is not None
    lines = a.node.blobs.read(kept.hash).split(b"\n")
    rows = [json.loads(line) for line in lines[1:-1]]
    if how == "tampered":
        for row in rows:
            data = json.loads(row["data"])
            data["log"]["clock"] += 1  # the versions stay: only the signed root can tell
            if data["merge"] == "lww":
                data["state"]["value"] = {"n": 999}
            row["data"] = json.dumps(data, sort_keys=True, separators=(",", ":"))
        body = [
            json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() for r in rows
        ]
        forged = b"\n".join([lines[0], *body, lines[-1]])
    else:
        stranger = Identity.generate()
        base = [BaseRow(r["key"], tuple(r["versions"]), r["data"].encode()) for r in rows]
        snap = SubtreeSnapshot(a.pubkey, pattern, kept.seq, stranger.pubkey, tuple(base))
        forged = pack(snap, stranger.sign)
    info = a.node.blobs.put_bytes(forged)
    keeper.kept[pattern] = [Kept(pattern, info.hash, info.size, a.node.durable_seq + 10**6, kept.keys)]


@pytest.mark.parametrize("keep_b", [None, KEEP], ids=["follower-keeps-1000", "follower-compacts-too"])
async def test_a_late_follower_completes_compacted_keys_from_the_owners_signed_snapshot(
    cluster: Cluster, keep_b: int | None
) -> None:
    """A busy Yjs document and an lww key patched by ranges, each compacted ~50 times before the
    follower starts: the follower installs the owner's signed bases, takes the op tail, and serves
    both byte-identical to the owner (same body, same Version), live ops included."""
    # the owner keeps more ops than a follower that compacts too remembers folding (2 * 4 + 64)
    keep_a = KEEP if keep_b is None else 20 * KEEP
    a = await cluster.add("a", history_keep_ops=keep_a, snapshot_interval=0.1, durability="process")
    b = await cluster.add("b", **({} if keep_b is None else {"history_keep_ops": keep_b}))
    await a.share("/~/lc/")
    await a.share("/~/yc/")
    n = 200 if keep_b is None else 300  # about fifty compactions of each key (one every KEEP ops), or two
    await _owner_writes(a, n)
    lc, yc = f"/{a.pubkey}/lc/", f"/{a.pubkey}/yc/"
    assert a.node.horizon(lc) > 0 and a.node.horizon(yc) > 0
    await b.follow(lc)
    await b.follow(yc)
    await wait_until(lambda: live(b) and len(b.federation.followers) == 2)
    await wait_until(lambda: has(b, lc + "counter", n))
    patched, doc = lc + "patched", yc + "doc"
    await wait_until(lambda: b.node.incomplete(patched) is None and b.node.incomplete(doc) is None, 20)

    async def same_as_owner() -> None:
        ha, hb = {"Authorization": f"Bearer {a.token}"}, {"Authorization": f"Bearer {b.token}"}
        async with (
            httpx.AsyncClient(base_url=a.url, headers=ha) as at_a,
            httpx.AsyncClient(base_url=b.url, headers=hb) as at_b,
        ):
            for key in (patched, doc, lc + "counter"):
                mine, theirs = await at_a.get(key), await at_b.get(key)
                assert theirs.status_code == 200, (key, theirs.status_code, theirs.text)
                assert theirs.content == mine.content and theirs.headers["version"] == mine.headers["version"]
            yjs = {"Accept": "application/vnd.yjs.update"}
            mine, theirs = await at_a.get(doc, headers=yjs), await at_b.get(doc, headers=yjs)
            assert (
                theirs.status_code == 200 and theirs.content == mine.content
            )  # the Yjs state, byte for byte

    await same_as_owner()
    states = {f.follow.pattern: f.state() for f in b.federation.followers.values()}
    for pattern, keys in ((lc, 2), (yc, 1)):  # a new follower takes every base first (lc: counter too)
        assert states[pattern]["status"] == "live" and states[pattern]["incomplete"] == []
        snap = states[pattern]["snapshot"]
        assert isinstance(snap, dict) and snap["keys"] == keys and snap["bytes"] > 0
    assert b.node.horizon(lc) > 0  # the bases are stored: a restart rebuilds from them

    for i in range(12):  # the op tail goes on over the subscription, through more compactions
        await a.node.patch("/~/lc/patched", [Patch(".m", i)])
        update = Doc()
        update.get("t", type=Text).insert(0, f"{i}")
        await a.node.crdt_update("/~/yc/doc", bytes(update.get_update()))
    await a.node.save("/~/lc/done", True)
    await wait_until(lambda: has(b, lc + "done"))

    def doc_caught_up() -> bool:
        mine, theirs = a.node.fetch_or_none(doc), b.node.fetch_or_none(doc)
        return mine is not None and theirs is not None and mine.version == theirs.version

    await wait_until(doc_caught_up, what="the live Yjs ops")
    await same_as_owner()
    keeper = a.federation.snapshots  # compaction folded under subtrees asked for: signed again, unasked
    await wait_until(
        lambda: all(keeper.kept[p][0].seq >= a.node.horizon(p) for p in (lc, yc)), what="a remake"
    )
    if keep_b is None:  # (the owner that keeps 80 ops did not compact again)
        assert keeper.made >= 4 and len(keeper.kept[lc]) >= 2


@pytest.mark.parametrize("how", ["tampered", "stranger"])
async def test_a_snapshot_that_does_not_check_is_refused_and_changes_nothing(
    cluster: Cluster, how: str
) -> None:
    a = await cluster.add("a", history_keep_ops=KEEP)
    b = await cluster.add("b")
    await a.share("/~/lc/")
    await _owner_writes(a, 40)
    lc = f"/{a.pubkey}/lc/"
    await _tamper(a, lc, how)
    await b.follow(lc)
    await wait_until(lambda: live(b) and has(b, lc + "counter", 40))
    follower = next(iter(b.federation.followers.values()))
    patched = lc + "patched"
    await wait_until(lambda: "refused a snapshot" in follower.last_rejection, what="the refusal")
    reason = "Merkle root" if how == "tampered" else "may not write"
    assert reason in follower.last_rejection, follower.last_rejection
    assert b.node.incomplete(patched) is not None and b.node.horizon(lc) == 0  # nothing installed
    async with httpx.AsyncClient(base_url=b.url, headers={"Authorization": f"Bearer {b.token}"}) as owner:
        r = await owner.get(patched)
        assert r.status_code == 503 and r.json()["error"] == "incomplete"
        assert "version" not in r.headers and "etag" not in r.headers
        r = await owner.get(patched, headers={"Subscribe": "true"})  # nor a Braid subscription
        assert r.status_code == 503 and r.json()["error"] == "incomplete"
        r = await owner.get(lc + "counter")  # its last op is a whole value: complete
        assert r.status_code == 200 and r.json() == 40
    state = follower.state()
    assert state["status"] == "incomplete" and state["incomplete"] == [patched]
    assert "compacted" in str(state["reason"]) and state["snapshot"] is None

    # a whole new value rebuilds the lww key: the follow says so and the value is served
    await a.node.save("/~/lc/patched", {"n": -1})
    await wait_until(lambda: not follower.incomplete, what="the key to be rebuilt")
    assert follower.state()["status"] == "live"
    async with httpx.AsyncClient(base_url=b.url, headers={"Authorization": f"Bearer {b.token}"}) as owner:
        r = await owner.get(patched)
        assert r.status_code == 200 and r.json() == {"n": -1}


async def test_an_incomplete_key_stays_incomplete_when_the_follower_compacts_it(cluster: Cluster) -> None:
    a = await cluster.add("a", history_keep_ops=KEEP)
    b = await cluster.add("b", history_keep_ops=KEEP)
    await a.share("/~/lc/")
    await _owner_writes(a, 12)
    lc = f"/{a.pubkey}/lc/"
    await _tamper(a, lc, "tampered")  # no snapshot this follower would install: the key stays incomplete
    await b.follow(lc)
    await wait_until(lambda: live(b))
    patched = lc + "patched"
    await wait_until(lambda: b.node.incomplete(patched) is not None, what="the gap to be seen")
    for i in range(30):  # the follower folds the incomplete key many times itself
        await a.node.patch("/~/lc/patched", [Patch(".m", i)])
    await a.node.save("/~/lc/done", True)
    await wait_until(lambda: has(b, lc + "done"))
    assert not has(b, patched)  # patches on a value it never had: nothing to serve
    assert b.node.horizon(lc) > 0
    assert b.node.incomplete(patched) is not None
    await b.node.flush()
    b.node.bus._entries.clear()  # rebuilt from the stored snapshot: the gap is kept there
    assert b.node.incomplete(patched) is not None
    assert a.node.incomplete(f"/{a.pubkey}/lc/patched") is None  # the owner's own key: complete


async def _sse_until(url: str, token: str, stop: str, timeout: float = 20.0) -> str:
    """What an SSE stream of ``url`` sends until a line holding ``stop`` (the owner's stream)."""
    got = ""
    headers = {"Authorization": f"Bearer {token}", "accept": "text/event-stream"}
    async with httpx.AsyncClient(timeout=timeout) as http, http.stream("GET", url, headers=headers) as r:
        assert r.status_code == 200
        async for chunk in r.aiter_text():
            got += chunk
            if stop in got:
                return got
    return got


async def test_streams_and_listings_claim_no_state_of_an_incomplete_key(cluster: Cluster) -> None:
    """A subtree stream skips an incomplete key (no snapshot, no update, no version), before and
    while it is incomplete, and a listing names it under ``incomplete`` (the owner's snapshots are
    refused here, so the keys stay incomplete)."""
    a = await cluster.add("a", history_keep_ops=KEEP)
    b = await cluster.add("b")
    await a.share("/~/lc/")
    await a.share("/~/yc/")
    await _owner_writes(a, 20)
    lc, yc = f"/{a.pubkey}/lc/", f"/{a.pubkey}/yc/"
    await _tamper(a, lc, "tampered")  # snapshots this follower refuses: its keys stay incomplete
    await _tamper(a, yc, "stranger")
    await b.follow(lc)
    await b.follow(yc)
    await wait_until(lambda: live(b) and len(b.federation.followers) == 2 and has(b, lc + "counter", 20))
    patched, doc = lc + "patched", yc + "doc"
    await wait_until(lambda: b.node.incomplete(doc) is not None and has(b, doc), what="the partial doc")
    assert b.node.incomplete(patched) is not None
    reader = asyncio.create_task(_sse_until(f"{b.url}/?keys={lc},{yc}", b.token, '"done"'))
    await asyncio.sleep(0.5)  # the stream is open: its snapshot sent
    await a.node.patch("/~/lc/patched", [Patch(".m", 1)])  # live ops on the incomplete keys
    update = Doc()
    update.get("t", type=Text).insert(0, "late")
    await a.node.crdt_update("/~/yc/doc", bytes(update.get_update()))
    await a.node.save("/~/lc/done", "done")
    got = await asyncio.wait_for(reader, 30)
    assert lc + "counter" in got and lc + "done" in got  # the stream works
    assert patched not in got and doc not in got  # but never names a key it cannot rebuild
    async with httpx.AsyncClient(base_url=b.url, headers={"Authorization": f"Bearer {b.token}"}) as owner:
        listing = (await owner.get(yc)).json()
        assert listing["children"] == ["doc"] and listing["incomplete"] == ["doc"]
        assert "incomplete" not in (await owner.get(lc)).json()  # patched has no value here at all
    ws_url = b.url.replace("http://", "ws://") + WS_PATH + f"?token={b.token}"
    async with connect(ws_url) as ws:  # a websocket get of the key itself: an error, no value
        await ws.send(json.dumps({"get": doc}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert answer["error"] == "incomplete" and answer["key"] == doc and "val" not in answer
    stream = b.node.events([lc, yc], snapshot=True)  # the node's own streams, too
    try:
        keys = {c.key for c in stream.drain_ready()}
        assert lc + "counter" in keys and patched not in keys and doc not in keys
    finally:
        stream.close()


async def test_a_follower_that_fell_behind_its_owners_compaction_completes_from_the_snapshot(
    cluster: Cluster,
) -> None:
    """Too far behind, not new: the follower was live, stopped, and its owner folded the ops it missed;
    on restart the follower's key is incomplete until it installs the owner's snapshot."""
    a = await cluster.add("a", history_keep_ops=KEEP)
    b = await cluster.add("b")
    await a.share("/~/yc/")
    await _owner_writes(a, 6)
    doc = f"/{a.pubkey}/yc/doc"

    def same() -> bool:
        mine, theirs = a.node.fetch_or_none(doc), b.node.fetch_or_none(doc)
        return theirs is not None and mine is not None and theirs.version == mine.version

    await b.follow(f"/{a.pubkey}/yc/")
    await wait_until(lambda: live(b) and same(), what="b to follow")
    await cluster.stop("b")
    for i in range(40):  # ten compactions b never sees
        update = Doc()
        update.get("t", type=Text).insert(0, f"{i % 10}")
        await a.node.crdt_update("/~/yc/doc", bytes(update.get_update()))
    b = await cluster.add("b")  # the same data folder: it resumes its follow
    await wait_until(lambda: live(b) and same() and b.node.incomplete(doc) is None, what="b to complete")
    follower = next(iter(b.federation.followers.values()))
    assert follower.snapshot is not None and follower.snapshot.keys == [doc]
    assert b.node.yjs_update(doc, a.node.fetch(doc).version) == a.node.yjs_update(
        doc, a.node.fetch(doc).version
    )


async def test_the_snapshot_route_refuses_what_it_must_with_a_reason(cluster: Cluster) -> None:
    """Unsigned: 401. A subtree the peer may not read: 403. Nothing compacted under it: 404. Not a
    subtree: 400. Each a JSON error with a code; a good request gets the signed bytes."""
    a = await cluster.add("a", history_keep_ops=KEEP)
    b = await cluster.add("b")
    await a.share("/~/lc/")
    await a.share("/~/fresh/")
    await _owner_writes(a, 12)
    await a.node.save("/~/fresh/x", 1)
    await a.node.save("/~/private/x", 1)
    for i in range(12):
        await a.node.save("/~/private/x", i)
    client = b.federation.client
    ns = a.pubkey
    for pattern, status, code in (
        (f"/{ns}/private/", 403, "forbidden"),
        (f"/{ns}/fresh/", 404, "not_found"),
        (f"/{ns}/lc/patched", 400, "invalid_value"),
    ):
        with pytest.raises(RemoteError) as caught:
            await client.snapshot(a.url, pattern, 1 << 20)
        assert (caught.value.status_hint, caught.value.remote_code) == (status, code), caught.value.detail
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{a.url}/.well-known/statebus/snapshot", params={"pattern": f"/{ns}/lc/"})
        assert r.status_code == 401 and r.json()["error"] == "bad_signature"
    data = await client.snapshot(a.url, f"/{ns}/lc/", 1 << 20)
    assert data.startswith(b'{"author":"' + ns.encode())
