"""A follower never claims a state it does not have (issue 18, defect 1).

The owner compacts its history; a follower that starts afterwards gets only the ops the owner still
holds. For a key those ops cannot rebuild (patches on a value folded away, Yjs updates on a
document folded away) the follower serves 503 ``incomplete`` with no ``Version``, and its follow
state says why. A key whose kept ops hold a whole new value (an lww ``set``) is complete.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from pycrdt import Doc, Text
from websockets.asyncio.client import connect

from statebus.http.websocket import WS_PATH
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


async def test_a_follower_after_compaction_claims_no_state_it_cannot_rebuild(cluster: Cluster) -> None:
    a = await cluster.add("a", history_keep_ops=KEEP)
    b = await cluster.add("b")
    await a.share("/~/lc/")
    await a.share("/~/yc/")
    n = 40  # ten compactions of each key
    await _owner_writes(a, n)
    lc, yc = f"/{a.pubkey}/lc/", f"/{a.pubkey}/yc/"
    assert a.node.horizon(lc) > 0 and a.node.horizon(yc) > 0
    await b.follow(lc)
    await b.follow(yc)
    await wait_until(lambda: live(b) and len(b.federation.followers) == 2)
    await wait_until(lambda: has(b, lc + "counter", n))
    patched, doc = lc + "patched", yc + "doc"
    async with httpx.AsyncClient(base_url=b.url, headers={"Authorization": f"Bearer {b.token}"}) as owner:
        for key in (patched, doc):
            r = await owner.get(key)
            assert r.status_code == 503, (key, r.status_code, r.text)
            assert r.json()["error"] == "incomplete" and "compacted" in r.json()["detail"]
            assert "version" not in r.headers and "etag" not in r.headers
            r = await owner.get(key, headers={"Subscribe": "true"})  # nor a Braid subscription
            assert r.status_code == 503 and r.json()["error"] == "incomplete"
        r = await owner.get(lc + "counter")  # its last op is a whole value: complete
        assert r.status_code == 200 and r.json() == n
    async with httpx.AsyncClient(base_url=a.url, headers={"Authorization": f"Bearer {a.token}"}) as at_a:
        assert r.headers["version"] == (await at_a.get(lc + "counter")).headers["version"]
    states = {f.follow.pattern: f.state() for f in b.federation.followers.values()}
    assert states[lc]["status"] == "incomplete" and states[lc]["incomplete"] == [patched]
    assert states[yc]["status"] == "incomplete" and states[yc]["incomplete"] == [doc]
    assert "compacted" in str(states[lc]["reason"]) and "compacted" in str(states[yc]["reason"])

    # a whole new value rebuilds the lww key: the follow says so and the value is served
    await a.node.save("/~/lc/patched", {"n": -1})
    follower = next(f for f in b.federation.followers.values() if f.follow.pattern == lc)
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
    while it is incomplete, and a listing names it under ``incomplete``."""
    a = await cluster.add("a", history_keep_ops=KEEP)
    b = await cluster.add("b")
    await a.share("/~/lc/")
    await a.share("/~/yc/")
    await _owner_writes(a, 20)
    lc, yc = f"/{a.pubkey}/lc/", f"/{a.pubkey}/yc/"
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
