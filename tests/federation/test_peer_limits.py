"""Speed bumps on the server-to-server endpoints, against live nodes (uvicorn on 127.0.0.1, port 0).

A hostile peer is throttled per IP address and per key (429 + Retry-After, nothing stored), may hold
only so many ops streams, and gets 413/400 for oversized or malformed anti-entropy bodies; a normal
follower is never throttled by the defaults, and a throttled one waits and then catches up.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from statebus.bus import Bus
from statebus.federation.client import MAX_RETRY_AFTER, retry_after
from statebus.federation.follow import throttled_delay
from statebus.federation.opset import op_set
from statebus.federation.sync import SyncRequest
from statebus.identity import Identity, sign_op, sign_request
from statebus.oplog import encode_op
from statebus.server import Cluster
from statebus.storage.memory import MemoryStorage

from .support import has, wait_until

pytestmark = pytest.mark.anyio

SYNC = "/.well-known/statebus/sync"
OPS = "/.well-known/statebus/ops"


def build(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    identity: Identity | None,
    body: bytes = b"",
    **params: str,
) -> httpx.Request:
    headers = {"content-type": "application/json"} if body else {}
    req = http.build_request(method, url, params=params or None, content=body or None, headers=headers)
    if identity is not None:
        req.headers.update(sign_request(method, str(req.url), req.headers, body, identity))
    return req


async def send(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    identity: Identity | None,
    body: bytes = b"",
    **params: str,
) -> httpx.Response:
    return await http.send(build(http, method, url, identity, body, **params))


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert body["error"] == code and body["detail"], body
    return body


def foreign_op(owner: Identity, key: str, value: object) -> bytes:
    """A genuine op of ``owner``'s namespace, signed by ``owner`` (a node that follows it takes it)."""
    bus = Bus(MemoryStorage(), owner.pubkey, signer=lambda op: sign_op(op, owner))
    change = bus.save(key, value)
    assert change.op is not None
    return encode_op(change.op)


async def test_a_peer_hammering_gets_429_with_retry_after_and_changes_nothing(cluster: Cluster) -> None:
    a = await cluster.add("a", rate_limit_per_client="4/4 seconds")
    owner, hostile = Identity.generate(), Identity.generate()
    pattern = f"/{owner.pubkey}/public/"  # the owner's rules let any peer sync public/, at a too
    await a.follow(pattern)  # a takes ops of this namespace (from anyone who has them, verified)
    await wait_until(lambda: a.federation.is_followed(owner.pubkey), what="the follow")
    op = foreign_op(owner, "/~/public/1", {"text": "pushed"})
    push = SyncRequest(pattern, (), ops=(op,)).encode()
    harmless = SyncRequest(pattern, ()).encode()
    async with httpx.AsyncClient() as http:
        statuses = [(await send(http, "POST", a.url + SYNC, hostile, harmless)).status_code for _ in range(8)]
        assert statuses[:4] == [200] * 4 and set(statuses[4:]) == {429}, statuses
        r = await send(http, "POST", a.url + SYNC, hostile, push)
        body = assert_error(r, 429, "rate_limited")
        assert "client" in body["detail"] and 1 <= int(r.headers["retry-after"]) <= 4
        assert not op_set(a.node, f"/{owner.pubkey}/").ops  # nothing of that namespace was stored
        # the other endpoints are throttled for that key too; the node's own key is exempt
        r = await send(http, "GET", a.url + OPS, hostile, pattern=pattern, live="0")
        assert_error(r, 429, "rate_limited")
        for _ in range(6):
            mine = await send(
                http, "POST", a.url + SYNC, a.identity, SyncRequest(f"/{a.pubkey}/", ()).encode()
            )
            assert mine.status_code == 200, mine.text
        # after Retry-After the same push is taken: the refusal was the rate, not the request
        await asyncio.sleep(int(r.headers["retry-after"]) + 0.1)
        r = await send(http, "POST", a.url + SYNC, hostile, push)
        assert r.status_code == 200, r.text
        assert has(a, f"{pattern}1")


async def test_floods_from_one_address_are_throttled_before_signatures_are_checked(cluster: Cluster) -> None:
    a = await cluster.add("a", rate_limit_per_ip="6/4 seconds")
    stranger = Identity.generate()
    async with httpx.AsyncClient() as http:
        statuses = [(await http.get(a.url + "/.well-known/statebus/node")).status_code for _ in range(6)]
        assert statuses == [200] * 6
        r = await http.get(a.url + "/.well-known/statebus/node")
        assert_error(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1
        # a badly signed or unsigned request is refused for its address's rate, not verified (401)
        r = await send(http, "GET", a.url + OPS, None, pattern=f"/{a.pubkey}/public/")
        assert_error(r, 429, "rate_limited")
        r = await send(http, "POST", a.url + SYNC, stranger, b"{}")
        assert_error(r, 429, "rate_limited")
        # another address has its own budget (127.0.0.2 is loopback too)
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2")) as other:
            assert (await other.get(a.url + "/.well-known/statebus/node")).status_code == 200


async def _open(http: httpx.AsyncClient, url: str, identity: Identity, pattern: str) -> httpx.Response:
    return await http.send(build(http, "GET", url, identity, pattern=pattern), stream=True)


async def test_too_many_open_peer_streams_are_refused_per_key_and_per_address(cluster: Cluster) -> None:
    a = await cluster.add("a", max_subscriptions_per_client=2)
    p, q = Identity.generate(), Identity.generate()
    public = f"/{a.pubkey}/public/"
    url = a.url + OPS

    def client(address: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=address))

    async with client("127.0.0.1") as one, client("127.0.0.2") as two, client("127.0.0.3") as three:
        held = [await _open(one, url, p, public) for _ in range(2)]
        assert [r.status_code for r in held] == [200, 200]
        lines = [r.aiter_lines() for r in held]  # kept: a dropped iterator closes its response
        for it in lines:  # the streams are really open (caught up, waiting for live ops)
            assert json.loads(await anext(it))["live"] is True
        refused = await send(one, "GET", url, p, pattern=public, live="0")  # live=0: never hangs
        body = assert_error(refused, 429, "rate_limited")
        assert f"node {p.pubkey}" in body["detail"] and refused.headers["retry-after"] == "5"
        # the key's limit holds from another address, the address's limit for another key
        body = assert_error(await send(three, "GET", url, p, pattern=public, live="0"), 429, "rate_limited")
        assert f"node {p.pubkey}" in body["detail"]
        body = assert_error(await send(one, "GET", url, q, pattern=public, live="0"), 429, "rate_limited")
        assert "address 127.0.0.1" in body["detail"]
        fresh = await _open(two, url, q, public)  # a fresh key from a fresh address is served
        assert fresh.status_code == 200
        await fresh.aclose()
        # a closed stream frees its slot
        await held.pop().aclose()
        subs = a.endpoints.access.subscriptions
        await wait_until(lambda: subs.count(p.pubkey) == 1, what="the slot to be freed")
        again = await _open(one, url, p, public)
        assert again.status_code == 200
        for r in [*held, again]:
            await r.aclose()


async def test_oversized_and_malformed_sync_bodies_get_413_and_400(cluster: Cluster) -> None:
    a = await cluster.add("a", max_sync_body_bytes="64KiB")
    owner, peer = Identity.generate(), Identity.generate()
    pattern = f"/{owner.pubkey}/public/"
    await a.follow(pattern)
    await wait_until(lambda: a.federation.is_followed(owner.pubkey), what="the follow")
    good = foreign_op(owner, "/~/public/1", "x")
    async with httpx.AsyncClient() as http:
        big = SyncRequest(pattern, (), ops=(good,) * 300).encode()
        assert len(big) > 64 * 1024
        r = await send(http, "POST", a.url + SYNC, peer, big)
        assert "max_sync_body_bytes" in assert_error(r, 413, "too_large")["detail"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: refused while reading
            for _ in range(100):
                yield b"x" * 1024

        r = await http.post(a.url + SYNC, content=chunks())
        assert_error(r, 413, "too_large")
        outside = foreign_op(owner, "/~/elsewhere/1", "x")
        malformed = {
            b"not json": "json",
            b"[]": "version 1 object",
            json.dumps({"v": 2, "pattern": pattern, "ranges": []}).encode(): "version 1 object",
            json.dumps({"v": 1, "pattern": pattern}).encode(): "ranges",
            json.dumps({"v": 1, "pattern": "/x", "ranges": []}).encode(): "pattern",
            json.dumps({"v": 1, "pattern": pattern, "ranges": [["zz", 1, "x"]]}).encode(): "prefix",
            json.dumps({"v": 1, "pattern": pattern, "ranges": [], "want": ["short"]}).encode(): "op id",
            SyncRequest(pattern, (), ops=(good, b'{"k":"/x"}')).encode(): "op",
            SyncRequest(pattern, (), ops=(outside,)).encode(): "outside the pattern",
        }
        for body, reason in malformed.items():
            r = await send(http, "POST", a.url + SYNC, peer, body)
            assert r.status_code == 400, (body[:80], r.status_code, r.text)
            assert reason in r.json()["detail"].lower(), (reason, r.json())
    assert not op_set(a.node, f"/{owner.pubkey}/").ops  # nothing was taken, not even the good op


async def test_normal_follow_and_anti_entropy_work_under_default_limits(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    await a.share("/~/chirp/")
    chirp = f"/{a.pubkey}/chirp/"
    for i in range(2000):
        a.node.bus.save(f"/~/chirp/{i}", {"text": f"post {i}"})
    await a.node.flush()
    await b.follow(chirp, via=[a.url])
    await wait_until(functools.partial(has, b, chirp + "1999"), what="the backlog")
    await cluster.stop("b")
    for i in range(1500, 3500):  # 500 edits and 1500 new posts while b is away
        a.node.bus.save(f"/~/chirp/{i}", {"text": f"post {i} again"})
    await a.node.flush()
    b = await cluster.add("b")
    follower = next(iter(b.federation.followers.values()))
    await wait_until(lambda: follower.live.is_set(), what="live again")
    assert op_set(a.node, chirp).ops == op_set(b.node, chirp).ops
    assert follower.synced_ops >= 2000 and follower.throttled == 0
    assert "rate_limited" not in follower.reason


async def test_a_throttled_follower_backs_off_and_then_catches_up(cluster: Cluster) -> None:
    a = await cluster.add("a", rate_limit_per_client="6/3 seconds")
    b = await cluster.add("b")
    await a.share("/~/chirp/")
    chirp = f"/{a.pubkey}/chirp/"
    for i in range(30):
        a.node.bus.save(f"/~/chirp/{i}", {"text": f"post {i}"})
    await a.node.flush()
    seen: list[tuple[str, float, int, str]] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append(("request", time.monotonic(), 0, request.url.path))

    async def on_response(response: httpx.Response) -> None:
        wait = response.headers.get("retry-after", "")
        seen.append(("response", time.monotonic(), response.status_code, wait))

    b.federation.client._http.event_hooks["request"].append(on_request)
    b.federation.client._http.event_hooks["response"].append(on_response)
    async with httpx.AsyncClient() as http:  # spend b's budget at a, as a burst of its own would
        for _ in range(6):
            r = await send(http, "GET", a.url + OPS, b.identity, pattern=chirp, live="0")
            assert r.status_code == 200
    await b.follow(chirp, via=[a.url])
    await wait_until(lambda: bool(b.federation.followers), what="the follower")
    follower = next(iter(b.federation.followers.values()))
    async with httpx.AsyncClient() as http:  # keep the budget spent until the follower meets a 429
        deadline = time.monotonic() + 15
        while follower.throttled == 0 and time.monotonic() < deadline:
            await send(http, "GET", a.url + OPS, b.identity, pattern=chirp, live="0")
            await asyncio.sleep(0.05)
    await wait_until(lambda: follower.live.is_set() and has(b, chirp + "29"), what="catching up")
    assert op_set(a.node, chirp).ops == op_set(b.node, chirp).ops
    throttles = [i for i, e in enumerate(seen) if e[0] == "response" and e[2] == 429]
    assert throttles and follower.throttled >= 1, seen
    for i in throttles:  # the next request came no sooner than the server asked
        later = next(e for e in seen[i + 1 :] if e[0] == "request")
        assert later[1] - seen[i][1] >= int(seen[i][3]) - 0.05, (seen[i], later)
    assert follower.status == "live" and follower.reason == ""


def test_retry_after_is_read_and_bounded() -> None:
    assert retry_after("3") == 3.0
    assert retry_after(None) == retry_after("") == retry_after("soon") == retry_after("-1") == 1.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 1.0
    assert retry_after("99999999") == MAX_RETRY_AFTER


def test_a_throttled_follower_waits_at_least_retry_after_with_jitter() -> None:
    assert throttled_delay(2.0, 0.25, rnd=lambda: 0.0) == 2.0
    assert throttled_delay(2.0, 0.25, rnd=lambda: 1.0) == 2.5
    assert throttled_delay(0.0, 0.25, rnd=lambda: 0.0) == 0.25
