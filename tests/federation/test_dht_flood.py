"""A member floods every storing node with fresh, validly self-signed records (issue 9, defect 8).

Honest nodes sit on 127.0.0.1; the flooder sends from other loopback addresses (127.0.0.66 …),
so each address is a source of its own, as separate hosts would be. The storage limits are
lowered through ``limits`` so a flood of a few thousand records is enough.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import anyio
import pytest
import umsgpack
from kademlia.node import Node

from statebus.federation.dht import KademliaDirectory
from statebus.federation.dht_protocol import DirectoryProtocol, network_tag_key, tag_datagram, untag_datagram
from statebus.federation.dht_record import dht_key, make_record, pubkey_of
from statebus.federation.dht_storage import RecordStorage, StorageLimits

from .conftest import SECRET

MakeNetwork = Callable[..., Awaitable[list[KademliaDirectory]]]  # the conftest fixture
TAG_KEY = network_tag_key("alpha", SECRET)
LIMITS = StorageLimits(max_records=150, max_per_source=40, max_per_prefix=100)

pytestmark = pytest.mark.anyio


class Flooder(asyncio.DatagramProtocol):
    """A DHT member at one loopback address that STOREs records by hand and counts the answers.

    It answers no request, so nodes drop it as a contact when a lookup times out on it. (A member
    that answers lookups with nothing while refusing STOREs is an eclipse, which the storage
    bounds do not address: with k = 4 it hides honest holders from a lookup.)
    """

    def __init__(self) -> None:
        self.node_id = os.urandom(20)
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[bytes, asyncio.Future[Any]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        body = untag_datagram(TAG_KEY, data)
        if body is None or len(body) < 21 or body[:1] != b"\x01":
            return
        future = self.waiting.pop(body[1:21], None)
        if future is not None and not future.done():
            future.set_result(umsgpack.unpackb(body[21:]))

    def _send(self, body: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(tag_datagram(TAG_KEY, body), addr)

    async def store(self, port: int, key: bytes, blob: bytes) -> bool:
        msg_id = os.urandom(20)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[msg_id] = future
        self._send(
            b"\x00" + msg_id + umsgpack.packb(["store", [self.node_id, key, blob]]), ("127.0.0.1", port)
        )
        try:
            with anyio.fail_after(5):
                return bool(await future is True)
        finally:
            self.waiting.pop(msg_id, None)

    async def flood(self, port: int, records: list[tuple[bytes, bytes]], window: int = 16) -> int:
        """STORE every record on the node at ``port`` (``window`` at a time); how many it accepted."""
        accepted = 0

        async def worker(chunk: list[tuple[bytes, bytes]]) -> None:
            nonlocal accepted
            for key, blob in chunk:
                ok = await self.store(port, key, blob)
                accepted += ok

        async with anyio.create_task_group() as tg:
            for i in range(window):
                tg.start_soon(worker, records[i::window])
        return accepted


Flooders = Callable[[str], Awaitable[Flooder]]


@pytest.fixture
async def flooder() -> AsyncIterator[Flooders]:
    """``await flooder("127.0.0.66")``: a flooding endpoint bound to that loopback address."""
    made: list[Flooder] = []

    async def make(ip: str) -> Flooder:
        f = Flooder()
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: f, local_addr=(ip, 0))
        made.append(f)
        return f

    yield make
    for f in made:
        if f.transport is not None:
            f.transport.close()
    await anyio.sleep(0)


def fresh_records(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` valid records of ``n`` brand-new keys (what a flooder makes for free)."""
    out = []
    expires = int(time.time()) + 600
    for _ in range(n):
        seed = os.urandom(32)
        blob = make_record(seed, ["127.0.0.1:9"], seq=1, expires=expires, dht_name="alpha")
        out.append((dht_key("alpha", pubkey_of(seed)), blob))
    return out


async def _published(make_network: MakeNetwork, n: int, **kwargs: Any) -> list[KademliaDirectory]:
    nodes = await make_network(n, limits=LIMITS, **kwargs)
    for i, node in enumerate(nodes):
        await node.publish([f"http://127.0.0.1:{8000 + i}"])
    return nodes


async def _fresh_lookup(make_network: MakeNetwork, nodes: list[KademliaDirectory]) -> None:
    """A node that joins after the flood finds every honest record."""
    (fresh,) = await make_network(1, limits=LIMITS, bootstrap=[("127.0.0.1", nodes[0].port)])
    for node in nodes:
        assert await fresh.resolve(node.pubkey) == node.record, node


async def test_a_flood_from_one_address_is_refused_past_its_cap(
    make_network: MakeNetwork, flooder: Flooders
) -> None:
    nodes = await _published(make_network, 6)
    flood = await flooder("127.0.0.66")
    records = fresh_records(600)
    for node in nodes:
        storage = node.protocol.storage
        honest = set(storage.records)
        accepted = await flood.flood(node.port, records)
        assert honest <= set(storage.records)
        assert accepted == LIMITS.max_per_source  # the excess is refused ...
        assert storage.per_source("127.0.0.66") == LIMITS.max_per_source
        assert storage.refused_full >= len(records) - LIMITS.max_per_source  # ... and counted
    await _fresh_lookup(make_network, nodes)


async def test_a_flood_from_many_addresses_displaces_only_the_flood(
    make_network: MakeNetwork, flooder: Flooders
) -> None:
    nodes = await _published(make_network, 6)
    floods = [await flooder(f"127.0.0.{66 + i}") for i in range(6)]  # 6 × 40 accepted: over the 150 held
    for node in nodes:
        storage = node.protocol.storage
        honest = set(storage.records)
        for flood in floods:
            await flood.flood(node.port, fresh_records(100))
        assert len(storage) <= LIMITS.max_records and storage.evicted > 0
        assert honest <= set(storage.records)  # the biggest sources lose first: always the flood's
    await _fresh_lookup(make_network, nodes)


async def test_an_evicted_record_is_republished_at_the_next_self_check(
    make_network: MakeNetwork, flooder: Flooders
) -> None:
    small = StorageLimits(max_records=12, max_per_source=12, max_per_prefix=12)
    nodes = await make_network(5, limits=small)
    (owner,) = await make_network(  # a host of its own, as an owner usually is
        1,
        limits=small,
        self_check_interval=0.3,
        interface="127.0.0.2",
        bootstrap=[("127.0.0.1", nodes[0].port)],
    )
    record = await owner.publish(["http://127.0.0.1:8000"])
    assert owner.last_acks >= 2
    # more addresses than records held: each holds one record, so ties go to the least recently used
    floods = [await flooder(f"127.0.0.{100 + i}") for i in range(20)]
    for node in nodes:
        for flood in floods:
            await flood.flood(node.port, fresh_records(1), window=1)
    # evicted everywhere (or already replaced, if a self-check ran during the flood)
    assert not any(node.protocol.storage.record(record.key) == record for node in nodes)
    with anyio.fail_after(15):  # republish_interval is 30 min: only the self-check can bring it back
        while not (owner.early_republishes and _held_anywhere(owner, nodes)):
            await anyio.sleep(0.05)
    assert owner.record is not None and owner.record.seq > record.seq
    (fresh,) = await make_network(1, bootstrap=[("127.0.0.1", nodes[0].port)])
    assert await fresh.resolve(owner.pubkey) == owner.record


def _held_anywhere(owner: KademliaDirectory, nodes: list[KademliaDirectory]) -> bool:
    return owner.record is not None and any(
        node.protocol.storage.record(owner.record.key) == owner.record for node in nodes
    )


class _NullTransport:
    def sendto(self, data: bytes, addr: Any = None) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def test_fresh_node_ids_do_not_each_cost_a_scan_of_every_held_record() -> None:
    # upstream checked every held record for every new contact: 300 ms per made-up node id at 5 000
    storage = RecordStorage("alpha", node_id=os.urandom(20))
    for key, blob in fresh_records(2500):
        storage[key] = blob
    protocol = DirectoryProtocol(Node(storage.node_id), storage, 4, tag_key=TAG_KEY, wait_timeout=0.5)
    protocol.transport = _NullTransport()
    for i in range(100):
        protocol.router.add_contact(Node(os.urandom(20), "127.0.0.1", 1000 + i))
    calls = 0
    find_neighbors = protocol.router.find_neighbors

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return find_neighbors(*args, **kwargs)

    protocol.router.find_neighbors = counting  # type: ignore[method-assign]
    try:
        for i in range(50):  # a member pinging from 50 made-up node ids
            protocol.welcome_if_new(Node(os.urandom(20), "127.0.0.66", 2000 + i))
        assert calls <= 2 * len(storage), calls  # one scan (two if the box is slow), not fifty
        assert protocol.handovers_skipped >= 48
    finally:
        protocol.close()
