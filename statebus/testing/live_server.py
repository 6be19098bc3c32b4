"""Run a real statebus node (uvicorn + the app) on 127.0.0.1, port 0, in a background thread, for tests.

Example::

    with live_server(tmp_path) as srv:
        httpx.put(f"{srv.url}/~/a", json=1, headers=srv.auth)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from statebus.config import Settings
from statebus.errors import StatebusError
from statebus.runtime import Node
from statebus.server import StatebusServer, make_server, owner_token


@dataclass
class LiveServer:
    """A running node: its base ``url``, the owner ``token`` and the in-process objects."""

    url: str
    token: str
    server: StatebusServer
    settings: Settings

    @property
    def node(self) -> Node:
        node: Node = self.server.statebus_app.state.node
        return node

    @property
    def auth(self) -> dict[str, str]:
        """Headers that make a request the owner's."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def local(self) -> str:
        return self.node.local


@contextlib.contextmanager
def live_server(data_dir: Path, timeout: float = 10.0, **settings: Any) -> Iterator[LiveServer]:
    """Start a node on ``data_dir``; yield it; stop it (streams ended, node closed) on exit."""
    config = replace(Settings(data_dir=data_dir), host="127.0.0.1", port=0, log_level="warning", **settings)
    server = make_server(config)
    thread = threading.Thread(target=server.run, name="statebus-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            thread.join(timeout)
            raise StatebusError("the test server did not start", status_hint=503)
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{server.port}", owner_token(config), server, config)
    finally:
        server.should_exit = True
        thread.join(timeout)
