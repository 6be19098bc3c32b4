"""The wire-layer pieces as plain objects: record storage rules, contact parsing, the network tag."""

from __future__ import annotations

import asyncio
import os
import pathlib
import random
import re

import kademlia
import pytest

import statebus.federation
from statebus.errors import BadSignature, Forbidden, InvalidValue
from statebus.federation.dht import _DirectoryServer
from statebus.federation.dht_protocol import (
    network_tag_key,
    parse_contacts,
    tag_datagram,
    untag_datagram,
    valid_address,
)
from statebus.federation.dht_record import dht_key, make_record, pubkey_of
from statebus.federation.dht_storage import RecordStorage

SEED = b"\x05" * 32
PK = pubkey_of(SEED)
KEY = dht_key("alpha", PK)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _blob(seq: int, expires: float, addr: str = "127.0.0.1:1", seed: bytes = SEED) -> bytes:
    return make_record(seed, [addr], seq=seq, expires=int(expires), dht_name="alpha")


def test_storage_keeps_the_newest_record_and_refuses_older_ones() -> None:
    clock = Clock()
    storage = RecordStorage("alpha", clock=clock)
    storage[KEY] = _blob(2, clock.now + 100)
    with pytest.raises(InvalidValue, match="stale"):
        storage[KEY] = _blob(1, clock.now + 100)
    with pytest.raises(InvalidValue, match="stale"):  # same seq, other content: the first one stays
        storage[KEY] = _blob(2, clock.now + 100, addr="127.0.0.1:2")
    storage[KEY] = _blob(2, clock.now + 100)  # the very same record again: fine (refresh)
    storage[KEY] = _blob(3, clock.now + 100)
    assert storage.record(KEY).seq == 3  # type: ignore[union-attr]
    assert storage.rejected == 2
    assert [k for k, _ in storage] == [KEY]


def test_storage_drops_records_at_their_signed_expiry() -> None:
    clock = Clock()
    storage = RecordStorage("alpha", clock=clock)
    storage[KEY] = _blob(1, clock.now + 10)
    assert storage.get(KEY) is not None
    clock.now += 11
    assert storage.get(KEY) is None
    assert storage.record(KEY) is None
    assert list(storage) == []


def test_storage_refuses_invalid_writes_and_changes_nothing() -> None:
    clock = Clock()
    storage = RecordStorage("alpha", clock=clock)
    other = b"\x06" * 32
    with pytest.raises(InvalidValue):
        storage[KEY] = _blob(1, clock.now + 10, seed=other)  # valid record, wrong key
    with pytest.raises(InvalidValue):
        storage[b"short"] = _blob(1, clock.now + 10)
    with pytest.raises(InvalidValue):
        storage[KEY] = b"\x00" * 100
    with pytest.raises(BadSignature):
        storage[KEY] = b"\x00" * 64 + _blob(1, clock.now + 10)[64:]
    with pytest.raises(InvalidValue):
        storage[KEY] = _blob(1, clock.now - 1)
    assert list(storage) == []
    assert storage.rejected == 5


def test_storage_is_bounded() -> None:
    clock = Clock()
    storage = RecordStorage("alpha", clock=clock, max_records=3)
    seeds = [os.urandom(32) for _ in range(5)]
    for seed in seeds:
        storage[dht_key("alpha", pubkey_of(seed))] = _blob(1, clock.now + 10, seed=seed)
    assert len(list(storage)) == 3
    assert len(storage.records) == 3


def test_parse_contacts_keeps_only_well_formed_ones() -> None:
    good = [os.urandom(20), "127.0.0.1", 4000]
    payload = [
        good,
        [os.urandom(20), None, None],
        [os.urandom(19), "127.0.0.1", 1],
        [os.urandom(20), "localhost", 1],
        [os.urandom(20), "127.0.0.1", 0],
        [os.urandom(20), "127.0.0.1", False],
        "junk",
        None,
    ]
    nodes = parse_contacts(payload)
    assert [(n.id, n.ip, n.port) for n in nodes] == [tuple(good)]
    assert parse_contacts({"value": 1}) == []
    assert len(parse_contacts([good] * 100, limit=8)) == 8


def test_valid_address() -> None:
    assert valid_address(("127.0.0.1", 1))
    assert valid_address(("::1", 65535))
    for bad in [None, ("127.0.0.1",), ("127.0.0.1", 65536), ("127.0.0.1", "1"), (None, None), ("x", 1)]:
        assert not valid_address(bad)


def test_network_tag() -> None:
    key = network_tag_key("alpha", b"secret")
    assert key != network_tag_key("alpha", b"other") != network_tag_key("beta", b"secret")
    tagged = tag_datagram(key, b"hello")
    assert untag_datagram(key, tagged) == b"hello"
    assert untag_datagram(network_tag_key("beta", b"secret"), tagged) is None
    assert untag_datagram(key, tagged[:-1] + bytes([tagged[-1] ^ 1])) is None
    assert untag_datagram(key, b"short") is None


def test_no_pickle_anywhere_in_the_dht() -> None:
    uses_pickle = re.compile(r"^\s*(import|from)\s+pickle\b|\bpickle\.(loads?|dumps?)\b", re.M)
    ours = list(pathlib.Path(statebus.federation.__file__).parent.glob("dht*.py"))
    assert len(ours) >= 4
    assert [path.name for path in ours if uses_pickle.search(path.read_text())] == []
    # upstream uses pickle only in Server.save_state/load_state, which the directory overrides
    theirs = pathlib.Path(kademlia.__file__).parent.glob("*.py")
    assert [path.name for path in theirs if uses_pickle.search(path.read_text())] == ["network.py"]


async def _load_state() -> None:
    await _DirectoryServer.load_state("/tmp/never", 0)


def test_pickle_state_files_are_refused() -> None:
    with pytest.raises(Forbidden):
        asyncio.run(_load_state())


@pytest.mark.anyio
async def test_find_neighbors_returns_the_k_closest_contacts() -> None:
    """Upstream returned nothing when the key's bucket and the next right one were empty."""
    from kademlia.node import Node

    from statebus.federation.dht_protocol import ClosestRoutingTable

    rng = random.Random(7)
    me = Node(rng.randbytes(20))
    table = ClosestRoutingTable(_NoPing(), 4, me)
    contacts = [Node(rng.randbytes(20), "127.0.0.1", 1000 + i) for i in range(60)]
    for contact in contacts:
        table.add_contact(contact)
    held = [c for bucket in table.buckets for c in bucket.get_nodes()]
    assert len(table.buckets) > 2 and len(held) >= 8
    for _ in range(300):
        target = Node(rng.randbytes(20))
        want = sorted(held, key=target.distance_to)[:4]
        assert [c.id for c in table.find_neighbors(target)] == [c.id for c in want]
    assert held[0] not in table.find_neighbors(held[0])  # the key's own node is not its neighbour
    assert all(c.id != held[1].id for c in table.find_neighbors(held[0], exclude=held[1]))


class _NoPing:
    """The routing table pings the oldest contact of a full bucket through its protocol."""

    async def call_ping(self, node: object) -> None:
        return None


class _Wire:
    """Stands in for the UDP transport: keeps what the protocol sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def is_closing(self) -> bool:
        return False


@pytest.mark.anyio
async def test_a_late_reply_to_a_cancelled_request_is_ignored() -> None:
    """Upstream set the result of a cancelled future: InvalidStateError in the socket's read callback."""
    import umsgpack
    from kademlia.node import Node

    from statebus.federation.dht_protocol import DirectoryProtocol

    tag = network_tag_key("alpha", b"s")
    protocol = DirectoryProtocol(Node(os.urandom(20)), RecordStorage("alpha"), 4, tag_key=tag, wait_timeout=5)
    wire = _Wire()
    protocol.connection_made(wire)
    peer = ("127.0.0.1", 4000)

    async def reply_to_last_request(value: object) -> None:
        body = untag_datagram(tag, wire.sent[-1][0])
        assert body is not None and body[:1] == b"\x00"
        protocol.datagram_received(tag_datagram(tag, b"\x01" + body[1:21] + umsgpack.packb(value)), peer)

    lookup = asyncio.ensure_future(protocol.ping(peer, os.urandom(20)))
    await asyncio.sleep(0)
    lookup.cancel()  # the lookup gave up (a deadline, a stopped follower); its reply still arrives
    await reply_to_last_request(b"late")
    assert protocol._outstanding == {}
    answered = asyncio.ensure_future(protocol.ping(peer, os.urandom(20)))
    await asyncio.sleep(0)
    await reply_to_last_request(b"on time")
    assert await answered == (True, b"on time")
    await reply_to_last_request(b"again")  # a duplicate reply finds no request and changes nothing
    assert protocol._outstanding == {}
    protocol.close()
