"""The in-memory Directory used by tests of the layers above the DHT."""

from __future__ import annotations

import os

import pytest

from statebus.errors import InvalidKey, InvalidValue
from statebus.federation.dht import Directory
from statebus.federation.dht_memory import MemoryDirectory, MemoryDirectoryNetwork
from statebus.federation.dht_record import make_record

pytestmark = pytest.mark.anyio


class Clock:
    now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_publish_resolve_and_expiry() -> None:
    clock = Clock()
    net = MemoryDirectoryNetwork("test", clock=clock)
    alice_seed = os.urandom(32)
    alice: Directory = MemoryDirectory(alice_seed, net, record_ttl=60)
    bob = MemoryDirectory(os.urandom(32), net)
    with pytest.raises(InvalidValue, match="not started"):
        await alice.publish(["127.0.0.1:1"])
    await alice.start([])
    await bob.start([("127.0.0.1", alice.port)])
    assert alice.port != bob.port
    assert await bob.resolve(bob.pubkey) is None
    first = await alice.publish(["http://127.0.0.1:8000"])
    second = await alice.publish(["http://127.0.0.1:8001"])
    assert second.seq > first.seq
    assert await bob.resolve(first.pubkey) == second
    stale = make_record(
        alice_seed, ["127.0.0.1:9"], seq=first.seq, expires=int(clock.now) + 30, dht_name="test"
    )
    with pytest.raises(InvalidValue):
        net.storage[second.key] = stale
    with pytest.raises(InvalidKey):
        await bob.resolve("nope")
    clock.now += 61
    assert await bob.resolve(first.pubkey) is None
    await alice.stop()
    assert alice.port == 0
