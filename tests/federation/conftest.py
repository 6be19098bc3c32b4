"""Fixtures for the federation tests: the asyncio backend, a DHT network factory, a node cluster."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from statebus.federation.dht import KademliaDirectory
from statebus.server import Cluster

from .support import FAST

SECRET = b"test invite secret"

MakeNetwork = Callable[..., Awaitable[list[KademliaDirectory]]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def make_network() -> AsyncIterator[MakeNetwork]:
    """``await make_network(n, ...)``: n started nodes on 127.0.0.1 port 0, stopped after the test.

    Node 0 starts the DHT (or joins ``bootstrap``); every later node bootstraps from node 0.
    """
    started: list[KademliaDirectory] = []

    async def make(
        n: int,
        *,
        name: str = "alpha",
        secret: bytes = SECRET,
        ksize: int = 4,
        wait_timeout: float = 0.5,
        bootstrap: list[tuple[str, int]] | None = None,
        seeds: list[bytes] | None = None,
        **kwargs: Any,
    ) -> list[KademliaDirectory]:
        nodes = []
        for i in range(n):
            seed = seeds[i] if seeds else os.urandom(32)
            node = KademliaDirectory(seed, name, secret, ksize=ksize, wait_timeout=wait_timeout, **kwargs)
            started.append(node)
            await node.start(bootstrap or [])
            if bootstrap is None:
                bootstrap = [("127.0.0.1", node.port)]
            nodes.append(node)
        return nodes

    yield make
    for node in started:
        await node.stop()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """Federated nodes in this process, in one new DHT (``await cluster.add("a")``); all stopped after."""
    c = Cluster(tmp_path, dht_secret=os.urandom(16), **FAST)
    try:
        yield c
    finally:
        await c.aclose()
