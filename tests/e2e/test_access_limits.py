"""Every speed bump against a live node: 413 (body, value, quota), 429 + Retry-After (rates, open
subscriptions, full nonce store), and nothing stored by a refused request."""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

import httpx

from statebus.identity import Identity, sign_op, sign_request
from statebus.oplog import Op, encode_op, mint_version
from statebus.testing.live_server import LiveServer, live_server

OP_TYPE = "application/vnd.statebus.op+json"
CLOCK = itertools.count(1)
"""Lamport clocks of the ops made here (a remote op may run at most 2^32 ahead of a key's history)."""


def signed(c: httpx.Client, who: Identity, method: str, path: str, **kw: Any) -> httpx.Response:
    stream = kw.pop("stream", False)
    req = c.build_request(method, path, **kw)
    req.headers.update(sign_request(req.method, str(req.url), req.headers, req.content, who))
    return c.send(req, stream=stream)


def make_op(who: Identity, key: str, value: Any) -> bytes:
    op = Op(key, "", (), who.pubkey, next(CLOCK), "lww", "set", value)
    return encode_op(sign_op(dataclasses.replace(op, version=mint_version(op)), who))


def state(srv: LiveServer) -> tuple[int, list[str]]:
    bus = srv.node.bus
    return bus.seq, bus.walk(f"/{bus.local}/", 10_000)


def test_body_and_value_size(tmp_path: Path) -> None:
    with (
        live_server(tmp_path / "n", max_body_bytes=1000, max_value_bytes=100) as srv,
        httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as owner,
    ):
        before = state(srv)
        r = owner.put("/~/big", json="x" * 2000)
        assert r.status_code == 413 and r.json()["error"] == "too_large"
        r = owner.put("/~/big", json="x" * 500)
        assert r.status_code == 413
        # a signed request over the body limit is refused before its signature is even checked
        alice = Identity.generate()
        r = signed(owner, alice, "PUT", "/~/big", content=b"x" * 2000, headers={"content-type": OP_TYPE})
        assert r.status_code == 413
        assert state(srv) == before
        # a signed op whose value is over max_value_bytes (the body is under max_body_bytes)
        key = f"/{srv.local}/big"
        assert owner.put("/~/.acl/big", json={"write": [alice.pubkey]}).status_code == 200
        before = state(srv)
        op = make_op(alice, key, "y" * 300)
        r = signed(owner, alice, "PUT", "/~/big", content=op, headers={"content-type": OP_TYPE})
        assert r.status_code == 413 and "value" in r.json()["detail"]
        assert state(srv) == before


def test_bad_signature_floods_are_rate_limited_by_address(tmp_path: Path) -> None:
    with (
        live_server(tmp_path / "n", rate_limit_per_ip="5/minute") as srv,
        httpx.Client(base_url=srv.url, timeout=10) as anon,
    ):
        mallory = Identity.generate()
        codes = []
        for _ in range(7):
            req = anon.build_request("GET", "/~/public/x")
            req.headers.update(sign_request(req.method, str(req.url), req.headers, None, mallory))
            req.headers["signature"] = "sb=:" + "A" * 86 + "==:"
            codes.append(anon.send(req).status_code)
        assert codes == [401] * 5 + [429] * 2


def test_rate_limits_per_ip_and_per_key(tmp_path: Path) -> None:
    with (
        live_server(tmp_path / "n", rate_limit_per_ip="8/minute", rate_limit_per_client="3/minute") as srv,
        httpx.Client(base_url=srv.url, timeout=10) as anon,
    ):
        alice, bob = Identity.generate(), Identity.generate()
        codes = [signed(anon, alice, "GET", "/~/public/x").status_code for _ in range(4)]
        assert codes[:3] == [404, 404, 404] and codes[3] == 429
        r = signed(anon, alice, "GET", "/~/public/x")
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
        assert r.json()["error"] == "rate_limited"
        # bob has his own key budget, but the address budget (8) runs out
        # (alice's 5 requests all counted against the address, refused or not)
        codes = [signed(anon, bob, "GET", "/~/public/x").status_code for _ in range(4)]
        assert codes == [404, 404, 404, 429]
        assert "address" in signed(anon, bob, "GET", "/~/public/x").json()["detail"]
        assert anon.get("/~/public/x").status_code == 429
        # the owner is never throttled
        for _ in range(5):
            assert anon.get("/~/public/x", headers=srv.auth).status_code == 404


def test_open_subscription_limit(tmp_path: Path) -> None:
    with (
        live_server(tmp_path / "n", max_subscriptions_per_client=2, sse_ping_interval=0.2) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        carol = Identity.generate()
        sse = {"Accept": "text/event-stream"}
        streams = [signed(c, carol, "GET", "/~/public/", headers=sse, stream=True) for _ in range(2)]
        try:
            assert [s.status_code for s in streams] == [200, 200]
            third = signed(c, carol, "GET", "/~/public/", headers=sse, stream=True)
            assert third.status_code == 429 and "retry-after" in third.headers
            third.read()
            assert "open subscriptions" in third.json()["detail"]
            third.close()
            # anonymous clients are counted per address, apart from carol
            anon = c.send(c.build_request("GET", "/~/public/", headers=sse), stream=True)
            assert anon.status_code == 200
            anon.close()
        finally:
            for s in streams:
                s.close()
        # closing one frees a slot
        deadline = time.monotonic() + 5
        while True:
            again = signed(c, carol, "GET", "/~/public/", headers=sse, stream=True)
            code = again.status_code
            again.close()
            if code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert code == 200


def test_quota_per_remote_namespace(tmp_path: Path) -> None:
    with (
        live_server(tmp_path / "n", quota_bytes_per_remote_namespace=700) as srv,
        httpx.Client(base_url=srv.url, timeout=10) as c,
    ):
        alice = Identity.generate()
        assert c.put("/~/.acl/.host", json=[alice.pubkey], headers=srv.auth).status_code == 200
        key = f"/{alice.pubkey}/notes/1"
        r = signed(
            c,
            alice,
            "PUT",
            key,
            content=make_op(alice, key, "a" * 100),
            headers={"content-type": OP_TYPE},
        )
        assert r.status_code == 200, r.text
        before = state(srv), srv.node.bus.seq
        r = signed(
            c,
            alice,
            "PUT",
            key,
            content=make_op(alice, key, "b" * 300),
            headers={"content-type": OP_TYPE},
        )
        assert r.status_code == 413 and r.json()["error"] == "quota_exceeded"
        assert (state(srv), srv.node.bus.seq) == before
        assert c.get(key, headers=srv.auth).json() == "a" * 100
