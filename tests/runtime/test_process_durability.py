"""``durability = "process"``: commits are not fsynced one by one, but the group committer fsyncs
the WAL within ``SYNC_INTERVAL`` of each commit (committer rule 4), so a power cut loses at most
about the last second of acknowledged writes; ``"power"`` never needs that sync.

The power cut is simulated as in tests/storage/test_durability.py: the node runs in a child
process under ``tests/support/powerloss.c``, is killed with SIGKILL, and its store is put back as
its last fsyncs left it. The writes are paced (~40/s) so that SQLite's own checkpoints (which fsync
the WAL once it holds 1,000 pages) do not come in time: only the committer's sync can keep them.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from statebus.bus import Bus
from statebus.errors import StorageFailed
from statebus.runtime import Node, committer
from statebus.storage.base import StoredOp
from statebus.storage.sqlite import STORE_FILE, SqliteStorage
from tests.support import powerloss

LOCAL = "a" * 52


@pytest.mark.parametrize(("durability", "synced"), [("power", 0), ("process", 1)])
def test_the_committer_syncs_a_process_store_within_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str, synced: int
) -> None:
    monkeypatch.setattr(committer, "SYNC_INTERVAL", 0.2)
    storage = SqliteStorage(tmp_path / STORE_FILE, durability=durability)
    calls: list[float] = []
    real_sync = storage.sync

    def sync() -> None:
        calls.append(time.monotonic())
        real_sync()

    monkeypatch.setattr(storage, "sync", sync)

    async def scenario() -> None:
        node = Node(Bus(storage, LOCAL))
        await asyncio.gather(*(node.save(f"/~/k{i}", i) for i in range(50)))
        written = time.monotonic()
        await asyncio.sleep(0.6)
        assert node.committer.syncs == len(calls) == synced
        if synced:
            assert calls[0] - written < 0.2 + 0.3, "the sync came later than the interval"
        await node.save("/~/last", 1)
        await node.aclose()  # syncs what the timer has not yet
        assert len(calls) == 2 * synced

    asyncio.run(scenario())


CHILD = """
import asyncio, sys, time
from statebus.config import Settings
from statebus.server.assembly import build_node

async def main():
    node = build_node(Settings(data_dir=sys.argv[1], durability="process"))
    async def writer(w):
        i = 0
        while True:
            change = await node.save(f"/~/t/w{w}-{i}", i)
            print(f"acked {change.key} {time.monotonic()}", flush=True)
            i += 1
            await asyncio.sleep(0.05)
    await asyncio.gather(*(writer(w) for w in range(2)))

asyncio.run(main())
"""

RUN_SECONDS = 2.5
SLACK = 0.5
"""Seconds the sync may come after ``SYNC_INTERVAL`` on a busy machine (a batch in the writer
thread first, a loaded event loop)."""


def test_a_power_cut_loses_at_most_the_last_second_in_process_mode(tmp_path: Path) -> None:
    if powerloss.compiler() is None:
        pytest.skip("no C compiler to build the power-loss simulator (tests/support/powerloss.c)")
    lib = powerloss.build(tmp_path)
    data = tmp_path / "node"
    env = {**powerloss.environ(lib, tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    acked: list[tuple[str, float]] = []
    try:
        assert proc.stdout is not None
        deadline = float("inf")
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            _, key, at = line.split()
            acked.append((key.decode(), float(at)))
            deadline = min(deadline, float(at) + RUN_SECONDS)
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"child exited on its own: {err.decode(errors='replace')}"
    acked += [(line.split()[1], float(line.split()[2])) for line in rest.decode().splitlines()]
    db = data / STORE_FILE
    powerloss.cut_power(db)

    check = tmp_path / "check"
    check.mkdir()
    for suffix in ("", "-wal"):
        if db.with_name(STORE_FILE + suffix).exists():
            shutil.copyfile(db.with_name(STORE_FILE + suffix), check / (STORE_FILE + suffix))
    store = SqliteStorage(check / STORE_FILE)
    try:
        kept = {op.key for op in store.scan("", 0, 10**9)}
    finally:
        store.close()
    promised = [key for key, at in acked if at < killed_at - committer.SYNC_INTERVAL - SLACK]
    assert len(promised) > 20, f"too few writes to judge: {len(promised)} of {len(acked)}"
    lost = [key for key in promised if key not in kept]
    assert not lost, f"{len(lost)} writes acknowledged over a second before the cut were lost: {lost[:5]}"


def test_a_process_store_syncs_every_sync_ops_under_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each sync checkpoints the WAL, so under load it comes every ``SYNC_OPS`` ops as well as every
    ``SYNC_INTERVAL`` (here never): the WAL stays near SQLite's usual checkpoint size."""
    monkeypatch.setattr(committer, "SYNC_INTERVAL", 3600.0)
    storage = SqliteStorage(tmp_path / STORE_FILE, durability="process")
    wal = tmp_path / (STORE_FILE + "-wal")

    async def scenario() -> None:
        node = Node(Bus(storage, LOCAL))
        for round_ in range(6):
            await asyncio.gather(*(node.save(f"/~/k{i}", round_) for i in range(committer.SYNC_OPS // 2)))
        assert node.committer.syncs >= 2
        assert wal.stat().st_size < 16 * 2**20
        await node.aclose()

    asyncio.run(scenario())
    storage.close()


def test_a_failed_inline_commit_is_rolled_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``process`` store commits on the event loop: a commit it refuses still fails its writers
    with StorageFailed, keeps nothing, and the node takes writes again after the backoff."""
    monkeypatch.setattr(committer, "RETRY_FIRST", 0.05)
    storage = SqliteStorage(tmp_path / STORE_FILE, durability="process")
    real_append = storage.append
    full = True

    def append(batch: Sequence[StoredOp]) -> None:
        if full:
            raise sqlite3.OperationalError("database or disk is full")
        real_append(batch)

    monkeypatch.setattr(storage, "append", append)

    async def scenario() -> None:
        nonlocal full
        node = Node(Bus(storage, LOCAL))
        results = await asyncio.gather(node.save("/~/a", 1), node.save("/~/b", 2), return_exceptions=True)
        assert all(isinstance(r, StorageFailed) for r in results), results
        gone = node.fetch_or_none("/~/a")
        assert gone is None or not gone.exists
        full = False
        for _ in range(100):
            await asyncio.sleep(0.02)
            if node.committer.healthy and node.bus.storage_refused is None:
                break
        await node.save("/~/a", 3)
        kept = node.fetch_or_none("/~/a")
        assert kept is not None and kept.value == 3
        await node.aclose()

    asyncio.run(scenario())
    storage.close()
    reopened = SqliteStorage(tmp_path / STORE_FILE)
    try:
        assert [op.key.rsplit("/", 1)[-1] for op in reopened.scan("", 0, 100)] == ["a"]
    finally:
        reopened.close()
