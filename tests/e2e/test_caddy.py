"""deploy/Caddyfile as shipped, on loopback with a self-signed certificate, in front of a live node:
SSE and Braid updates arrive promptly, websockets upgrade, and the node counts each client by its
own address (Caddy drops an X-Forwarded-For the client sent). Needs Caddy (Debian's caddy package)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from statebus.http.websocket import WS_PATH
from statebus.testing.live_server import LiveServer, live_server
from tests.e2e.test_nginx import (
    HOST,
    PROMPT,
    Front,
    _latencies,
    _read_feeds,
    _request_stream,
    free_port,
    self_signed,
)

CADDYFILE = Path(__file__).resolve().parents[2] / "deploy" / "Caddyfile"
CADDY = shutil.which("caddy")

pytestmark = pytest.mark.skipif(
    CADDY is None and not os.environ.get("CI"), reason="caddy is not installed (apt-get install caddy)"
)


def _sub(text: str, old: str, new: str) -> str:
    assert old in text, f"deploy/Caddyfile no longer has {old!r}: update this test with it"
    return text.replace(old, new)


def caddy_config(node_port: int, port: int, cert: Path, key: Path) -> str:
    """deploy/Caddyfile as shipped, on a free loopback port, with the test certificate and no
    HTTP-to-HTTPS redirect listener (it would take port 80)."""
    text = CADDYFILE.read_text(encoding="utf-8")
    text = _sub(text, "\tadmin off\n", "\tadmin off\n\tauto_https disable_redirects\n")
    site = f"https://{HOST}:{port}, https://127.0.0.1:{port} {{\n\tbind 127.0.0.1\n\ttls {cert} {key}\n"
    text = _sub(text, f"{HOST} {{\n", site)
    return _sub(text, "reverse_proxy 127.0.0.1:8765 {", f"reverse_proxy 127.0.0.1:{node_port} {{")


@contextlib.contextmanager
def caddy_in_front(srv: LiveServer, prefix: Path) -> Iterator[Front]:
    assert CADDY is not None, "CI must run this: apt-get install caddy"
    prefix.mkdir()
    port = free_port()
    cert, key = self_signed(prefix)
    config = prefix / "Caddyfile"
    config.write_text(caddy_config(srv.server.port, port, cert, key), encoding="utf-8")
    env = {**os.environ, "HOME": str(prefix), "XDG_DATA_HOME": str(prefix), "XDG_CONFIG_HOME": str(prefix)}
    log = (prefix / "caddy.log").open("wb")
    proc = subprocess.Popen(
        [CADDY, "run", "--adapter", "caddyfile", "--config", str(config)], stdout=log, stderr=log, env=env
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert proc.poll() is None, (prefix / "caddy.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "caddy did not start"
            time.sleep(0.05)
        yield Front(port, 0, cert)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[LiveServer, Front]]:
    settings = {"trusted_proxies": ("127.0.0.1", "::1"), "max_subscriptions_per_client": 1}
    with (
        live_server(tmp_path / "n", sse_ping_interval=5, **settings) as srv,
        caddy_in_front(srv, tmp_path / "caddy") as front,
    ):
        yield srv, front


def test_caddy_streams_promptly_upgrades_websockets_and_keeps_clients_apart(
    proxied: tuple[LiveServer, Front],
) -> None:
    srv, front = proxied
    opened: list[socket.socket] = []

    def stream(source: str, forwarded: str | None = None) -> int:
        raw = socket.create_connection(("127.0.0.1", front.port), timeout=10, source_address=(source, 0))
        sock = front.tls().wrap_socket(raw, server_hostname=HOST)
        opened.append(sock)
        return _request_stream(sock, forwarded)

    try:
        assert stream("127.0.0.2") == 200
        assert stream("127.0.0.2", forwarded="127.0.0.50") == 429  # still 127.0.0.2, whatever it says
        assert stream("127.0.0.3") == 200
    finally:
        for sock in opened:
            sock.close()

    sse_arrivals: dict[int, float] = {}
    braid_arrivals: dict[int, float] = {}
    with httpx.Client(base_url=front.url, headers=srv.auth, verify=front.tls(), timeout=10) as http:
        assert http.put("/~/feed/sse", json={"i": 0}).status_code == 200
        assert http.put("/~/feed/braid", json={"i": 0}).status_code == 200
        with (
            http.stream("GET", "/~/feed/sse", headers={"Accept": "text/event-stream"}) as sse,
            http.stream("GET", "/~/feed/braid", headers={"Subscribe": "true"}) as braid,
        ):
            assert sse.status_code == 200 and braid.status_code == 209

            _read_feeds(sse, braid, sse_arrivals, braid_arrivals)
            sse_lag = _latencies(srv, "/~/feed/sse", sse_arrivals)
            braid_lag = _latencies(srv, "/~/feed/braid", braid_arrivals)
    report = {
        "sse_ms": [round(x * 1000, 1) for x in sse_lag],
        "braid_ms": [round(x * 1000, 1) for x in braid_lag],
    }
    print("through caddy + TLS:", json.dumps(report))
    assert statistics.median(sse_lag) < PROMPT and statistics.median(braid_lag) < PROMPT, report
    assert max(sse_lag) < 3 * PROMPT and max(braid_lag) < 3 * PROMPT, report

    url = f"wss://127.0.0.1:{front.port}{WS_PATH}?token={srv.token}"
    with ws_connect(url, ssl=front.tls(), server_hostname=HOST, open_timeout=10) as ws:
        ws.send(json.dumps({"set": {"key": "chat/1", "val": "via caddy"}}))
        ws.send(json.dumps({"get": "chat/1"}))
        assert json.loads(ws.recv(timeout=10))["set"] == {"key": "chat/1", "val": "via caddy"}
