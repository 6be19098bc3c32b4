"""Every change reaches a stream's transport, in order and once durable, also when a change is pushed
while an earlier one is still being written (two commits in flight): the transport's hook
(``EventStream.deliver``, which takes changes without waking the reader) and a plain reader alike."""

from __future__ import annotations

import asyncio

from statebus.bus import Bus, Change
from statebus.runtime import Node
from statebus.storage.memory import MemoryStorage

LOCAL = "a" * 52
KEY = "/~/fast/k"


async def _two_commits_in_flight() -> list[Change]:
    node = Node(Bus(MemoryStorage(), LOCAL))
    stream = node.events(KEY, snapshot=False)
    got: list[Change] = []

    def deliver() -> bool:
        got.extend(stream.drain_ready())
        return True

    stream.deliver = deliver
    reader = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0)  # the reader sleeps, waiting for a first change
    first = asyncio.ensure_future(node.save(KEY, 1))
    while node.pending or node.durable_seq == node.seq:
        await asyncio.sleep(0)  # until the first change is being written (taken, not yet durable)
    second = asyncio.ensure_future(node.save(KEY, 2))
    await asyncio.gather(first, second)
    for _ in range(20):
        await asyncio.sleep(0)
    assert not reader.done()  # the fast lane took everything; the reader never woke
    reader.cancel()
    stream.close()
    await node.aclose()
    return got


def test_a_change_pushed_during_a_commit_is_delivered_after_the_next_one() -> None:
    got = asyncio.run(_two_commits_in_flight())
    assert [c.value for c in got] == [1, 2]


async def _without_deliver() -> list[object]:
    node = Node(Bus(MemoryStorage(), LOCAL))
    stream = node.events(KEY, snapshot=False)
    await node.save(KEY, 1)
    await node.save(KEY, 2)
    values = [(await stream.__anext__()).value, (await stream.__anext__()).value]
    stream.close()
    await node.aclose()
    return values


def test_without_a_transport_hook_the_reader_gets_every_change() -> None:
    assert asyncio.run(_without_deliver()) == [1, 2]
