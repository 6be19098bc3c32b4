"""deploy/nginx.conf in front of a live node: with STATEBUS_TRUSTED_PROXIES set as the file says,
clients behind nginx are counted apart (issue 9, defect 7). Needs the nginx binary."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from statebus.testing.live_server import LiveServer, live_server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def site_config(node_port: int, port: int, logs: Path) -> str:
    """deploy/nginx.conf as shipped, pointed at the test node and a free loopback port."""
    text = DEPLOY.read_text(encoding="utf-8")
    text = text.replace("server 127.0.0.1:8765;", f"server 127.0.0.1:{node_port};")
    text = re.sub(r"^\s*listen \[::\]:80;\n", "", text, flags=re.MULTILINE)
    text = text.replace("listen 80;", f"listen 127.0.0.1:{port};")
    return text.replace("/var/log/nginx/statebus.access.log", str(logs / "access.log"))


@contextlib.contextmanager
def nginx_in_front(srv: LiveServer, prefix: Path) -> Iterator[int]:
    prefix.mkdir()
    port = free_port()
    (prefix / "statebus.conf").write_text(site_config(srv.server.port, port, prefix), encoding="utf-8")
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
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


def open_stream(port: int, source: str, opened: list[socket.socket]) -> int:
    """An anonymous SSE stream of /~/public/ through nginx, from ``source``; its status."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    opened.append(sock)
    sock.sendall(
        b"GET /~/public/ HTTP/1.1\r\nHost: statebus.example.org\r\nAccept: text/event-stream\r\n\r\n"
    )
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(65536)
        assert chunk, "nginx closed the connection"
        head += chunk
    return int(head.split()[1])


def test_clients_behind_the_documented_nginx_get_their_own_limits(tmp_path: Path) -> None:
    settings = {"trusted_proxies": ("127.0.0.1", "::1"), "max_subscriptions_per_client": 1}
    opened: list[socket.socket] = []
    with (
        live_server(tmp_path / "n", sse_ping_interval=5, **settings) as srv,
        nginx_in_front(srv, tmp_path / "ng") as port,
    ):
        try:
            assert open_stream(port, "127.0.0.2", opened) == 200
            assert open_stream(port, "127.0.0.2", opened) == 429  # that client's one stream is open
            assert open_stream(port, "127.0.0.3", opened) == 200  # another client is not blocked by it
        finally:
            for sock in opened:
                sock.close()
