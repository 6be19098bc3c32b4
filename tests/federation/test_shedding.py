"""Shedding: an origin whose peer stream slots are full sends new followers to relays (issue 14, item 6).

Real nodes on loopback, a tiny slot cap: the third follower is shed, follows a relay the origin's
signed list names, and receives new ops live, verified against the owner's key; a relay that forges
an op is dropped for the other; when that relay goes offline the follower falls back to the origin.
A relay list that does not verify is refused and nothing it names is contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from statebus.cli.federation import peer_line
from statebus.errors import BadSignature, InvalidValue
from statebus.federation.follow import Follower
from statebus.federation.relays import MAX_DEPTH, Relay, RelayBook, choose, make_list, verify
from statebus.identity import Identity, verify_op
from statebus.oplog import decode_op
from statebus.server import Cluster, RunningNode

from .support import has, live, wait_until

pytestmark = pytest.mark.anyio

OWNER, STRANGER = Identity.generate(), Identity.generate()


def follower_of(node: RunningNode) -> Follower:
    return next(iter(node.federation.followers.values()))


def open_streams(node: RunningNode) -> int:
    return len(node.endpoints.open_streams())


async def test_the_third_follower_is_shed_to_a_relay_and_leaves_a_lying_or_dead_one(cluster: Cluster) -> None:
    a = await cluster.add("a", max_peer_streams=2)
    b, c = await cluster.add("b", relay=True), await cluster.add("c", relay=True)
    d = await cluster.add("d")
    await a.share("/~/chirp/")
    for i in range(5):
        await a.node.save(f"/~/chirp/{i}", {"n": i})
    chirp = f"/{a.pubkey}/chirp/"
    for relay in (b, c):
        await relay.follow(chirp)
    await wait_until(lambda: live(b) and live(c), what="b and c live on the origin")
    await wait_until(lambda: len(a.federation.relays) == 2, what="the origin knows its two relays")
    assert open_streams(a) == 2

    await d.follow(chirp)
    await wait_until(lambda: live(d), what="d live on a relay")
    fd = follower_of(d)
    by_url = {b.url: b, c.url: c}
    assert fd.url in by_url, "d follows a relay, not the origin"
    assert (fd.shed, fd.shed_by, fd.depth) == (1, a.pubkey, 2)
    assert open_streams(a) == 2, "the origin still serves only its two slots"
    assert a.endpoints.shed >= 1 and a.endpoints.sent_bytes > 0
    await a.node.save("/~/chirp/new", {"text": "viral"})
    await wait_until(lambda: has(d, chirp + "new", {"text": "viral"}), what="the new op reaches d live")
    await d.node.flush()  # scan reads what is on disk
    stored = next(s for s in d.node.scan(chirp, 0, 100) if s.key == chirp + "new")
    verify_op(decode_op(stored.data))  # the owner's signature, whoever relayed it (raises if not)
    assert decode_op(stored.data).author == a.pubkey
    state = d.node.fetch(f"/~/.federation/follows/{fd.follow.id}").value
    assert state["depth"] == 2 and state["shed_by"] == a.pubkey and state["url"] == fd.url
    line = peer_line({"pattern": chirp, "state": state})  # as `statebus peers` prints it
    assert f"via {fd.url} (a relay: shed by {a.pubkey[:12]}…, 2 hops from the owner)" in line
    metrics = a.server.statebus_app.state.metrics.render().decode()
    assert "statebus_peer_relays 2.0" in metrics and "statebus_peer_streams 2.0" in metrics

    # the relay d is on ends its stream: d comes back to it, still as a relay it was shed to
    liar = by_url[fd.url]
    other = c if liar is b else b
    connections = fd.connections
    for slot in liar.endpoints.open_streams():
        slot.interrupt("test")
    await wait_until(lambda: fd.connections > connections and fd.live.is_set(), what="d reconnects")
    assert (fd.url, fd.depth, fd.shed_by) == (liar.url, 2, a.pubkey)
    # then it slips in an op it made from a real one: d leaves it for the other relay
    real = decode_op(stored.data)
    liar.node.bus.apply(dataclasses.replace(real, key=chirp + "evil", body={"text": "forged"}))
    await liar.node.flush()
    await wait_until(lambda: fd.url == other.url and fd.live.is_set(), what="d moves to the honest relay")
    assert liar.url in fd.dropped and "sent a forged op: bad_signature" in fd.last_rejection
    assert not has(d, chirp + "evil")
    await a.node.save("/~/chirp/after-lie", 1)
    await wait_until(lambda: has(d, chirp + "after-lie", 1), what="ops flow through the honest relay")

    # that relay goes offline: d falls back to the origin, which has a free slot again
    await cluster.stop("b" if other is b else "c")
    await wait_until(lambda: fd.url == a.url and fd.live.is_set(), what="d falls back to the origin")
    assert fd.depth == 1 and fd.shed_by is None
    await a.node.save("/~/chirp/direct", 2)
    await wait_until(lambda: has(d, chirp + "direct", 2), what="the origin streams to d directly")


async def test_a_stale_relay_is_dropped(cluster: Cluster) -> None:
    """A relay that keeps its stream to the origin open but does not hold the newest post (here it
    silently discards it) is left: the origin's signed list names that post as its head."""
    a = await cluster.add("a", max_peer_streams=1)
    b, d = await cluster.add("b", relay=True), await cluster.add("d")
    await a.share("/~/chirp/")
    chirp = f"/{a.pubkey}/chirp/"
    await a.node.save("/~/chirp/0", 0)
    take = b.federation.ingest.take

    async def withholding(ops: Any, **kw: Any) -> Any:  # b drops the post it should relay
        kept = [op for op in ops if b"withheld" not in (op if isinstance(op, bytes) else b"")]
        return await take(kept, **kw)

    b.federation.ingest.take = withholding  # type: ignore[method-assign]
    await b.follow(chirp)
    await wait_until(lambda: live(b) and len(a.federation.relays) == 1, what="b relays for a")
    await a.node.save("/~/chirp/withheld", 1)
    await wait_until(lambda: follower_of(b).cursors.get(a.pubkey, 0) >= a.node.durable_seq, what="b's cursor")
    assert not has(b, chirp + "withheld")
    await d.follow(chirp)
    await wait_until(lambda: bool(d.federation.followers) and b.url in follower_of(d).dropped, what="drop")
    fd = follower_of(d)
    assert fd.shed >= 1 and not has(d, chirp + "withheld") and "is stale" in fd.last_rejection
    assert fd.url != b.url or not fd.live.is_set()


async def test_followers_that_come_at_once_are_shed_before_they_pull_the_backlog(cluster: Cluster) -> None:
    """A first sync holds a slot until the stream opens: of three followers asking at once with one
    slot, two are shed at their first request and take no op from the origin."""
    a = await cluster.add("a", max_peer_streams=1)
    await a.share("/~/chirp/")
    for i in range(50):
        a.node.bus.save(f"/~/chirp/{i}", {"text": "x" * 100})
    await a.node.flush()
    fs = [await cluster.add(name) for name in ("b", "c", "d")]
    await asyncio.gather(*(f.follow(f"/{a.pubkey}/chirp/", via=[a.url]) for f in fs))
    await wait_until(lambda: sum(live(f) for f in fs) == 1, what="one follower live")
    await asyncio.sleep(0.5)
    waiting = [follower_of(f) for f in fs if not live(f)]
    assert len(waiting) == 2 and all(w.shed >= 1 and w.applied == 0 for w in waiting)
    assert open_streams(a) == 1


@contextlib.asynccontextmanager
async def fake_server(routes: list[Route]) -> AsyncIterator[str]:
    app = Starlette(routes=routes)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        await wait_until(lambda: server.started)
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


async def test_a_forged_relay_list_is_refused(cluster: Cluster) -> None:
    """An 'origin' that claims the owner's key sheds with a list the owner did not sign (altered, or
    signed by another key): the follower contacts nothing it names. The genuine list is followed
    (the control: the same test fails if lists were not checked, or never acted on). The relay it
    names sheds in turn with a list no deeper than the origin's: refused; one level deeper: followed."""
    hits: dict[str, int] = {"relay": 0, "third": 0}
    mode = {"list": "altered", "relay_depth": 0}
    pattern = f"/{OWNER.pubkey}/chirp/"
    third_key = Identity.generate().pubkey

    def counter(name: str, pubkey: str) -> Any:
        async def node(request: Request) -> Response:
            hits[name] += 1
            return JSONResponse({"v": 1, "pubkey": pubkey})

        return node

    def shedding(signer: Identity, depth: Any, relay: Relay, alter: Any = None) -> Any:
        async def sync(request: Request) -> Response:
            mine = mode["list"] if signer is OWNER else ""
            key = STRANGER if mine == "stranger" else signer
            listed: dict[str, Any] = make_list(key, OWNER.pubkey, depth(), [relay]).to_json()
            if mine == "altered":
                listed["relays"][0]["url"] = relay.url + "/"  # changed after signing
            body = {"error": "shed", "detail": "full", "relays": listed}
            return JSONResponse(body, status_code=503, headers={"retry-after": "1"})

        return sync

    async with fake_server([Route("/.well-known/statebus/node", counter("third", third_key))]) as third_url:
        third = Relay(third_key, third_url, (pattern,), 0)
        relay_routes = [
            Route("/.well-known/statebus/node", counter("relay", STRANGER.pubkey)),
            Route(
                "/.well-known/statebus/sync",
                shedding(STRANGER, lambda: mode["relay_depth"], third),
                methods=["POST"],
            ),
        ]
        async with fake_server(relay_routes) as relay_url:
            relay = Relay(STRANGER.pubkey, relay_url, (pattern,), 0)
            routes = [
                Route("/.well-known/statebus/node", counter("origin", OWNER.pubkey)),
                Route("/.well-known/statebus/sync", shedding(OWNER, lambda: 0, relay), methods=["POST"]),
            ]
            hits["origin"] = 0
            async with fake_server(routes) as origin_url:
                b = await cluster.add("b")
                b.federation.directory = None
                await b.follow(pattern, via=[origin_url])
                fb = follower_of(b)
                await wait_until(lambda: "signature does not verify" in fb.last_rejection, what="altered")
                assert fb.status == "retrying" and "relay list was refused" in fb.reason
                mode["list"] = "stranger"
                await wait_until(lambda: "not by the node asked" in fb.last_rejection, what="stranger's list")
                assert hits["relay"] == 0 and fb.shed >= 2
                mode["list"] = "genuine"
                await wait_until(
                    lambda: "is not below the list" in fb.last_rejection, what="relay's flat list"
                )
                assert hits["relay"] >= 1 and hits["third"] == 0
                mode["relay_depth"] = 1
                await wait_until(lambda: hits["third"] > 0, what="the relay's deeper list is followed")


def test_relay_lists_are_checked_and_choices_spread() -> None:
    pattern = f"/{OWNER.pubkey}/chirp/"
    relays = [Relay(STRANGER.pubkey, f"http://127.0.0.1:{9000 + i}", (pattern,), i % 2) for i in range(4)]
    good = make_list(OWNER, OWNER.pubkey, 0, relays).to_json()
    listed = verify(good, OWNER.pubkey, OWNER.pubkey)
    assert [r.url for r in listed.relays] == [r.url for r in relays]
    with pytest.raises(InvalidValue, match="expired"):
        verify(good, OWNER.pubkey, OWNER.pubkey, now=listed.expires + 1)
    with pytest.raises(InvalidValue, match="hops"):
        verify(make_list(OWNER, OWNER.pubkey, MAX_DEPTH, relays).to_json(), OWNER.pubkey, OWNER.pubkey)
    with pytest.raises(BadSignature):
        verify({**good, "depth": 1}, OWNER.pubkey, OWNER.pubkey)
    with pytest.raises(InvalidValue, match="another namespace"):
        verify(make_list(OWNER, STRANGER.pubkey, 0, []).to_json(), OWNER.pubkey, OWNER.pubkey)
    # least lagging first, at random among equals; a relay of another subtree is not chosen
    firsts = {choose(listed, pattern + "x/")[0].url for _ in range(50)}
    assert firsts == {relays[0].url, relays[2].url}
    assert choose(listed, f"/{OWNER.pubkey}/other/") == []
    assert relays[0].url not in {r.url for r in choose(listed, pattern, skip=[relays[0].url])}


def test_the_book_lists_open_caught_up_relay_streams_only() -> None:
    @dataclasses.dataclass
    class Stream:
        closed: bool = False
        live: bool = True
        seq: int = 10

    book = RelayBook()
    ns = OWNER.pubkey
    up, behind, gone = Stream(), Stream(live=False), Stream()
    book.opened("b" * 51 + "a", "http://127.0.0.1:1", [f"/{ns}/.keys/", f"/{ns}/chirp/"], up)
    book.opened("c" * 51 + "a", "http://127.0.0.1:2", [f"/{ns}/chirp/"], behind)
    book.opened("d" * 51 + "a", "http://127.0.0.1:3", [f"/{ns}/chirp/"], gone)
    book.opened("e" * 51 + "a", "http://127.0.0.1:4", [f"/{ns}/.keys/"], Stream())  # no data: not a relay
    gone.closed = True
    listed = book.relays(ns, 15)
    assert [(r.url, r.patterns, r.lag) for r in listed] == [("http://127.0.0.1:1", (f"/{ns}/chirp/",), 5)]
    assert book.relays(ns, 15, exclude=["b" * 51 + "a"]) == [] and book.relays(STRANGER.pubkey, 15) == []


async def test_the_viral_post_bench_runs_capped_and_uncapped_side_by_side() -> None:
    """``bench.viral_post`` on a small swarm of real nodes: capped at 1 slot, one follower streams from
    the origin and the others from relays; uncapped, all stream from the origin (a star)."""
    from bench.viral_post import main

    out = await main(followers=3, slots=1, posts=2, backlog=5)
    capped, star = (line.split() for line in out.splitlines()[2:4])
    assert capped[:2] == ["slots=1", "1"] and capped[2] == "1:1" and capped[3] == "2:2"
    assert star[:3] == ["no", "cap", "3"], out
