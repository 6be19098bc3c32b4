"""Braid-HTTP subscriptions against a real server, parsed as braid-http's client parses them."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from statebus.testing.braid_stream import BraidStreamParser, StreamUpdate
from statebus.testing.live_server import LiveServer


class Updates:
    def __init__(self, response: httpx.Response) -> None:
        self.parser = BraidStreamParser()
        self.chunks: Iterator[bytes] = response.iter_raw()
        self.pending: list[StreamUpdate] = []
        self.raw = b""

    def next(self) -> StreamUpdate:
        while not self.pending:
            chunk = next(self.chunks)
            self.raw += chunk
            self.pending.extend(self.parser.feed(chunk))
        return self.pending.pop(0)


def sub_headers(srv: LiveServer, **extra: str) -> dict[str, str]:
    return {**srv.auth, "Subscribe": "true", **extra}


def put(srv: LiveServer, key: str, body: bytes, **headers: str) -> httpx.Response:
    r = httpx.put(srv.url + key, content=body, headers={**srv.auth, **headers})
    assert r.status_code == 200, r.text
    return r


def test_209_framing_snapshot_patches_snapshots_and_404(srv: LiveServer) -> None:
    put(srv, "/~/b", b'{"a":1}', Version='"v1"')
    with httpx.stream("GET", srv.url + "/~/b", headers=sub_headers(srv), timeout=10) as r:
        assert r.status_code == 209
        assert r.headers["subscribe"]
        assert r.headers["cache-control"] == "no-cache, no-transform, no-store"
        assert r.headers["x-accel-buffering"] == "no"
        assert r.headers["current-version"] == '"v1"'
        assert r.headers["range-request-allow-units"] == "json"
        u = Updates(r)
        first = u.next()
        assert first.status == "200" and first.version == ("v1",) and first.json() == {"a": 1}
        assert first.parents is None
        put(srv, "/~/b", b"2", Version='"v2"', **{"Content-Range": "json .a"})
        p = u.next()
        assert p.version == ("v2",) and p.parents == ("v1",) and p.patches is not None
        assert [(x.range, x.json()) for x in p.patches] == [(".a", 2)]
        put(srv, "/~/b", b'{"all":"new"}', Version='"v3"')
        s = u.next()
        assert s.version == ("v3",) and s.parents == ("v2",) and s.json() == {"all": "new"}
        httpx.delete(srv.url + "/~/b", headers={**srv.auth, "Version": '"v4"'})
        d = u.next()
        assert d.status == "404" and d.body == b"" and d.version == ("v4",)


@pytest.mark.parametrize("value", ["", "true", "?1", "anything"])
def test_any_subscribe_value(srv: LiveServer, value: str) -> None:
    put(srv, "/~/any", b"1")
    with httpx.stream("GET", srv.url + "/~/any", headers=sub_headers(srv, Subscribe=value), timeout=10) as r:
        assert r.status_code == 209
        assert Updates(r).next().json() == 1


def test_subscribe_before_creation_then_bytes(srv: LiveServer) -> None:
    with httpx.stream("GET", srv.url + "/~/later", headers=sub_headers(srv), timeout=10) as r:
        assert r.status_code == 209 and "current-version" not in r.headers
        u = Updates(r)
        assert u.next().status == "404"
        put(srv, "/~/later", b"\x00\x01", **{"Content-Type": "application/octet-stream"})
        created = u.next()
        assert created.body == b"\x00\x01" and created.headers["content-type"] == "application/octet-stream"


def test_resume_with_parents_sends_only_newer(srv: LiveServer) -> None:
    for i in range(1, 4):
        put(srv, "/~/h", str(i).encode(), Version=f'"h{i}"')
    with httpx.stream("GET", srv.url + "/~/h", headers=sub_headers(srv, Parents='"h1"'), timeout=10) as r:
        assert r.status_code == 209
        u = Updates(r)
        got = [u.next(), u.next()]
        assert [g.version for g in got] == [("h2",), ("h3",)]
        assert [g.json() for g in got] == [2, 3]
        put(srv, "/~/h", b"4", Version='"h4"')
        assert u.next().version == ("h4",)
    with httpx.stream("GET", srv.url + "/~/h", headers=sub_headers(srv, Parents='"h4"'), timeout=10) as r:
        u = Updates(r)
        put(srv, "/~/h", b"5", Version='"h5"')
        nxt = u.next()
        assert nxt.version == ("h5",) and nxt.parents == ("h4",)


def test_unknown_parents_is_410_and_bad_headers_400(srv: LiveServer) -> None:
    put(srv, "/~/g", b"1", Version='"g1"')
    r = httpx.get(srv.url + "/~/g", headers=sub_headers(srv, Parents='"nope"'))
    assert r.status_code == 410 and r.json()["error"] == "history_compacted"
    r = httpx.get(srv.url + "/~/g", headers=sub_headers(srv, Parents="unquoted"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_value"
    r = httpx.get(srv.url + "/~/g", headers=sub_headers(srv, Heartbeats="often"))
    assert r.status_code == 400
    r = httpx.get(srv.url + "/~/sub/", headers=sub_headers(srv))
    assert r.status_code == 400 and r.json()["error"] == "invalid_key"


def test_heartbeats_echoed_and_sent(srv: LiveServer) -> None:
    put(srv, "/~/hb", b"1")
    with httpx.stream("GET", srv.url + "/~/hb", headers=sub_headers(srv, Heartbeats="0.2s"), timeout=10) as r:
        assert r.headers["heartbeats"] == "0.2s"
        u = Updates(r)
        u.next()
        extra = b""
        for chunk in u.chunks:
            extra += chunk
            if extra.count(b"\r\n") >= 2:
                break
        assert extra.strip(b"\r\n") == b""


def test_echo_suppressed_only_for_the_same_peer(srv: LiveServer) -> None:
    put(srv, "/~/e", b"0")
    with httpx.stream("GET", srv.url + "/~/e", headers=sub_headers(srv, Peer="me"), timeout=10) as r:
        u = Updates(r)
        u.next()
        put(srv, "/~/e", b"1", Peer='"me"')
        put(srv, "/~/e", b"2", Peer="someone-else")
        put(srv, "/~/e", b"3")
        assert [u.next().json(), u.next().json()] == [2, 3]


def test_multiplex_is_refused(srv: LiveServer) -> None:
    """braid-http's browser client falls back to plain GETs unless MULTIPLEX gets 200 + Multiplex-Version."""
    r = httpx.post(srv.url + "/.well-known/multiplexer/abc", headers={"Multiplex-Version": "1.0"})
    assert r.status_code >= 400 and "multiplex-version" not in r.headers
    host, port = srv.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"MULTIPLEX /abc HTTP/1.1\r\nHost: x\r\nMultiplex-Version: 1.0\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    status_line = reply.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 4"), reply
    assert b"multiplex-version" not in reply.lower()
