"""The committer's rule: once a write fails, nothing after it is acknowledged either.

Writes queued behind a batch that storage refused fail with it, although storage would take them a
moment later: they were made on top of state that is now rolled back. Nothing of them stays
visible (reads, storage, streams), and the writes after the backoff start from the durable state.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence

import pytest

from statebus.bus import Bus, Change
from statebus.errors import NotFound, StorageFailed
from statebus.runtime import Node, committer
from statebus.storage.base import StoredOp
from statebus.storage.memory import MemoryStorage

LOCAL = "a" * 52


class FailOnceStorage(MemoryStorage):
    """Appends wait for ``go``; the first append after ``fail_next`` is set fails as on a full disk."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.go.set()
        self.writing = threading.Event()
        self.fail_next = False

    def append(self, batch: Sequence[StoredOp]) -> None:
        self.writing.set()
        assert self.go.wait(10)
        if self.fail_next:
            self.fail_next = False
            raise sqlite3.OperationalError("database or disk is full")
        super().append(batch)


async def _scenario() -> dict[str, object]:
    storage = FailOnceStorage()
    node = Node(Bus(storage, LOCAL))
    before = await node.save("/~/doc", {"v": "before"})
    stream = node.events("/~/", snapshot=False)
    storage.go.clear()
    storage.writing.clear()
    storage.fail_next = True
    first = asyncio.ensure_future(node.save("/~/doc", {"v": "failing batch"}))
    while not storage.writing.is_set():  # the first batch is in the writer thread, held there
        await asyncio.sleep(0.001)
    queued = asyncio.gather(
        node.save("/~/doc", {"v": "queued behind"}), node.save("/~/new", 1), return_exceptions=True
    )
    await asyncio.sleep(0.01)  # both wait in the outbox for the next batch
    storage.go.set()  # the first batch fails; storage would take the next one
    results = [*(await asyncio.gather(first, return_exceptions=True)), *(await queued)]

    seen: list[Change] = []
    with pytest.raises(StorageFailed):
        async for change in stream:
            seen.append(change)
    visible = [node.fetch("/~/doc").value, node.children("/~/")]
    with pytest.raises(NotFound):
        node.fetch("/~/new")
    stored = [op.seq for op in storage.scan("", 0, 100)]

    while node.bus.storage_refused is not None:  # the backoff, then writes are taken again
        await asyncio.sleep(0.01)
    after = await node.save("/~/doc", {"v": "after"})
    resumed = node.events("/~/", since=before.seq, snapshot=False)
    replay = [await asyncio.wait_for(resumed.__anext__(), 5)]
    resumed.close()
    await node.aclose()
    return {
        "results": [type(r).__name__ for r in results],
        "streamed": seen,
        "visible": visible,
        "stored": stored,
        "before": before.seq,
        "replay": [(c.key.rsplit("/", 1)[1], c.value) for c in replay],
        "after_seq_above_lost": after.seq > before.seq + 3,
    }


def test_writes_queued_behind_a_failed_batch_are_not_acknowledged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(committer, "RETRY_FIRST", 0.02)
    outcome = asyncio.run(_scenario())
    assert outcome["results"] == ["StorageFailed"] * 3
    assert outcome["streamed"] == []
    assert outcome["visible"] == [{"v": "before"}, ["doc"]]
    assert outcome["stored"] == [outcome["before"]]
    assert outcome["replay"] == [("doc", {"v": "after"})]
    assert outcome["after_seq_above_lost"]
