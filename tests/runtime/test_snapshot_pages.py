"""A paged stream (``Node.events(paged=True)``): the starting state is read a page at a time, and writes
made between pages are delivered exactly once, either in a later page or as a live change after it."""

from __future__ import annotations

import asyncio
from typing import Any

from statebus.bus import Bus, Change
from statebus.runtime import Node
from statebus.runtime.snapshots import PAGE_KEYS
from statebus.storage.memory import MemoryStorage

LOCAL = "a" * 52
N = 300


def final_state(changes: list[Change]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for c in changes:
        if c.exists:
            state[c.key] = c.value
        elif not c.key.endswith("/"):
            state.pop(c.key, None)
    return state


async def _paged_with_writes_between_pages() -> tuple[list[list[Change]], int, dict[str, Any]]:
    node = Node(Bus(MemoryStorage(), LOCAL))
    for i in range(N):
        await node.save(f"/~/t/k{i:03d}", i)
    await node.save("/~/t/sub/x", "x")
    stream = node.events(["/~/t/", "/~/t/sub/"], paged=True)
    start = node.seq
    batches = [stream.drain_ready()]
    assert len(stream) == 1 and stream.pages is not None  # the rest is not read yet
    await node.save("/~/t/k000", "early")  # sent already: must follow as a live change
    await node.save(f"/~/t/k{N - 1:03d}", "ahead")  # not read yet: its page shows it, nothing live
    await node.delete("/~/t/k200")
    await node.save("/~/t/new", "created")
    while batch := stream.drain_ready():
        batches.append(batch)
    expected = {f"/{LOCAL}/t/{k}": v for k, v in (*((f"k{i:03d}", i) for i in range(N)), ("sub/x", "x"))}
    expected.update({f"/{LOCAL}/t/k000": "early", f"/{LOCAL}/t/k{N - 1:03d}": "ahead"})
    expected[f"/{LOCAL}/t/new"] = "created"
    del expected[f"/{LOCAL}/t/k200"]
    stream.close()
    await node.aclose()
    return batches, start, expected


def test_writes_between_pages_arrive_once_and_the_state_ends_exact() -> None:
    batches, start, expected = asyncio.run(_paged_with_writes_between_pages())
    assert len(batches[0]) == PAGE_KEYS  # one page, not the subtree
    changes = [c for b in batches for c in b]
    snapshot = [c for c in changes if c.kind == "snapshot"]
    live = [c for c in changes if c.kind == "op"]
    assert changes[: len(snapshot)] == snapshot  # every page before any live change
    assert all(c.seq == start for c in snapshot) and [c.last for c in snapshot].count(True) == 1
    assert snapshot[-1].last
    keys = [c.key for c in snapshot if c.exists]
    assert keys == sorted(keys) and len(keys) == len(set(keys))  # path order, each key once
    assert [c.key.rsplit("/", 1)[1] for c in live] == ["k000", "k200"]  # only what no page showed
    assert all(c.seq > start for c in live)
    assert final_state(changes) == expected


async def _a_reader_that_never_drains() -> tuple[int, int]:
    node = Node(Bus(MemoryStorage(), LOCAL))
    for i in range(N):
        await node.save(f"/~/t/k{i:03d}", "v" * 1000)
    stream = node.events("/~/t/", paged=True)
    first = stream.drain_ready()
    held = len(stream)
    stream.close()
    await node.aclose()
    return len(first), held


def test_a_stream_holds_nothing_of_the_starting_state_until_it_is_drained() -> None:
    first, held = asyncio.run(_a_reader_that_never_drains())
    assert first < N and held == 1  # one page read; the rest waits in the store
