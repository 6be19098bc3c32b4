"""Following between real nodes: uvicorn on 127.0.0.1 port 0, a real DHT, signed peer requests."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from statebus.federation.follow import backoff, state_key
from statebus.federation.opset import op_set
from statebus.identity import sign_request
from statebus.server import Cluster

from .support import has, live, wait_until

pytestmark = pytest.mark.anyio


async def _drain(lines: AsyncIterator[str]) -> list[str]:
    return [line async for line in lines if line]


async def test_follow_live_then_owner_down_followers_still_serve(cluster: Cluster) -> None:
    a, b, c = await cluster.add("a"), await cluster.add("b"), await cluster.add("c")
    await a.share("/~/chirp/")
    for i in range(20):
        a.node.bus.save(f"/~/chirp/{i}", {"text": f"post {i}"})
    await a.node.delete("/~/chirp/3")
    await a.node.save("/~/private/diary", "not for peers")
    chirp = f"/{a.pubkey}/chirp/"
    await b.follow(chirp)
    await c.follow(chirp)
    for n in (b, c):
        await wait_until(functools.partial(has, n, chirp + "19"), what="the backlog")
        assert not has(n, chirp + "3")
        assert not has(n, f"/{a.pubkey}/private/diary")
    follower = next(iter(c.federation.followers.values()))
    await wait_until(lambda: follower.status == "live", what="live")
    # live: a new write reaches both followers
    await a.node.save("/~/chirp/new", {"text": "live"})
    await wait_until(lambda: has(b, chirp + "new") and has(c, chirp + "new"), what="the live write")
    # the owner goes away; C still serves the data to its own clients over HTTP
    await cluster.stop("a")
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {c.token}"}) as http:
        r = await http.get(f"{c.url}{chirp}new")
        assert r.status_code == 200 and r.json() == {"text": "live"}
        r = await http.get(f"{c.url}{chirp}3")
        assert r.status_code == 404
    await wait_until(lambda: follower.status == "retrying", what="the follower to notice")
    assert follower.reason


async def test_resume_from_cursor_and_find_a_moved_owner(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    await a.share("/~/chirp/")
    chirp = f"/{a.pubkey}/chirp/"
    await a.node.save("/~/chirp/1", 1)
    await b.follow(chirp)
    await wait_until(lambda: has(b, chirp + "1"))
    follower = next(iter(b.federation.followers.values()))
    await wait_until(lambda: follower.status == "live")
    await cluster.stop("b")  # its cursor is stored in /~/.federation/follows/<id>
    for i in range(2, 12):
        a.node.bus.save(f"/~/chirp/{i}", i)
    await a.node.flush()
    b = await cluster.add("b")
    stored = b.node.bus.fetch(state_key(b.pubkey, follower.follow.id)).value
    assert isinstance(stored, dict) and stored["cursors"][a.pubkey] > 0
    await wait_until(lambda: live(b), what="resume after restart")
    assert has(b, chirp + "11", 11)
    resumed = next(iter(b.federation.followers.values()))
    assert resumed.synced_ops == 10  # anti-entropy moved exactly the ops it lacked
    # the owner moves: new port, same key; the follower re-resolves it through the DHT
    old_url = a.url
    await cluster.stop("a")
    a = await cluster.add("a")
    assert a.url != old_url
    await a.node.save("/~/chirp/moved", "here now")
    await wait_until(lambda: has(b, chirp + "moved"), timeout=15, what="the moved owner")
    assert resumed.url == a.url


async def test_partition_heal_moves_only_the_missing_ops(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    await a.share("/~/chirp/")
    chirp = f"/{a.pubkey}/chirp/"
    for i in range(300):
        a.node.bus.save(f"/~/chirp/{i}", {"text": "x" * 80, "n": i})
    await a.node.flush()  # one group commit
    await b.follow(chirp)
    await wait_until(lambda: live(b))
    assert has(b, chirp + "299")
    await cluster.stop("b")
    for i in range(10):
        a.node.bus.save(f"/~/chirp/{i}", {"text": "edited", "n": i})
    for i in range(290, 295):
        a.node.bus.delete(f"/~/chirp/{i}")
    await a.node.flush()
    b = await cluster.add("b")  # anti-entropy runs first on every (re)connect
    await wait_until(lambda: live(b))
    follower = next(iter(b.federation.followers.values()))
    assert has(b, chirp + "0", {"text": "edited", "n": 0}) and not has(b, chirp + "294")
    assert follower.streamed_ops == 0  # the stream resumed after what anti-entropy brought
    assert follower.synced_ops == 15, (follower.state(), follower.applied, len(b.federation.followers))
    assert op_set(a.node, chirp).ops == op_set(b.node, chirp).ops
    full = op_set(a.node, chirp).total_bytes
    assert follower.sync_bytes < full / 4, (follower.sync_bytes, full)


async def test_peer_requests_are_signed_and_checked(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    await a.node.save("/~/private/x", 1)
    await a.node.save("/~/public/y", 2)
    url = f"{a.url}/.well-known/statebus/ops"
    async with httpx.AsyncClient() as http:
        r = await http.get(url, params={"pattern": f"/{a.pubkey}/public/", "live": "0"})
        assert r.status_code == 401  # unsigned

        async def signed(pattern: str, nonce: str | None = None) -> httpx.Response:
            req = http.build_request("GET", url, params={"pattern": pattern, "live": "0"})
            req.headers.update(sign_request("GET", str(req.url), req.headers, b"", b.identity, nonce=nonce))
            return await http.send(req)

        r = await signed(f"/{a.pubkey}/public/")
        assert r.status_code == 200 and r.headers["statebus-node"] == a.pubkey
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert [line["op"]["k"] for line in lines] == [f"/{a.pubkey}/public/y"]
        assert (await signed(f"/{a.pubkey}/private/")).status_code == 403
        assert (await signed(f"/{a.pubkey}/public/", nonce="n1")).status_code == 200
        assert (await signed(f"/{a.pubkey}/public/", nonce="n1")).status_code == 401  # replay
        # a live stream ends when the app's stream registry closes (graceful shutdown)
        req = http.build_request("GET", url, params={"pattern": f"/{a.pubkey}/public/"})
        req.headers.update(sign_request("GET", str(req.url), req.headers, b"", b.identity))
        response = await http.send(req, stream=True)
        stream_lines = response.aiter_lines()
        assert json.loads(await anext(stream_lines))["op"]["k"].endswith("/public/y")
        assert json.loads(await anext(stream_lines)) == {"live": True, "seq": a.node.committer.durable_seq}
        a.server.statebus_app.state.streams.close_all()
        rest = await asyncio.wait_for(_drain(stream_lines), 5)  # ends instead of waiting for pings
        assert all("op" not in json.loads(line) for line in rest)
        await response.aclose()


async def test_quota_stops_a_follow_with_a_reason(cluster: Cluster) -> None:
    a = await cluster.add("a")
    b = await cluster.add("b", quota_bytes_per_remote_namespace=6000)
    await a.share("/~/chirp/")
    for i in range(60):
        a.node.bus.save(f"/~/chirp/{i}", {"text": "y" * 100})
    await a.node.flush()
    await b.follow(f"/{a.pubkey}/chirp/")
    follower = next(iter(b.federation.followers.values()))
    await wait_until(lambda: follower.status == "stopped")
    assert follower.reason.startswith("quota_exceeded")
    assert 0 < b.federation.ingest.usage(a.pubkey) <= 6000
    assert sum(len(v) for v in op_set(b.node, f"/{a.pubkey}/").ops.values()) <= 6000


async def test_a_fresh_follower_of_a_compacted_key_gets_the_current_value_once(cluster: Cluster) -> None:
    a = await cluster.add("a", history_keep_ops=1)
    b = await cluster.add("b")
    await a.share("/~/chirp/")
    chirp = f"/{a.pubkey}/chirp/"
    for i in range(12):
        await a.node.save("/~/chirp/counter", i)  # compaction folds the old ops away
    assert a.node.bus.storage.horizon(chirp) > 0
    async with httpx.AsyncClient() as http:
        req = http.build_request(
            "GET", f"{a.url}/.well-known/statebus/ops", params={"pattern": chirp, "since": "0", "live": "0"}
        )
        req.headers.update(sign_request("GET", str(req.url), req.headers, b"", b.identity))
        first = json.loads((await http.send(req)).text.splitlines()[0])
        assert first["reset"] == "compacted" and first["seq"] >= 12
    await b.follow(chirp)
    await wait_until(lambda: live(b))
    assert b.node.bus.fetch(chirp + "counter").value == 11
    follower = next(iter(b.federation.followers.values()))
    assert follower.streamed_ops == 0 and 1 <= follower.synced_ops < 12


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    assert backoff(0, 0.25, 30, lambda: 0.0) == 0.125
    assert backoff(0, 0.25, 30, lambda: 1.0) == 0.25
    assert backoff(3, 0.25, 30, lambda: 1.0) == 2.0
    assert backoff(50, 0.25, 30, lambda: 0.0) == 15.0
    samples = {backoff(4, 0.25, 30) for _ in range(20)}
    assert len(samples) > 1 and all(2.0 <= x <= 4.0 for x in samples)


async def test_follow_records_start_and_stop_followers(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    await a.share("/~/chirp/")
    chirp, public = f"/{a.pubkey}/chirp/", f"/{a.pubkey}/public/"
    await asyncio.gather(b.follow(chirp), b.follow(public))  # two records in quick succession
    await wait_until(lambda: len(b.federation.followers) == 2 and live(b))
    assert b.federation.ingest.accepts(a.pubkey)
    await b.unfollow(chirp)
    await wait_until(lambda: len(b.federation.followers) == 1)
    assert b.federation.ingest.accepts(a.pubkey)  # still follows public/
    await b.unfollow(public)
    await wait_until(lambda: not b.federation.followers)
    assert not b.federation.ingest.accepts(a.pubkey)
    await a.node.save("/~/chirp/after", 1)
    await asyncio.sleep(0.3)
    assert not has(b, chirp + "after")


async def test_the_acl_decides_what_a_peer_reads_of_our_namespace(cluster: Cluster) -> None:
    a, b, c = await cluster.add("a"), await cluster.add("b"), await cluster.add("c")
    await a.node.save("/~/.acl/notes", {"read": [b.pubkey]})
    await a.node.save("/~/.acl/notes/secret", {"read": "owner"})
    await a.node.save("/~/notes/hello", "for b")
    await a.node.save("/~/notes/secret/plan", "for nobody")
    notes = f"/{a.pubkey}/notes/"
    await b.follow(notes)
    await c.follow(notes)
    await wait_until(lambda: live(b))
    assert b.node.bus.fetch(notes + "hello").value == "for b"
    assert not has(b, notes + "secret/plan")
    await a.node.save("/~/notes/later", "live, for b")
    await a.node.save("/~/notes/secret/later", "still for nobody")
    await wait_until(lambda: has(b, notes + "later"))
    await asyncio.sleep(0.2)
    assert not has(b, notes + "secret/later")
    follower_c = next(iter(c.federation.followers.values()))
    await wait_until(lambda: follower_c.status == "retrying")
    assert "403" in follower_c.reason and not has(c, notes + "hello")
