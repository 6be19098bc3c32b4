"""A cluster of federated nodes in the test's process, in one new DHT, stopped after the test: the
``cluster`` fixture of the apps and mirror tests (their conftest.py imports it, with ``anyio_backend``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from statebus.server import Cluster
from tests.federation.support import FAST


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
