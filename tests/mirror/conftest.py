"""Mirror tests: real nodes (an owner, a mirror, a follower) on loopback ports, in one new DHT."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from statebus.server import Cluster

FAST = {"sse_ping_interval": 0.3, "backoff_base": 0.05, "backoff_cap": 0.4}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, dht_secret=os.urandom(16), **FAST)
    try:
        yield c
    finally:
        await c.aclose()
