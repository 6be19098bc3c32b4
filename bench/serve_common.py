"""What the node and the reference servers share: the listening socket and uvicorn's options."""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any, Final

BACKLOG: Final = 4096

UVICORN_OPTIONS: Final[dict[str, Any]] = {
    "loop": "uvloop",
    "http": "httptools",
    "log_level": "warning",
    "access_log": False,
    "backlog": BACKLOG,
    "timeout_keep_alive": 60,
}
"""The same uvicorn options for the node and for the reference servers."""

NODE_UVICORN_OPTIONS: Final[dict[str, Any]] = {k: v for k, v in UVICORN_OPTIONS.items() if k != "http"}
""":data:`UVICORN_OPTIONS` for a statebus node: the same, except that the node keeps the HTTP
protocol ``statebus.server`` gives it (uvicorn's httptools protocol with the connection layer of
``statebus.http.connections`` in it), so the benchmark measures the server a deployment runs."""


def listen(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to ``host`` port 0, listening with a deep backlog (10,000 clients connect)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def announce(sock: socket.socket) -> None:
    """Tell the benchmark driver where we listen: one JSON line on stdout."""
    port = sock.getsockname()[1]
    sys.stdout.write(json.dumps({"port": port, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
