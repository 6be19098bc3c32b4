"""Fixtures for the swarm tests: the asyncio backend and a factory of swarm sessions with their stores."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from statebus.access.limits import QuotaTracker
from statebus.blobs import BlobStore
from statebus.swarm import SwarmSession


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Peer:
    """One node's swarm side: its session and its blob store."""

    swarm: SwarmSession
    store: BlobStore


MakePeer = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def make_peer(tmp_path: Path) -> AsyncIterator[MakePeer]:
    """``await make_peer(quota=…, seed_seconds=…)``: a started session on its own loopback address
    (127.0.0.2, .3, …) with a store of its own; all closed after the test."""
    made: list[Peer] = []

    async def make(
        *, quota: int | None = None, seed_seconds: float = 3600.0, upload_budget: int = 1 << 40
    ) -> Peer:
        i = len(made) + 2
        root = tmp_path / f"peer{i}"
        tracker = QuotaTracker(quota) if quota is not None else None
        store = BlobStore(root / "blobs", max_bytes=64 << 20, quota=tracker, fsync=False)
        swarm = SwarmSession(
            root / "swarm", interface=f"127.0.0.{i}", seed_seconds=seed_seconds, upload_budget=upload_budget
        )
        await swarm.start()
        peer = Peer(swarm, store)
        made.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in made:
            await peer.swarm.close()
