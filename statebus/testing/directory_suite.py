"""The acceptance suite every :class:`~statebus.federation.dht.Directory` passes (as
:mod:`statebus.testing.storage_suite` is for storage).

Subclass :class:`DirectorySuite` in a test module named ``Test…`` and give it ``make_network``: a
new DHT whose records expire by the given clock, returned as a function that makes one directory
(not started) from a 32-byte seed. The suite starts the first directory of a test with no
bootstrap and every later one through the first, and stops them all at the end::

    class TestMemoryDirectory(DirectorySuite):
        def make_network(self, dht_name, clock):
            net = MemoryDirectoryNetwork(dht_name, clock=clock)
            return lambda seed: MemoryDirectory(seed, net)

The tests are async (``pytest.mark.anyio``); a directory built on asyncio needs the
``anyio_backend`` fixture to answer ``"asyncio"``.

Rules (what every directory does):
1. A record one directory publishes is what every directory of the DHT resolves for its key.
2. Each publish has a higher seq than the last record of that key, even after a restart with a
   clock that went back; the newest record wins.
3. A key never published, or whose record expired, resolves to ``None``.
4. A malformed key raises :class:`~statebus.errors.InvalidKey`; malformed addresses, a malformed
   bootstrap address, use before ``start`` and a second ``start`` raise
   :class:`~statebus.errors.InvalidValue`.
5. ``port`` is 0 before ``start`` and a distinct positive number after; ``stop`` may be called twice.
"""

from __future__ import annotations

import abc
import contextlib
import os
from collections.abc import AsyncIterator, Callable

import pytest

from statebus.errors import InvalidKey, InvalidValue
from statebus.federation.dht import Directory
from statebus.federation.dht_record import pubkey_of, signing_key_of

MakeDirectory = Callable[[bytes], Directory]
"""Makes one directory (not started) of a DHT from a 32-byte Ed25519 seed."""

TTL = 3600
"""The record lifetime the suite assumes (every directory's default)."""


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class DirectorySuite(abc.ABC):
    """Every rule of the Directory seam, as tests. Subclasses supply the DHT."""

    pytestmark = pytest.mark.anyio

    @abc.abstractmethod
    def make_network(self, dht_name: str, clock: Callable[[], float]) -> MakeDirectory:
        """A new, empty DHT named ``dht_name`` whose records live by ``clock``."""

    @contextlib.asynccontextmanager
    async def started(
        self, n: int, clock: FakeClock | None = None
    ) -> AsyncIterator[tuple[MakeDirectory, list[Directory]]]:
        """``n`` started directories of one new DHT (and its maker, for more); all stopped on exit."""
        make = self.make_network("suite", clock or FakeClock())
        nodes: list[Directory] = []
        try:
            for _ in range(n):
                node = make(os.urandom(32))
                nodes.append(node)
                await node.start([("127.0.0.1", nodes[0].port)] if len(nodes) > 1 else [])
            yield make, nodes
        finally:
            for node in nodes:
                await node.stop()

    async def test_a_published_record_resolves_everywhere(self) -> None:
        async with self.started(3) as (_, (alice, bob, carol)):
            record = await alice.publish(["http://127.0.0.1:8000"])
            assert record.addrs == ("http://127.0.0.1:8000",)
            for node in (alice, bob, carol):
                assert await node.resolve(record.pubkey) == record

    async def test_a_key_never_published_resolves_to_none(self) -> None:
        async with self.started(2) as (_, (alice, _)):
            stranger = pubkey_of(signing_key_of(os.urandom(32)))
            assert await alice.resolve(stranger) is None

    async def test_the_newest_record_wins(self) -> None:
        async with self.started(2) as (_, (alice, bob)):
            first = await alice.publish(["http://127.0.0.1:8000"])
            second = await alice.publish(["http://127.0.0.1:8001"])
            assert second.seq > first.seq
            assert await bob.resolve(first.pubkey) == second

    async def test_a_restart_with_an_earlier_clock_still_publishes_above(self) -> None:
        clock = FakeClock()
        async with self.started(2, clock) as (make, (alice, bob)):
            seed = os.urandom(32)
            old = make(seed)
            await old.start([("127.0.0.1", alice.port)])
            first = await old.publish(["http://127.0.0.1:8000"])
            await old.stop()
            clock.now -= 600
            reborn = make(seed)
            try:
                await reborn.start([("127.0.0.1", alice.port)])
                second = await reborn.publish(["http://127.0.0.1:8001"])
            finally:
                await reborn.stop()
            assert second.seq > first.seq
            assert await bob.resolve(first.pubkey) == second

    async def test_an_expired_record_resolves_to_none(self) -> None:
        clock = FakeClock()
        async with self.started(2, clock) as (_, (alice, bob)):
            record = await alice.publish(["http://127.0.0.1:8000"])
            clock.now = record.expires + 1
            assert await bob.resolve(record.pubkey) is None
            assert await alice.resolve(record.pubkey) is None

    async def test_malformed_input_is_refused(self) -> None:
        async with self.started(1) as (_, (alice,)):
            with pytest.raises(InvalidKey):
                await alice.resolve("not a key")
            with pytest.raises(InvalidValue):
                await alice.publish(["not an address"])

    async def test_use_before_start_and_a_second_start_are_refused(self) -> None:
        async with self.started(1) as (make, (alice,)):
            fresh = make(os.urandom(32))
            assert fresh.port == 0
            with pytest.raises(InvalidValue):
                await fresh.publish(["http://127.0.0.1:8000"])
            with pytest.raises(InvalidValue):
                await fresh.resolve(pubkey_of(signing_key_of(os.urandom(32))))
            with pytest.raises(InvalidValue):
                await fresh.start([("not an ip", 1)])
            with pytest.raises(InvalidValue):
                await alice.start([])

    async def test_ports_are_distinct_and_stop_is_idempotent(self) -> None:
        async with self.started(2) as (_, (alice, bob)):
            assert alice.port > 0 and bob.port > 0 and alice.port != bob.port
            await bob.stop()
            await bob.stop()
