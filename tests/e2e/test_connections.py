"""The connection layer against a live node: header, body and idle timeouts, caps per address and in
total, the owner's reserve, and client addresses behind a trusted proxy (issue 9, defects 5 and 7).

Clients are raw sockets bound to other loopback addresses (127.0.0.2, 127.0.0.3…) so that each test
can play several client IPs; every socket is closed by the test.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from statebus.testing.live_server import LiveServer, live_server

LONG = 30.0
"""A timeout that never fires during a test (the default ones would do too)."""


@contextlib.contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    """A list to put test sockets in; all of them are closed on exit."""
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def connect(srv: LiveServer, opened: list[socket.socket], source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.server.port), timeout=5, source_address=(source, 0))
    opened.append(sock)
    return sock


def request(path: str, headers: dict[str, str] | None = None, *, close: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response (a Content-Length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside a body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def ask(
    srv: LiveServer, opened: list[socket.socket], source: str, headers: dict[str, str] | None = None
) -> Any:
    """A GET of a public key from ``source``: its status and JSON error code (None on success)."""
    sock = connect(srv, opened, source)
    sock.sendall(request("/~/public/x", headers))
    status, _, body = read_response(sock)
    code = json.loads(body).get("error") if body.startswith(b"{") else None
    return status, code


def closed_after(sock: socket.socket, within: float) -> float | None:
    """Seconds until the peer closes ``sock`` (reading and dropping what it sends), None if it stays open."""
    start = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - start < within:
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def test_slowloris_headers_are_cut_at_the_header_timeout(tmp_path: Path) -> None:
    with live_server(tmp_path / "n", header_timeout=0.6, idle_timeout=LONG) as srv, sockets() as opened:
        sock = connect(srv, opened)
        sock.sendall(b"GET /~/public/x HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        closed = False
        for i in range(40):  # a header line every 0.1 s: always sending, never done
            try:
                sock.sendall(f"X-Slow-{i}: y\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if closed_after(sock, 0.1) is not None:
                closed = True
                break
        elapsed = time.monotonic() - start
        assert closed, "a request whose headers never end was kept open for 4 s"
        assert 0.4 <= elapsed <= 2.0
        metrics = connect(srv, opened)
        metrics.sendall(request("/metrics", srv.auth))
        status, _, body = read_response(metrics)
        assert status == 200
        assert 'statebus_connections_closed_total{reason="headers_timeout"} 1.0' in body.decode()


def test_connections_that_send_nothing_are_closed(tmp_path: Path) -> None:
    with live_server(tmp_path / "n", header_timeout=0.5) as srv, sockets() as opened:
        idle = [connect(srv, opened, f"127.0.1.{i % 8 + 1}") for i in range(40)]
        elapsed = closed_after(idle[0], 3.0)
        assert elapsed is not None, "a connection that never sent a byte stayed open"
        assert 0.3 <= elapsed <= 2.0
        assert all(closed_after(sock, 1.0) is not None for sock in idle[1:])
        guard = srv.server.connections
        assert guard is not None
        deadline = time.monotonic() + 2
        while len(guard.table):  # every slot given back
            assert time.monotonic() < deadline, f"{len(guard.table)} connections still counted"
            time.sleep(0.05)


def test_a_slow_body_is_cut_at_the_body_timeout(tmp_path: Path) -> None:
    with live_server(tmp_path / "n", body_timeout=0.6, idle_timeout=LONG) as srv, sockets() as opened:
        sock = connect(srv, opened)
        head = f"PUT /~/a HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {srv.token}\r\n"
        sock.sendall(f"{head}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n[1".encode())
        elapsed = closed_after(sock, 3.0)
        assert elapsed is not None, "a body that never ends kept its connection open"
        assert 0.4 <= elapsed <= 2.0
        assert srv.node.bus.walk(f"/{srv.local}/", 100) == []  # nothing was written


def test_an_idle_keep_alive_connection_is_closed(tmp_path: Path) -> None:
    with live_server(tmp_path / "n", idle_timeout=0.5, header_timeout=LONG) as srv, sockets() as opened:
        sock = connect(srv, opened)
        sock.sendall(request("/~/public/x", close=False))
        status, headers, _ = read_response(sock)
        assert status == 404 and headers.get("connection") != "close"
        sock.sendall(request("/~/public/x", close=False))  # still open for a second request
        assert read_response(sock)[0] == 404
        elapsed = closed_after(sock, 3.0)
        assert elapsed is not None and 0.3 <= elapsed <= 2.0  # uvicorn alone waits 5 s


def test_streams_outlive_every_timeout(tmp_path: Path) -> None:
    timeouts = {"header_timeout": 0.3, "body_timeout": 0.3, "idle_timeout": 0.3}
    with live_server(tmp_path / "n", sse_ping_interval=5, **timeouts) as srv, sockets() as opened:
        sock = connect(srv, opened)
        sock.sendall(request("/~/public/", {"Accept": "text/event-stream"}, close=False))
        sock.settimeout(5)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        assert closed_after(sock, 1.5) is None  # five times every timeout, no ping yet
        with contextlib.closing(connect(srv, opened)) as writer:
            writer.sendall(
                b"PUT /~/public/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {srv.token}\r\n".encode()
                + b"Content-Length: 1\r\nConnection: close\r\n\r\n7"
            )
            assert read_response(writer)[0] in (200, 201, 204)
        received = b""
        sock.settimeout(5)
        while b"data:" not in received:
            chunk = sock.recv(65536)
            assert chunk, "the stream was closed"
            received += chunk


def test_per_ip_cap_refuses_the_next_connection_of_that_ip_only(tmp_path: Path) -> None:
    with (
        live_server(tmp_path / "n", max_connections_per_ip=3, header_timeout=LONG) as srv,
        sockets() as opened,
    ):
        held = [connect(srv, opened, "127.0.0.2") for _ in range(3)]
        for sock in held:  # each sent a byte, so the server has surely accepted all three
            sock.sendall(b"G")
        assert ask(srv, opened, "127.0.0.2") == (429, "too_many_connections")
        assert ask(srv, opened, "127.0.0.3") == (404, "not_found")
        # the owner gets in from the crowded address too (on the owner's reserve)
        assert ask(srv, opened, "127.0.0.2", srv.auth)[0] == 404
        # one closed: the address gets a slot back
        held[0].close()
        deadline = time.monotonic() + 5
        while ask(srv, opened, "127.0.0.2") != (404, "not_found"):
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_the_owner_gets_in_when_anonymous_clients_hold_every_slot(tmp_path: Path) -> None:
    caps = {"max_connections": 6, "owner_reserve_connections": 2, "header_timeout": LONG}
    with live_server(tmp_path / "n", **caps) as srv, sockets() as opened:
        for i in range(4):  # every ordinary slot, from four addresses
            connect(srv, opened, f"127.0.0.{10 + i}").sendall(b"G")
        assert ask(srv, opened, "127.0.0.20") == (503, "server_busy")
        assert ask(srv, opened, "127.0.0.21", srv.auth)[0] == 404
        # anonymous connections parked on the reserve too: the owner displaces the oldest
        for i in range(2):
            connect(srv, opened, f"127.0.0.{30 + i}")
        time.sleep(0.2)
        assert ask(srv, opened, "127.0.0.22", srv.auth)[0] == 404
        ((name, value),) = srv.cookie.items()
        cookie = {"Cookie": f"{name}={value}"}
        assert ask(srv, opened, "127.0.0.23", cookie)[0] == 404
        assert ask(srv, opened, "127.0.0.24", {"Authorization": "Bearer wrong"}) == (503, "server_busy")


def _held_request(srv: LiveServer, opened: list[socket.socket], source: str, client: str) -> socket.socket:
    """A request from ``source`` for ``client`` (X-Forwarded-For) that stays in flight: the owner's
    write whose body never comes (the owner is counted like anyone, only never refused)."""
    sock = connect(srv, opened, source)
    sock.sendall(
        b"PUT /~/public/held HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {srv.token}\r\n".encode()
        + f"X-Forwarded-For: {client}\r\nContent-Length: 10\r\n\r\n".encode()
    )
    return sock


def test_a_trusted_proxy_gives_each_client_its_own_connection_cap(tmp_path: Path) -> None:
    settings: dict[str, Any] = {
        "trusted_proxies": ("127.0.0.4",),
        "max_connections_per_ip": 2,
        "header_timeout": LONG,
        "body_timeout": LONG,
    }
    with live_server(tmp_path / "n", **settings) as srv, sockets() as opened:
        for _ in range(2):
            _held_request(srv, opened, "127.0.0.4", "198.51.100.7")
        time.sleep(0.2)
        assert ask(srv, opened, "127.0.0.4", {"X-Forwarded-For": "198.51.100.7"}) == (
            429,
            "too_many_connections",
        )
        assert ask(srv, opened, "127.0.0.4", {"X-Forwarded-For": "198.51.100.8"}) == (404, "not_found")
        # a client cannot pick its address: the proxy appends the real one, the right-most untrusted
        spoofed = {"X-Forwarded-For": "198.51.100.9, 198.51.100.7"}
        assert ask(srv, opened, "127.0.0.4", spoofed) == (429, "too_many_connections")
        # from an untrusted peer the header is ignored: it is counted as itself
        for client in ("198.51.100.10", "198.51.100.11"):
            _held_request(srv, opened, "127.0.0.5", client)
        time.sleep(0.2)
        assert ask(srv, opened, "127.0.0.5", {"X-Forwarded-For": "198.51.100.12"}) == (
            429,
            "too_many_connections",
        )


def _stream(srv: LiveServer, opened: list[socket.socket], source: str, client: str) -> int:
    """Open an anonymous SSE stream of /~/public/ from ``source`` for ``client``; its status."""
    sock = connect(srv, opened, source)
    sock.sendall(
        request("/~/public/", {"Accept": "text/event-stream", "X-Forwarded-For": client}, close=False)
    )
    sock.settimeout(5)
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(65536)
        assert chunk
        head += chunk
    return int(head.split()[1])


def test_a_trusted_proxy_gives_each_client_its_own_stream_limit(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"trusted_proxies": ("127.0.0.4",), "max_subscriptions_per_client": 1}
    with live_server(tmp_path / "n", sse_ping_interval=5, **settings) as srv, sockets() as opened:
        assert _stream(srv, opened, "127.0.0.4", "198.51.100.7") == 200
        assert _stream(srv, opened, "127.0.0.4", "198.51.100.7") == 429
        assert _stream(srv, opened, "127.0.0.4", "198.51.100.8") == 200  # another client behind the proxy
        assert _stream(srv, opened, "127.0.0.6", "198.51.100.20") == 200
        assert _stream(srv, opened, "127.0.0.6", "198.51.100.21") == 429  # not a proxy: one client


def test_a_body_sent_after_an_early_answer_leaves_an_idle_connection(tmp_path: Path) -> None:
    """The node may answer before the body is in (401 here); the connection then idles like any."""
    with (
        live_server(tmp_path / "n", idle_timeout=0.5, body_timeout=LONG, header_timeout=LONG) as srv,
        sockets() as opened,
    ):
        sock = connect(srv, opened)
        sock.sendall(
            b"PUT /~/a HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 5\r\n\r\n"
        )
        assert read_response(sock)[0] == 401
        sock.sendall(b"12345")
        elapsed = closed_after(sock, 3.0)
        assert elapsed is not None and elapsed <= 2.0


def test_a_websocket_holds_its_slot_past_every_timeout_and_frees_it_on_close(tmp_path: Path) -> None:
    import asyncio

    from websockets.asyncio.client import connect as ws_connect
    from websockets.exceptions import InvalidStatus

    from statebus.http.websocket import WS_PATH

    timeouts = {"header_timeout": 0.3, "body_timeout": 0.3, "idle_timeout": 0.3}
    with live_server(tmp_path / "n", max_connections_per_ip=1, **timeouts) as srv:
        url = srv.url.replace("http://", "ws://") + WS_PATH
        guard = srv.server.connections
        assert guard is not None

        async def main() -> None:
            async with ws_connect(f"{url}?token={srv.token}", local_addr=("127.0.0.2", 0)) as ws:
                await asyncio.sleep(1.0)  # three times every timeout
                await ws.send(json.dumps({"get": "a"}))
                assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"set": {"key": "a"}}
                assert guard.table.count("127.0.0.2") == 1
                try:  # the address holds its one connection: a second websocket is refused
                    async with ws_connect(url, local_addr=("127.0.0.2", 0)):
                        raise AssertionError("a second websocket got in")
                except InvalidStatus as exc:
                    assert exc.response.status_code == 429
            deadline = time.monotonic() + 5
            while guard.table.count("127.0.0.2") or len(guard.table):
                assert time.monotonic() < deadline, "the websocket's slot was never given back"
                await asyncio.sleep(0.05)

        asyncio.run(main())


def test_the_login_link_and_a_websocket_url_token_get_the_owner_in_on_the_reserve(tmp_path: Path) -> None:
    caps = {"max_connections": 4, "owner_reserve_connections": 2, "header_timeout": LONG}
    with live_server(tmp_path / "n", **caps) as srv, sockets() as opened:
        for i in range(2):
            connect(srv, opened, f"127.0.0.{10 + i}").sendall(b"G")
        assert ask(srv, opened, "127.0.0.20") == (503, "server_busy")
        sock = connect(srv, opened, "127.0.0.21")
        sock.sendall(request(f"/login?token={srv.token}"))
        assert read_response(sock)[0] == 303
        sock = connect(srv, opened, "127.0.0.22")
        sock.sendall(request("/login?token=wrong"))
        assert read_response(sock)[0] == 503
        import asyncio

        from websockets.asyncio.client import connect as ws_connect

        from statebus.http.websocket import WS_PATH

        async def websocket() -> Any:
            url = srv.url.replace("http://", "ws://") + WS_PATH + f"?token={srv.token}"
            async with ws_connect(url, local_addr=("127.0.0.23", 0)) as ws:
                await ws.send(json.dumps({"get": "a"}))
                return json.loads(await asyncio.wait_for(ws.recv(), 5))

        assert asyncio.run(websocket()) == {"set": {"key": "a"}}
