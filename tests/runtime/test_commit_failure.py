"""A commit that storage refuses (disk full) is rolled back: nothing of it is served or streamed,
its writers get ``StorageFailed``, writes are refused for a backoff, then succeed again by themselves.
(The same on a real full tmpfs under ``statebus serve``: tests/storage/test_disk_full.py.)"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from statebus.bus import Bus, Change
from statebus.errors import NotFound, StorageFailed
from statebus.runtime import Node, committer
from statebus.storage.base import StoredOp
from statebus.storage.memory import MemoryStorage
from statebus.storage.sqlite import SqliteStorage

LOCAL = "a" * 52


class FillableStorage(MemoryStorage):
    """MemoryStorage whose appends fail as SQLite's do on a full disk while ``full`` is set."""

    full = False

    def append(self, batch: Sequence[StoredOp]) -> None:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        super().append(batch)


async def _scenario() -> None:
    storage = FillableStorage()
    node = Node(Bus(storage, LOCAL))
    await node.save("/~/doc", {"v": "before"})
    stream = node.events("/~/", snapshot=False)
    seen: list[Change] = []

    async def read() -> None:
        try:
            async for change in stream:
                seen.append(change)
        except StorageFailed:
            pass

    reader = asyncio.ensure_future(read())
    storage.full = True
    results = await asyncio.gather(
        node.save("/~/doc", {"v": "lost"}),
        node.save("/~/new", {"v": "lost"}),
        node.delete("/~/doc"),
        return_exceptions=True,
    )
    assert all(isinstance(r, StorageFailed) for r in results), results
    assert "disk full" in str(results[0])

    # Nothing of the failed batch is visible, and the reader was cut without hearing of it.
    assert node.fetch("/~/doc").value == {"v": "before"}
    with pytest.raises(NotFound):
        node.fetch("/~/new")
    assert node.children("/~/") == ["doc"]
    await asyncio.wait_for(reader, 5)
    assert seen == [] and stream.closed
    assert not node.healthy and node.commit_stats().failures == 1

    # During the backoff, writes are refused at once and change nothing.
    storage.full = False
    with pytest.raises(StorageFailed, match="refused"):
        await node.save("/~/doc", {"v": "refused"})
    with pytest.raises(StorageFailed):
        await node.delete("/~/doc")
    assert node.fetch("/~/doc").value == {"v": "before"}

    # After it, writes go through again, without a restart; sequence numbers are not reused.
    await asyncio.sleep(committer.RETRY_FIRST * 2)
    after = await node.save("/~/doc", {"v": "after"})
    assert node.healthy
    assert node.fetch("/~/doc").value == {"v": "after"}
    assert after.seq > 4
    assert [op.key for op in storage.scan("", 0, 100)] == ["/~/doc".replace("~", LOCAL)] * 2
    await node.aclose()


def test_a_refused_commit_is_rolled_back_and_the_node_recovers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(committer, "RETRY_FIRST", 0.05)
    asyncio.run(_scenario())


async def _backoff_doubles() -> list[float]:
    storage = FillableStorage()
    node = Node(Bus(storage, LOCAL))
    storage.full = True
    backoffs = []
    for _ in range(4):
        with pytest.raises(StorageFailed):
            await node.save("/~/k", 1)
        backoffs.append(node.commit_stats().backoff)
        while node.storage_refused is not None:
            await asyncio.sleep(0.01)
    storage.full = False
    await node.save("/~/k", 2)
    backoffs.append(node.commit_stats().backoff)
    await node.aclose()
    return backoffs


def test_the_backoff_doubles_up_to_its_cap_and_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(committer, "RETRY_FIRST", 0.02)
    monkeypatch.setattr(committer, "RETRY_MAX", 0.05)
    assert asyncio.run(_backoff_doubles()) == [0.02, 0.04, 0.05, 0.05, 0.0]


class SlowFullStorage(MemoryStorage):
    """Appends wait for ``go``, then fail as on a full disk while ``full`` is set."""

    full = False

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.writing = threading.Event()

    def append(self, batch: Sequence[StoredOp]) -> None:
        self.writing.set()
        assert self.go.wait(10)
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        super().append(batch)


async def _in_flight(fail: bool) -> list[object]:
    storage = SlowFullStorage()
    storage.go.set()
    node = Node(Bus(storage, LOCAL))
    await node.save("/~/doc", {"v": "before"})
    storage.go.clear()
    storage.writing.clear()
    storage.full = fail
    writes = asyncio.gather(
        node.save("/~/doc", {"v": "new"}), node.save("/~/fresh", 1), return_exceptions=True
    )
    while not storage.writing.is_set():
        await asyncio.sleep(0.001)
    # The commit is in flight: readers get what is on disk, not what may still fail.
    seen: list[object] = [node.fetch("/~/doc").value, node.children("/~/")]
    with pytest.raises(NotFound):
        node.fetch("/~/fresh")
    assert node.bus.fetch("/~/doc").value == {"v": "new"}  # the bus itself is ahead (rule 5)
    storage.go.set()
    results = await writes
    seen += [type(r).__name__ for r in results]
    seen += [node.fetch("/~/doc").value, node.children("/~/")]
    await node.aclose()
    return seen


def test_a_write_in_flight_is_not_served_before_its_commit() -> None:
    assert asyncio.run(_in_flight(fail=True)) == [
        {"v": "before"},
        ["doc"],
        "StorageFailed",
        "StorageFailed",
        {"v": "before"},
        ["doc"],
    ]
    assert asyncio.run(_in_flight(fail=False)) == [
        {"v": "before"},
        ["doc"],
        "Change",
        "Change",
        {"v": "new"},
        ["doc", "fresh"],
    ]


def test_a_failed_flush_rolls_back_too() -> None:
    storage = FillableStorage()
    bus = Bus(storage, LOCAL)
    bus.save("/~/doc", 1)
    bus.flush()
    bus.save("/~/doc", 2)
    bus.save("/~/other", 3)
    storage.full = True
    with pytest.raises(sqlite3.OperationalError):
        bus.flush()
    assert bus.fetch("/~/doc").value == 1
    assert bus.fetch_or_none("/~/other") is None and bus.pending == 0
    storage.full = False
    bus.save("/~/doc", 4)
    bus.flush()
    assert bus.fetch("/~/doc").value == 4


async def _subscribe_after_a_rollback() -> list[object]:
    storage = FillableStorage()
    node = Node(Bus(storage, LOCAL))
    await node.save("/~/doc", 1)
    storage.full = True
    with pytest.raises(StorageFailed):
        await node.save("/~/doc", 2)
    # No write since the rollback: a new subscriber still gets its snapshot at once.
    stream = node.events("/~/doc")
    first = await asyncio.wait_for(stream.__anext__(), 5)
    stream.close()
    await node.aclose()
    return [first.value, node.durable_seq >= first.seq]


def test_a_snapshot_after_a_rollback_is_not_held_back() -> None:
    assert asyncio.run(_subscribe_after_a_rollback()) == [1, True]


async def _observer_after_a_rollback() -> list[tuple[str, object, bool]]:
    storage = FillableStorage()
    node = Node(Bus(storage, LOCAL))
    await node.save("/~/.acl/notes", {"read": []})
    seen: list[tuple[str, object, bool]] = []
    node.observe("/~/.acl/", lambda c: seen.append((c.kind, c.value, c.exists)), snapshot=False)
    storage.full = True
    results = await asyncio.gather(
        node.save("/~/.acl/notes", {"read": "public"}),
        node.save("/~/.acl/new", {"read": "public"}),
        return_exceptions=True,
    )
    assert all(isinstance(r, StorageFailed) for r in results)
    await node.aclose()
    return seen


def test_synchronous_observers_are_told_what_a_rollback_restored() -> None:
    """A cache fed by the bus (an access policy) heard of the failed grant; after the rollback it
    hears of the durable state again, so the grant does not stay in force in memory."""
    seen = asyncio.run(_observer_after_a_rollback())
    assert seen == [
        ("op", {"read": "public"}, True),
        ("op", {"read": "public"}, True),
        ("revert", None, False),
        ("revert", {"read": []}, True),
    ]


async def _policy_after_a_failed_grant() -> tuple[str | None, str | None]:
    from statebus.access.acl import rule_key
    from statebus.access.policy import AccessPolicy

    storage = FillableStorage()
    node = Node(Bus(storage, LOCAL))
    policy = AccessPolicy(node, LOCAL)
    secret = f"/{LOCAL}/diary/1"
    await node.save("/~/diary/1", "private")
    storage.full = True
    grant = asyncio.ensure_future(node.save(rule_key(LOCAL, "diary"), {"read": "public"}))
    await asyncio.sleep(0)  # the write is applied; its commit has not come back yet
    during = policy.why_not("read", None, secret)  # in force while its commit is in flight
    with pytest.raises(StorageFailed):
        await grant
    after = policy.why_not("read", None, secret)
    await node.aclose()
    return during, after


def test_a_failed_grant_does_not_stay_in_force() -> None:
    during, after = asyncio.run(_policy_after_a_failed_grant())
    assert during is None  # the bus applies a write at once (rule 5 has the details)
    assert after is not None  # rolled back: anonymous readers are refused again


class ProbedStorage(FillableStorage):
    """A storage with a ``probe()``, as SqliteStorage has: one small real write."""

    probes = 0

    def probe(self) -> None:
        self.probes += 1
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")


async def _probed_recovery() -> tuple[int, list[float], bool]:
    storage = ProbedStorage()
    node = Node(Bus(storage, LOCAL))
    storage.full = True
    with pytest.raises(StorageFailed):
        await node.save("/~/k", 1)
    backoffs = [node.commit_stats().backoff]
    while storage.probes < 2:  # the probes fail: still refused, the backoff grows
        await asyncio.sleep(0.005)
    backoffs.append(node.commit_stats().backoff)
    assert node.storage_refused is not None and not node.healthy
    storage.full = False
    for _ in range(400):  # healthy again without any client write
        if node.healthy:
            break
        await asyncio.sleep(0.005)
    healthy = node.healthy and node.storage_refused is None
    await node.save("/~/k", 2)
    await node.aclose()
    return storage.probes, backoffs, healthy


def test_a_probe_brings_the_node_back_without_waiting_for_a_write(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(committer, "RETRY_FIRST", 0.01)
    monkeypatch.setattr(committer, "RETRY_MAX", 0.04)
    probes, backoffs, healthy = asyncio.run(_probed_recovery())
    assert healthy and probes >= 3
    assert backoffs[0] == 0.01 and backoffs[1] > backoffs[0]


def test_sqlite_probe_is_a_real_write(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "store.sqlite3")
    wal = tmp_path / "store.sqlite3-wal"
    before = wal.stat().st_size
    store.probe()
    assert wal.stat().st_size > before  # it reached the WAL, so a full disk makes it fail
    store.close()
