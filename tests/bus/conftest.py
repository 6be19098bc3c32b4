"""Fixtures for bus tests: a namespace, and storages to run against (memory and SQLite)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from statebus.keys import encode_pubkey
from statebus.storage.base import Storage
from statebus.storage.memory import MemoryStorage
from statebus.storage.sqlite import SqliteStorage

LOCAL = encode_pubkey(bytes(31) + b"\x05")
OTHER = encode_pubkey(bytes(31) + b"\x06")

Reopen = Callable[[], Storage]


@pytest.fixture(params=["memory", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Storage, Reopen]]:
    """A storage and a function that reopens it (the same data, as a restarted node sees it)."""
    opened: list[Storage] = []
    if request.param == "memory":
        mem = MemoryStorage()
        opened.append(mem)

        def reopen() -> Storage:
            return mem
    else:
        path = tmp_path / "store.sqlite3"
        opened.append(SqliteStorage(path))

        def reopen() -> Storage:
            opened[-1].close()
            opened.append(SqliteStorage(path))
            return opened[-1]

    yield opened[0], reopen
    for s in opened:
        s.close()


@pytest.fixture
def storage(stores: tuple[Storage, Reopen]) -> Storage:
    return stores[0]
