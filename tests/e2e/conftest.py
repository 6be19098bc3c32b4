"""Fixtures for end-to-end tests: a real node on uvicorn (127.0.0.1, port 0, temp data dir)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from statebus.testing.live_server import LiveServer, live_server


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path / "node", sse_ping_interval=0.5) as server:
        yield server
