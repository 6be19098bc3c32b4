"""deploy/nginx.conf as shipped, on loopback with a self-signed certificate, in front of a live node:
TLS; SSE and Braid updates each arrive within 100 ms (no proxy buffering); websockets upgrade;
plain HTTP redirects to HTTPS; and the node counts each client by its own address, trusting
X-Forwarded-For only from the configured proxy (issue 9 defect 7, issue 17). Needs the nginx binary."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from statebus.http.websocket import WS_PATH
from statebus.testing.braid_stream import BraidStreamParser
from statebus.testing.live_server import LiveServer, SseReader, live_server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
OPENSSL = shutil.which("openssl")
HOST = "statebus.example.org"
PROMPT = 0.1
"""Each update must pass through the proxy within this many seconds (a buffering proxy holds it)."""

pytestmark = pytest.mark.skipif(NGINX is None or OPENSSL is None, reason="nginx or openssl is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for statebus.example.org and 127.0.0.1, and its key."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    assert OPENSSL is not None
    names = f"subjectAltName=DNS:{HOST},IP:127.0.0.1"
    args = [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
    ]
    subprocess.run(
        [OPENSSL, *args, "-subj", f"/CN={HOST}", "-addext", names, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def _sub(text: str, old: str, new: str) -> str:
    assert old in text, f"deploy/nginx.conf no longer has {old!r}: update this test with it"
    return text.replace(old, new)


def site_config(node_port: int, port: int, http_port: int, logs: Path, cert: Path, key: Path) -> str:
    """deploy/nginx.conf as shipped, pointed at the test node, free loopback ports and the test cert."""
    text = DEPLOY.read_text(encoding="utf-8")
    text = _sub(text, "server 127.0.0.1:8765;", f"server 127.0.0.1:{node_port};")
    text = re.sub(r"^\s*listen \[::\]:\d+.*\n", "", text, flags=re.MULTILINE)
    text = _sub(text, "listen 80;", f"listen 127.0.0.1:{http_port};")
    text = _sub(text, "listen 443 ssl http2;", f"listen 127.0.0.1:{port} ssl http2;")
    text = _sub(text, "/etc/letsencrypt/live/statebus.example.org/fullchain.pem", str(cert))
    text = _sub(text, "/etc/letsencrypt/live/statebus.example.org/privkey.pem", str(key))
    return _sub(text, "/var/log/nginx/statebus.access.log", str(logs / "access.log"))


@dataclass
class Front:
    port: int
    http_port: int
    cert: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@contextlib.contextmanager
def nginx_in_front(srv: LiveServer, prefix: Path) -> Iterator[Front]:
    prefix.mkdir()
    port, http_port = free_port(), free_port()
    cert, key = self_signed(prefix)
    (prefix / "statebus.conf").write_text(
        site_config(srv.server.port, port, http_port, prefix, cert, key), encoding="utf-8"
    )
    temp = " ".join(
        f"{kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (prefix / "nginx.conf").write_text(
        f"daemon off; worker_processes 1; pid {prefix / 'nginx.pid'}; error_log {prefix / 'error.log'};\n"
        f"events {{ worker_connections 256; }}\n"
        f"http {{ {temp} include {prefix / 'statebus.conf'}; }}\n",
        encoding="utf-8",
    )
    assert NGINX is not None
    check = subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")], stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.05)
        yield Front(port, http_port, cert)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def open_stream(front: Front, source: str, opened: list[socket.socket], forwarded: str | None = None) -> int:
    """An anonymous SSE stream of /~/public/ through nginx over TLS, from ``source``; its status."""
    raw = socket.create_connection(("127.0.0.1", front.port), timeout=10, source_address=(source, 0))
    sock = front.tls().wrap_socket(raw, server_hostname=HOST)
    opened.append(sock)
    return _request_stream(sock, forwarded)


def _request_stream(sock: socket.socket, forwarded: str | None) -> int:
    extra = f"X-Forwarded-For: {forwarded}\r\n" if forwarded else ""
    sock.sendall(
        f"GET /~/public/ HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n{extra}\r\n".encode()
    )
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        head += chunk
    return int(head.split()[1])


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[LiveServer, Front]]:
    settings = {"trusted_proxies": ("127.0.0.1", "::1"), "max_subscriptions_per_client": 1}
    with (
        live_server(tmp_path / "n", sse_ping_interval=5, **settings) as srv,
        nginx_in_front(srv, tmp_path / "ng") as front,
    ):
        yield srv, front


def test_clients_behind_the_documented_nginx_get_their_own_limits(proxied: tuple[LiveServer, Front]) -> None:
    _, front = proxied
    opened: list[socket.socket] = []
    try:
        assert open_stream(front, "127.0.0.2", opened) == 200
        assert open_stream(front, "127.0.0.2", opened) == 429  # that client's one stream is open
        assert open_stream(front, "127.0.0.3", opened) == 200  # another client is not blocked by it
        # a client naming another address itself is still counted as itself: nginx appends the real
        # one, and the node takes the right-most address that is not a trusted proxy
        assert open_stream(front, "127.0.0.3", opened, forwarded="127.0.0.50") == 429
        assert open_stream(front, "127.0.0.4", opened, forwarded="127.0.0.2") == 200
    finally:
        for sock in opened:
            sock.close()


def test_x_forwarded_for_is_ignored_from_a_peer_that_is_not_the_proxy(
    proxied: tuple[LiveServer, Front],
) -> None:
    srv, _ = proxied
    opened: list[socket.socket] = []

    def direct(forwarded: str) -> int:  # straight to the node, from an address that is not the proxy
        sock = socket.create_connection(
            ("127.0.0.1", srv.server.port), timeout=10, source_address=("127.0.0.6", 0)
        )
        opened.append(sock)
        return _request_stream(sock, forwarded)

    try:
        assert direct("127.0.0.60") == 200
        assert direct("127.0.0.61") == 429  # both are 127.0.0.6, whatever they claim
    finally:
        for sock in opened:
            sock.close()


def test_plain_http_redirects_to_https(proxied: tuple[LiveServer, Front]) -> None:
    _, front = proxied
    r = httpx.get(f"http://127.0.0.1:{front.http_port}/~/x?token=secret", headers={"Host": HOST}, timeout=10)
    assert r.status_code == 301 and r.headers["location"] == f"https://{HOST}/~/x?token=secret"


def _latencies(srv: LiveServer, key: str, arrivals: dict[int, float], count: int = 5) -> list[float]:
    """Write ``count`` values straight to the node; for each, the time from sending the write to its
    update's arrival through the proxy (as recorded in ``arrivals`` by the reading thread): the
    write's own commit (an fsync) plus the trip through nginx and TLS."""
    out = []
    with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as node:
        for i in range(1, count + 1):
            sent = time.monotonic()
            assert node.put(key, json={"i": i}).status_code == 200
            deadline = sent + 5
            while i not in arrivals:
                assert time.monotonic() < deadline, f"update {i} never came through the proxy"
                time.sleep(0.001)
            out.append(arrivals[i] - sent)
            time.sleep(0.15)
    return out


def _read_feeds(
    sse: httpx.Response,
    braid: httpx.Response,
    sse_arrivals: dict[int, float],
    braid_arrivals: dict[int, float],
) -> None:
    """Read an SSE and a Braid stream of ``{"i": n}`` values in threads, noting when each ``n`` arrives."""

    def read_sse() -> None:
        reader = SseReader(sse)
        with contextlib.suppress(Exception):
            while True:
                value = reader.next_event()["data"]["value"]  # before the clock is read
                sse_arrivals[value["i"]] = time.monotonic()

    def read_braid() -> None:
        parser = BraidStreamParser()
        with contextlib.suppress(Exception):
            for chunk in braid.iter_raw():
                for update in parser.feed(chunk):
                    value = update.json()
                    if isinstance(value, dict):
                        braid_arrivals[value["i"]] = time.monotonic()

    _reading(read_sse), _reading(read_braid)


def _reading(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_sse_and_braid_updates_come_through_promptly(proxied: tuple[LiveServer, Front]) -> None:
    srv, front = proxied
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
            assert sse.headers["content-type"].startswith("text/event-stream")

            _read_feeds(sse, braid, sse_arrivals, braid_arrivals)
            sse_lag = _latencies(srv, "/~/feed/sse", sse_arrivals)
            braid_lag = _latencies(srv, "/~/feed/braid", braid_arrivals)
    report = {
        "sse_ms": [round(x * 1000, 1) for x in sse_lag],
        "braid_ms": [round(x * 1000, 1) for x in braid_lag],
    }
    print("through nginx + TLS:", json.dumps(report))
    assert statistics.median(sse_lag) < PROMPT and statistics.median(braid_lag) < PROMPT, report
    assert max(sse_lag) < 3 * PROMPT and max(braid_lag) < 3 * PROMPT, report  # one slow tick on a busy CI


def test_websockets_upgrade_through_nginx(proxied: tuple[LiveServer, Front]) -> None:
    srv, front = proxied
    url = f"wss://127.0.0.1:{front.port}{WS_PATH}?token={srv.token}"
    with ws_connect(url, ssl=front.tls(), server_hostname=HOST, open_timeout=10) as ws:
        ws.send(json.dumps({"set": {"key": "chat/1", "val": {"msgs": ["over TLS"]}}}))
        ws.send(json.dumps({"get": "chat/1"}))
        got = json.loads(ws.recv(timeout=10))
        assert got["set"] == {"key": "chat/1", "val": {"msgs": ["over TLS"]}}
    assert httpx.get(f"{srv.url}/~/chat/1", headers=srv.auth, timeout=10).json() == {"msgs": ["over TLS"]}
