"""What the invite tests share: the anyio backend, and a devnet cluster of its own per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from statebus.server import Cluster
from tests.invites.support import FAST


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path / "nodes", dht_name="devnet-inv", dht_secret=os.urandom(16), **FAST)
    try:
        yield c
    finally:
        await c.aclose()
