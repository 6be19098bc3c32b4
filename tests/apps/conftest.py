"""Fixtures for the hosted-apps tests: the asyncio backend and a node cluster."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from statebus.server import Cluster

from ..federation.support import FAST


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Federated nodes in this process, in one new DHT; all stopped after the test."""
    c = Cluster(tmp_path, dht_secret=os.urandom(16), **FAST)
    try:
        yield c
    finally:
        await c.aclose()
