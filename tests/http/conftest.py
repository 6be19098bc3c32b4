"""Fixtures: a real node on uvicorn (127.0.0.1, port 0, temp data dir) and stream readers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from statebus.testing.live_server import LiveServer, live_server


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path / "node", sse_ping_interval=0.2) as server:
        yield server


@pytest.fixture
def client(srv: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as c:
        yield c
