"""ACL changes reach OPEN streams at once: SSE (subtree and key), Braid subscriptions and websockets.

A subscriber that loses read access is cut off; a subtree stream never delivers keys the client
may not read; a reader that gains access can subscribe."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from statebus.http.websocket import WS_PATH
from statebus.identity import Identity, sign_request
from statebus.testing.live_server import LiveServer, SseReader, live_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("acl-streams"), sse_ping_interval=0.2) as s:
        yield s


@pytest.fixture
def owner(srv: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as c:
        yield c


def open_signed_stream(c: httpx.Client, who: Identity, path: str, headers: dict[str, str]) -> httpx.Response:
    req = c.build_request("GET", path, headers=headers)
    req.headers.update(sign_request("GET", str(req.url), req.headers, None, who))
    return c.send(req, stream=True)


def put(owner: httpx.Client, path: str, value: Any) -> None:
    r = owner.put(path, json=value)
    assert r.status_code == 200, r.text


def test_sse_subtree_filters_and_is_cut_off_when_access_is_withdrawn(
    srv: LiveServer, owner: httpx.Client
) -> None:
    bob = Identity.generate()
    put(owner, "/~/.acl/s1", {"read": [bob.pubkey]})
    put(owner, "/~/.acl/s1/secret", {"read": "owner"})
    put(owner, "/~/s1/a", "a0")
    put(owner, "/~/s1/secret/x", "hidden")
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        r = open_signed_stream(c, bob, "/~/s1/", {"Accept": "text/event-stream"})
        try:
            assert r.status_code == 200
            sse = SseReader(r)
            snap = sse.next_event()
            assert snap["data"]["key"].endswith("/s1/a") and snap["data"]["value"] == "a0"
            put(owner, "/~/s1/secret/y", "hidden too")
            put(owner, "/~/s1/b", "b0")
            ev = sse.next_event()
            assert ev["data"]["key"].endswith("/s1/b"), ev  # the secret write was never delivered
            # bob loses access: the stream ends with an error event
            put(owner, "/~/.acl/s1", {"read": "owner"})
            ev = sse.next_event()
            assert ev["event"] == "error" and ev["data"]["error"] == "forbidden"
            assert "withdrawn" in ev["data"]["detail"]
            put(owner, "/~/s1/c", "after")
            with pytest.raises((StopIteration, httpx.ReadError, httpx.RemoteProtocolError)):
                sse.next_event()
        finally:
            r.close()
        # and he cannot come back
        r = open_signed_stream(c, bob, "/~/s1/", {"Accept": "text/event-stream"})
        assert r.status_code == 403
        r.close()


def test_a_reader_that_gains_access_can_subscribe(srv: LiveServer, owner: httpx.Client) -> None:
    carol = Identity.generate()
    put(owner, "/~/s2/k", 1)
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        r = open_signed_stream(c, carol, "/~/s2/k", {"Accept": "text/event-stream"})
        assert r.status_code == 403
        r.close()
        put(owner, "/~/.acl/.lists/readers", [carol.pubkey])
        put(owner, "/~/.acl/s2", {"read": ["@readers"]})
        r = open_signed_stream(c, carol, "/~/s2/k", {"Accept": "text/event-stream"})
        try:
            assert r.status_code == 200
            sse = SseReader(r)
            assert sse.next_event()["data"]["value"] == 1
            put(owner, "/~/s2/k", 2)
            assert sse.next_event()["data"]["value"] == 2
            # removed from the list: cut off at once
            put(owner, "/~/.acl/.lists/readers", [])
            assert sse.next_event()["event"] == "error"
        finally:
            r.close()


def test_braid_subscription_is_cut_off(srv: LiveServer, owner: httpx.Client) -> None:
    dave = Identity.generate()
    put(owner, "/~/.acl/s3", {"read": [dave.pubkey]})
    put(owner, "/~/s3/doc", {"v": 1})
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        r = open_signed_stream(c, dave, "/~/s3/doc", {"Subscribe": "true"})
        try:
            assert r.status_code == 209
            chunks = r.iter_raw()
            got = b""
            while b'{"v":1}' not in got:
                got += next(chunks)
            put(owner, "/~/.acl/.deny", [dave.pubkey])
            put(owner, "/~/s3/doc", {"v": 2})
            rest = b""
            with pytest.raises((StopIteration, httpx.ReadError, httpx.RemoteProtocolError)):
                while True:
                    rest += next(chunks)
            assert b'{"v":2}' not in rest
        finally:
            r.close()
            owner.delete("/~/.acl/.deny")


def test_websocket_subscriber_is_cut_off(srv: LiveServer, owner: httpx.Client) -> None:
    put(owner, "/~/public/ws-doc", "hello")

    async def main() -> None:
        url = srv.url.replace("http://", "ws://") + WS_PATH
        async with connect(url) as ws:  # anonymous
            await ws.send(json.dumps({"get": "public/ws-doc"}))
            first = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert first["set"]["val"] == "hello"
            await ws.send(json.dumps({"get": "private/thing"}))
            refused = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert refused["error"] == "unauthorized"
            await asyncio.to_thread(put, owner, "/~/.acl/public", {"read": "owner"})
            msgs: list[dict[str, Any]] = []
            with pytest.raises(ConnectionClosed):
                while True:
                    msgs.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            assert any(m.get("error") == "forbidden" for m in msgs)
            assert not any(m.get("set", {}).get("val") == "changed" for m in msgs)

    try:
        asyncio.run(main())
    finally:
        owner.delete("/~/.acl/public")


def test_revoking_a_delegate_cuts_its_stream(srv: LiveServer, owner: httpx.Client) -> None:
    from statebus.identity import delegate, keystore, revoke

    root = keystore.load(srv.settings.data_dir)
    phone = Identity.generate()
    rec = delegate(root, phone.pubkey, [f"/{root.pubkey}/s4/"], issued=1)
    put(owner, f"/~/.keys/{phone.pubkey}", rec.to_json())
    put(owner, "/~/s4/n", "note")
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        r = open_signed_stream(c, phone, "/~/s4/", {"Accept": "text/event-stream"})
        try:
            assert r.status_code == 200  # no rule: the delegation alone lets it read its scope
            sse = SseReader(r)
            assert sse.next_event()["data"]["value"] == "note"
            put(owner, f"/~/.keys/{phone.pubkey}", revoke(root, phone.pubkey, issued=2).to_json())
            ev = sse.next_event()
            assert ev["event"] == "error" and "revoked" in ev["data"]["detail"]
        finally:
            r.close()


def test_signed_websocket_reads_by_the_rules_and_cannot_write(srv: LiveServer, owner: httpx.Client) -> None:
    from websockets.exceptions import InvalidStatus

    erin = Identity.generate()
    put(owner, "/~/.acl/s5", {"read": [erin.pubkey], "write": [erin.pubkey]})
    put(owner, "/~/s5/doc", "shared")
    url = srv.url.replace("http://", "ws://") + WS_PATH

    async def main() -> None:
        headers = sign_request("GET", url, {}, None, erin)
        async with connect(url, additional_headers=headers) as ws:
            await ws.send(json.dumps({"get": "s5/doc"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["set"]["val"] == "shared"
            # ops made over the websocket would be authored by the node: only the owner writes here
            await ws.send(json.dumps({"set": {"key": "s5/doc", "val": "mine"}}))
            refused = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert refused["error"] == "forbidden" and "signed ops" in refused["detail"]
        # the same handshake again is a replay; a forged one is refused too
        with pytest.raises(InvalidStatus):
            async with connect(url, additional_headers=headers):
                pass
        forged = dict(sign_request("GET", url, {}, None, erin))
        forged["Signature"] = "sb=:" + "A" * 86 + "==:"
        with pytest.raises(InvalidStatus):
            async with connect(url, additional_headers=forged):
                pass

    asyncio.run(main())
    assert owner.get("/~/s5/doc").json() == "shared"
