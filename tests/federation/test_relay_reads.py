"""A relay serves another namespace by its OWNER's read rules (issue 9, defect 3).

A grants B (and carol) read on ``/~/team/``; B follows it. A stranger key then gets nothing of it
from B on any route (REST, listing, SSE, websocket, the peer ops stream, anti-entropy), while B, the
owner's key and carol (whom the owner granted) still read it at B, ``public/`` still relays to
anyone, and a grant the owner withdraws stops working at B as well.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from statebus.access.op_gate import OpGate
from statebus.bus import Bus
from statebus.errors import StatebusError
from statebus.federation.client import PeerClient, StreamItem
from statebus.federation.ingest import Ingest
from statebus.federation.policy import PeerView, follow_id
from statebus.federation.sync import OpIndex, SyncSession
from statebus.http.websocket import WS_PATH
from statebus.identity import Identity, delegate, record_key, sign_op, sign_request
from statebus.oplog import decode_op
from statebus.runtime import Node
from statebus.server import Cluster, RunningNode
from statebus.storage.memory import MemoryStorage

from .support import has, live, wait_until

pytestmark = pytest.mark.anyio


async def get(node: RunningNode, path: str, who: Identity | None, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        req = http.build_request("GET", node.url + path, headers=headers)
        if who is not None:
            req.headers.update(sign_request("GET", str(req.url), req.headers, b"", who))
        return await http.send(req)


async def sse_first(node: RunningNode, path: str, who: Identity) -> tuple[int, str]:
    """The status of an SSE subscription to ``path`` by ``who``, and its first bytes (if any)."""
    async with httpx.AsyncClient(timeout=10) as http:
        req = http.build_request("GET", node.url + path, headers={"accept": "text/event-stream"})
        req.headers.update(sign_request("GET", str(req.url), req.headers, b"", who))
        r = await http.send(req, stream=True)
        try:
            if r.status_code != 200:
                return r.status_code, (await r.aread()).decode()
            async for chunk in r.aiter_text():
                if "data:" in chunk:
                    return 200, chunk
            return 200, ""
        finally:
            await r.aclose()


async def sse_until_cut(node: RunningNode, path: str, who: Identity, opened: asyncio.Event) -> str:
    """Everything an SSE subscription of ``who`` receives until the node ends it."""
    got = ""
    async with httpx.AsyncClient(timeout=30) as http:
        req = http.build_request("GET", node.url + path, headers={"accept": "text/event-stream"})
        req.headers.update(sign_request("GET", str(req.url), req.headers, b"", who))
        r = await http.send(req, stream=True)
        try:
            assert r.status_code == 200
            async for chunk in r.aiter_text():
                got += chunk
                if "data:" in got:
                    opened.set()
                if "forbidden" in got:
                    break
        finally:
            await r.aclose()
    return got


async def ws_get(node: RunningNode, key: str, who: Identity) -> dict[str, Any]:
    url = node.url.replace("http://", "ws://") + WS_PATH
    async with connect(url, additional_headers=sign_request("GET", url, {}, None, who)) as ws:
        await ws.send(json.dumps({"get": key}))
        answer: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        return answer


async def peer_ops(node: RunningNode, who: Identity, pattern: str) -> list[StreamItem] | int:
    """The backlog of the ops stream of ``pattern`` for the node key ``who``, or the error status."""
    client = PeerClient(who)
    items: list[StreamItem] = []
    try:
        async for batch in client.ops(node.url, [pattern], 0, live=False):
            items.extend(batch)
    except StatebusError as exc:
        return exc.status_hint
    finally:
        await client.aclose()
    return items


async def peer_sync(node: RunningNode, who: Identity, pattern: str) -> list[bytes] | int:
    """The ops one anti-entropy exchange of ``pattern`` gives ``who`` (holding nothing), or the status."""
    client = PeerClient(who)
    try:
        return (await client.sync(node.url, SyncSession(pattern, OpIndex(())))).received
    except StatebusError as exc:
        return exc.status_hint
    finally:
        await client.aclose()


def op_keys(items: list[StreamItem] | int) -> set[str]:
    assert not isinstance(items, int), items
    return {decode_op(i.op).key for i in items if i.kind == "op"}


async def test_a_relay_serves_a_grant_only_to_whom_the_owner_granted_it(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    stranger, carol = Identity.generate(), Identity.generate()
    team, pub = f"/{a.pubkey}/team/", f"/{a.pubkey}/public/"
    await a.node.save("/~/.acl/team", {"read": [b.pubkey, "@friends"]})
    await a.node.save("/~/.acl/.lists/friends", [carol.pubkey])
    await a.node.save("/~/team/plan", {"secret": "the plan"})
    await a.node.save("/~/public/hello", "hi")
    await b.follow(team)
    await b.follow(pub)
    await wait_until(lambda: live(b) and has(b, team + "plan") and has(b, pub + "hello"), what="b's copy")

    # A itself refuses the stranger; so does B, on every route
    assert (await get(a, team + "plan", stranger)).status_code == 403
    for path in (team + "plan", team):
        assert (await get(b, path, stranger)).status_code == 403, path
        assert (await get(b, path, None)).status_code == 401, path
    assert (await sse_first(b, team, stranger))[0] == 403
    assert (await get(b, team + "plan", stranger, subscribe="true")).status_code == 403  # Braid
    assert (await ws_get(b, team + "plan", stranger))["error"] == "forbidden"
    assert await peer_ops(b, stranger, team) == 403
    assert await peer_sync(b, stranger, team) == 403
    for pattern in (f"/{a.pubkey}/", f"/{a.pubkey}/.acl/"):  # nothing secret leaks through a wider pattern
        stream = await peer_ops(b, stranger, pattern)
        assert isinstance(stream, int) or not any("/team/" in k or "/.acl/" in k for k in op_keys(stream))
        synced = await peer_sync(b, stranger, pattern)
        assert isinstance(synced, int) or not any(b"/team/" in op or b"/.acl/" in op for op in synced)

    # whom the owner granted, and the owner's own key, still read it at B: the rules came with the data
    assert has(b, f"/{a.pubkey}/.acl/team")
    for who in (carol, a.identity, b.identity):
        r = await get(b, team + "plan", who)
        assert r.status_code == 200 and r.json() == {"secret": "the plan"}, (who.pubkey, r.text)
    assert (await get(b, team, carol)).json()  # a listing
    status, first = await sse_first(b, team, carol)
    assert status == 200 and "the plan" in first
    assert (await ws_get(b, team + "plan", carol))["set"]["val"] == {"secret": "the plan"}
    assert team + "plan" in op_keys(await peer_ops(b, carol, team))
    assert len(await peer_sync(b, a.identity, team)) == 1  # type: ignore[arg-type]

    # public data still relays to anyone
    assert (await get(b, pub + "hello", None)).json() == "hi"
    assert pub + "hello" in op_keys(await peer_ops(b, stranger, pub))

    # the owner withdraws carol's grant: B applies it too, and cuts her open stream
    opened = asyncio.Event()
    watching = asyncio.ensure_future(sse_until_cut(b, team, carol, opened))
    await asyncio.wait_for(opened.wait(), 30)
    await a.node.save("/~/.acl/.lists/friends", [])
    await wait_until(lambda: has(b, f"/{a.pubkey}/.acl/.lists/friends", []), what="the new rule to reach b")
    cut = await asyncio.wait_for(watching, 30)
    assert "event: error" in cut and "withdrawn" in cut, cut
    assert (await get(b, team + "plan", carol)).status_code == 403
    assert await peer_ops(b, carol, team) == 403
    assert (await get(b, team + "plan", b.identity)).status_code == 200


async def test_a_relay_without_the_owners_rules_serves_nothing_private(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    stranger = Identity.generate()
    team = f"/{a.pubkey}/team/"
    await a.node.save("/~/.acl/team", {"read": [b.pubkey]})
    await a.node.save("/~/team/plan", "secret")
    await b.follow(team)
    await wait_until(lambda: live(b) and has(b, team + "plan"), what="b's copy")
    await cluster.stop("a")
    # c holds the data (copied straight into its store) but never got the rules: they are not public
    c = await cluster.add("c")
    await c.follow(team)
    for stored in b.node.bus.storage.scan(team, 0, 100):
        c.node.bus.apply(decode_op(stored.data))
    await c.node.flush()
    assert has(c, team + "plan")
    assert (await get(c, team + "plan", stranger)).status_code == 403
    assert await peer_ops(c, stranger, team) == 403
    assert await peer_sync(c, stranger, team) == 403
    assert (await get(c, team + "plan", c.identity)).json() == "secret"


async def test_only_the_owner_writes_its_rules_on_a_relay() -> None:
    owner, device, me = Identity.generate(), Identity.generate(), Identity.generate()
    ids = {i.pubkey: i for i in (owner, device)}
    bus = Bus(MemoryStorage(), owner.pubkey, signer=lambda op: sign_op(op, ids[op.author]))
    node = Node(Bus(MemoryStorage(), me.pubkey))
    try:
        ingest = Ingest(node, OpGate.for_node(node, 1 << 20), consent=lambda ns: ns == owner.pubkey)
        everything = delegate(owner, device.pubkey, [f"/{owner.pubkey}/"], issued=1).to_json()
        ops = [
            bus.save(record_key(owner.pubkey, device.pubkey), everything).op,
            bus.save("/~/.acl/team", {"read": "public"}, author=device.pubkey).op,  # a delegate: refused
            bus.save("/~/.acl/chirp", {"read": "public"}).op,
            bus.save("/~/team/x", "by the device", author=device.pubkey).op,
        ]
        result = await ingest.take([op for op in ops if op is not None])
        assert result.applied == 3 and len(result.rejected) == 1, result
        assert "forbidden" in result.rejected[0] and ".acl" in result.rejected[0]
        assert node.bus.fetch_or_none(f"/{owner.pubkey}/.acl/team") is None
        assert node.bus.fetch(f"/{owner.pubkey}/.acl/chirp").value == {"read": "public"}
    finally:
        await node.aclose()


async def test_a_share_relays_until_the_owner_withdraws_it(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    stranger = Identity.generate()
    chirp = f"/{a.pubkey}/chirp/"
    await a.share("/~/chirp/")  # every peer may read it
    await a.node.save("/~/chirp/1", "hello peers")
    await b.follow(chirp)
    await wait_until(lambda: live(b) and has(b, chirp + "1"), what="b's copy")
    assert op_keys(await peer_ops(b, stranger, chirp)) == {chirp + "1"}
    assert (await get(b, chirp + "1", stranger)).status_code == 403  # a share is for peers, as at A
    await a.node.delete(f"/~/.shares/{follow_id(chirp)}")
    await wait_until(lambda: not has(b, f"/{a.pubkey}/.shares/{follow_id(chirp)}"), what="the unshare")
    assert await peer_ops(b, stranger, chirp) == 403
    assert await peer_sync(b, stranger, chirp) == 403


async def test_a_server_that_keeps_the_rules_to_itself_is_still_followed(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    stranger = Identity.generate()
    team = f"/{a.pubkey}/team/"
    rules = (f"/{a.pubkey}/.acl/", f"/{a.pubkey}/.shares/")

    class OlderView(PeerView):  # a node from before the rules travelled: it refuses those patterns
        def pattern(self, pattern: str) -> bool:
            return not pattern.startswith(rules) and super().pattern(pattern)

    a.federation.view = lambda peer: OlderView(a.node.bus, peer, a.federation.access)  # type: ignore[method-assign]
    await a.node.save("/~/.acl/team", {"read": [b.pubkey]})
    await a.node.save("/~/team/plan", "secret")
    await b.follow(team)
    await wait_until(lambda: live(b) and has(b, team + "plan"), what="b's copy without the rules")
    assert not has(b, f"/{a.pubkey}/.acl/team")
    assert (await get(b, team + "plan", stranger)).status_code == 403
    assert await peer_ops(b, stranger, team) == 403
