"""A 20-node DHT in one process: publish, resolve, republish, and records that must be refused."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable

import pytest
from kademlia.node import Node
from nacl.signing import SigningKey

from statebus.errors import Forbidden, InvalidKey, InvalidValue
from statebus.federation.dht import Directory, KademliaDirectory
from statebus.federation.dht_crawl import RecordCrawl
from statebus.federation.dht_record import SIGNING_DOMAIN, dht_key, make_record, pubkey_of

MakeNetwork = Callable[..., Awaitable[list[KademliaDirectory]]]  # the conftest fixture

pytestmark = pytest.mark.anyio


async def _publish_all(nodes: list[KademliaDirectory]) -> None:
    for i, node in enumerate(nodes):
        await node.publish([f"http://127.0.0.1:{8000 + i}"])


async def test_twenty_nodes_resolve_each_other(make_network: MakeNetwork) -> None:
    nodes = await make_network(20)
    assert all(node.port > 0 for node in nodes)
    assert len({node.port for node in nodes}) == 20
    await _publish_all(nodes)
    assert [i for i, node in enumerate(nodes) if node.last_acks < 1] == []
    # ksize=4: each record sits on a handful of the 20 nodes, so most lookups cross the network
    copies = [
        sum(1 for node in nodes if t.record and t.record.key in node.protocol.storage.records) for t in nodes
    ]
    # (lookups also leave copies on the nodes they crossed, so the count varies from run to run)
    assert max(copies) < len(nodes) and sorted(copies)[len(copies) // 2] <= 10, copies
    for resolver in nodes:
        for target in nodes:
            record = await resolver.resolve(target.pubkey)
            assert record is not None
            assert record == target.record


async def test_kademlia_directory_is_a_directory(make_network: MakeNetwork) -> None:
    (node,) = await make_network(1)
    directory: Directory = node
    assert directory.port == node.port
    assert await directory.resolve(node.pubkey) is None
    record = await directory.publish(["127.0.0.1:9"])
    assert await directory.resolve(node.pubkey) == record  # alone: the local copy is the answer
    with pytest.raises(InvalidKey):
        await directory.resolve("not a key")
    with pytest.raises(InvalidValue):
        await directory.publish(["not an address"])
    with pytest.raises(Forbidden):
        node._server.save_state("/tmp/never")
    with pytest.raises(InvalidValue, match="already started"):
        await node.start([])


async def test_address_change_bumps_seq_everywhere(make_network: MakeNetwork) -> None:
    nodes = await make_network(20)
    await _publish_all(nodes)
    mover = nodes[7]
    old = mover.record
    assert old is not None
    new = await mover.publish(["http://127.0.0.1:9999", "127.0.0.1:9998"])
    assert new.seq > old.seq
    for node in nodes:
        record = await node.resolve(mover.pubkey)
        assert record is not None
        assert record.addrs == ("http://127.0.0.1:9999", "127.0.0.1:9998")
        assert record.seq == new.seq


async def test_resolve_asks_the_network_not_only_its_stale_copy(make_network: MakeNetwork) -> None:
    seed = os.urandom(32)
    nodes = await make_network(12, seeds=[os.urandom(32) for _ in range(11)] + [seed])
    await _publish_all(nodes)
    owner = nodes[-1]
    key = dht_key("alpha", owner.pubkey)
    holders = [n for n in nodes if key in n.protocol.storage.records and n is not owner]
    assert holders
    stale_holder = holders[0]
    # a newer record reaches every node but one holder
    newer = make_record(
        seed,
        ["http://127.0.0.1:7777"],
        seq=owner.record.seq + 1,  # type: ignore[union-attr]
        expires=int(time.time()) + 600,
        dht_name="alpha",
    )
    for node in nodes:
        if node is not stale_holder:
            node.protocol.storage[key] = newer
    assert stale_holder.protocol.storage.record(key).seq == owner.record.seq  # type: ignore[union-attr]
    record = await stale_holder.resolve(owner.pubkey)
    assert record is not None
    assert record.addrs == ("http://127.0.0.1:7777",)
    assert stale_holder.protocol.storage.record(key).seq == record.seq  # type: ignore[union-attr]


async def test_lookup_keeps_the_highest_seq_and_repairs_stale_holders(make_network: MakeNetwork) -> None:
    seed = os.urandom(32)
    nodes = await make_network(8, seeds=[os.urandom(32) for _ in range(7)] + [seed])
    await _publish_all(nodes)
    owner = nodes[-1]
    assert owner.record is not None
    key = owner.record.key
    holders = [n for n in nodes if key in n.protocol.storage.records and n is not owner]
    assert len(holders) >= 2
    # the holder closest to the key is one every lookup visits
    holders.sort(key=lambda n: _distance(n, key))
    newer = make_record(seed, ["http://127.0.0.1:7778"], seq=owner.record.seq + 1,
                        expires=int(time.time()) + 600, dht_name="alpha")  # fmt: skip
    holders[0].protocol.storage[key] = newer  # one holder has the newer record, the rest the older
    askers = [n for n in nodes if n not in holders]  # the owner too: its own copy is the older one
    for asker in askers:
        record = await asker.resolve(owner.pubkey)
        assert record is not None and record.addrs == ("http://127.0.0.1:7778",), asker
    # a lookup that visits the stale holders stores the newest record back on them
    stale = [Node(n.protocol.source_node.id, "127.0.0.1", n.port) for n in holders[:4]]
    crawl = RecordCrawl(owner.protocol, Node(key), stale, 4, 3, dht_name="alpha")
    found = await crawl.find_record()
    assert found is not None and found[1] == newer
    await _sleep(0.1)  # repairs are sent in the background
    assert {n.protocol.storage.record(key).seq for n in holders[:4]} == {owner.record.seq + 1}  # type: ignore[union-attr]


async def test_a_lookup_takes_the_newest_record_from_a_holder_that_answers_late(
    make_network: MakeNetwork,
) -> None:
    """The race behind the 1-in-10 failure above at load 15: the closest holder, the only one with
    the newest record, answers after its round's probe timeout while the others answer at once with
    an older one. The lookup must take the late reply (within the RPC timeout), not end on seq N."""
    seed = os.urandom(32)
    nodes = await make_network(8, seeds=[os.urandom(32) for _ in range(7)] + [seed], wait_timeout=1.0)
    await _publish_all(nodes)
    owner = nodes[-1]
    assert owner.record is not None
    key = owner.record.key
    holders = sorted(
        (n for n in nodes if key in n.protocol.storage.records and n is not owner),
        key=lambda n: _distance(n, key),
    )
    assert len(holders) >= 2
    asker = next(n for n in nodes if n not in holders and n is not owner)
    for node in nodes:  # a few round trips timed: the probe timeout is now tens of ms at most
        await asker.resolve(node.pubkey)
    asker._cache.clear()
    assert asker.protocol.probe_timeout() < 0.15
    newer = make_record(seed, ["http://127.0.0.1:7778"], seq=owner.record.seq + 1,
                        expires=int(time.time()) + 600, dht_name="alpha")  # fmt: skip
    holders[0].protocol.storage[key] = newer
    loop = asyncio.get_running_loop()
    original = holders[0].protocol.datagram_received

    def late(data: bytes, addr: object) -> None:
        loop.call_later(0.25, original, data, addr)  # type: ignore[arg-type]

    holders[0].protocol.datagram_received = late  # type: ignore[method-assign]
    record = await asker.resolve(owner.pubkey)
    assert record is not None and record.seq == owner.record.seq + 1, record
    await _sleep(0.1)  # the second closest holder, stale, is repaired in the background
    assert holders[1].protocol.storage.record(key).seq == owner.record.seq + 1  # type: ignore[union-attr]


def _distance(node: KademliaDirectory, key: bytes) -> int:
    return int.from_bytes(node.protocol.source_node.id, "big") ^ int.from_bytes(key, "big")


def _forged_body(
    pubkey: str, *, seq: int, addrs: list[str], dht: str = "alpha", exp: int | None = None
) -> bytes:
    body = {
        "addrs": addrs,
        "dht": dht,
        "exp": exp or int(time.time()) + 600,
        "pk": pubkey,
        "seq": seq,
        "v": 1,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


async def test_bad_records_are_refused_by_remote_nodes(make_network: MakeNetwork) -> None:
    victim_seed = os.urandom(32)
    nodes = await make_network(10, seeds=[victim_seed] + [os.urandom(32) for _ in range(9)])
    victim, attacker = nodes[0], nodes[1]
    await victim.publish(["http://127.0.0.1:1111"])
    first = victim.record
    genuine = await victim.publish(["http://127.0.0.1:2222"])
    assert first is not None and genuine.seq > first.seq
    key = genuine.key
    now = int(time.time())
    stale = make_record(
        victim_seed, list(first.addrs), seq=first.seq, expires=first.expires, dht_name="alpha"
    )
    body = _forged_body(victim.pubkey, seq=genuine.seq + 100, addrs=["http://6.6.6.6:66"])
    bad_sig = SigningKey(os.urandom(32)).sign(SIGNING_DOMAIN + body).signature + body
    tampered = bytearray(
        make_record(
            victim_seed, ["http://127.0.0.1:2223"], seq=genuine.seq + 100, expires=now + 600, dht_name="alpha"
        )
    )
    tampered[-30] ^= 0x01
    expired = make_record(
        victim_seed, ["http://6.6.6.6:66"], seq=genuine.seq + 200, expires=now - 5, dht_name="alpha"
    )
    other_dht = make_record(
        victim_seed, ["http://6.6.6.6:66"], seq=genuine.seq + 300, expires=now + 600, dht_name="beta"
    )
    big = _forged_body(victim.pubkey, seq=genuine.seq + 400, addrs=["http://" + "a" * 180 + ":1"] * 8)
    oversized = SigningKey(victim_seed).sign(SIGNING_DOMAIN + big).signature + big
    attacker_own = make_record(
        attacker._key, ["http://6.6.6.6:66"], seq=genuine.seq + 500, expires=now + 600, dht_name="alpha"
    )  # valid, but under the victim's key
    rpc = attacker.protocol
    # the holders of seq 2: each publish stores on the k closest nodes its own lookup found, and on a
    # loaded machine (late replies) the second lookup found another set: a node still held seq 1 only
    holders = [
        n for n in nodes[2:] if (held := n.protocol.storage.records.get(key)) and held.seq == genuine.seq
    ]
    assert holders
    for node in nodes[2:]:
        # a holder of seq 2 refuses the replayed seq 1; a node that never saw seq 2 cannot know it is
        # old and keeps it, which is harmless: lookups keep the highest seq
        ok, accepted = await rpc.store(("127.0.0.1", node.port), rpc.source_node.id, key, stale)
        assert ok
        assert accepted is (node not in holders)
    attacks = {
        "bad_sig": bad_sig,
        "tampered": bytes(tampered),
        "expired": expired,
        "other_dht": other_dht,
        "oversized": oversized,
        "wrong_key": attacker_own,
        "unsigned": body,
        "not_bytes": "hello",
    }
    for name, blob in attacks.items():
        for node in nodes[2:]:
            ok, accepted = await rpc.store(("127.0.0.1", node.port), rpc.source_node.id, key, blob)
            assert ok, name
            assert accepted is False, name
    assert all(node.protocol.storage.rejected >= len(attacks) for node in nodes[2:])
    for node in nodes:
        record = await node.resolve(victim.pubkey)
        assert record == genuine


async def test_publish_survives_a_restart_with_a_lower_clock(make_network: MakeNetwork) -> None:
    seed = os.urandom(32)
    nodes = await make_network(6, seeds=[os.urandom(32) for _ in range(5)] + [seed], wait_timeout=0.2)
    first = await nodes[5].publish(["127.0.0.1:1"])
    await nodes[5].stop()
    reborn = KademliaDirectory(
        seed, "alpha", b"test invite secret", ksize=4, wait_timeout=0.2, clock=lambda: time.time() - 60
    )  # its clock is a minute behind
    try:
        await reborn.start([("127.0.0.1", nodes[0].port)])
        second = await reborn.publish(["127.0.0.1:2"])
        assert second.seq > first.seq
        assert (await nodes[1].resolve(reborn.pubkey)) == second
    finally:
        await reborn.stop()


async def test_owner_republishes_before_expiry(make_network: MakeNetwork) -> None:
    nodes = await make_network(5)
    owner = nodes[4]
    owner.republish_interval = 0.05
    first = await owner.publish(["127.0.0.1:3"])
    for _ in range(100):
        if owner.record is not None and owner.record.seq > first.seq:
            break
        await _sleep(0.02)
    assert owner.record is not None and owner.record.seq > first.seq
    assert (await nodes[0].resolve(owner.pubkey)) is not None


async def test_holders_do_not_restore_records(make_network: MakeNetwork) -> None:
    nodes = await make_network(6)
    await _publish_all(nodes)
    sent: list[object] = []
    for node in nodes:
        original = node.protocol.call_store

        async def spy(*args: object, _original: object = original) -> object:
            sent.append(args)
            return await _original(*args)  # type: ignore[operator]

        node.protocol.call_store = spy  # type: ignore[method-assign,assignment]
    for node in nodes:
        await node._server._refresh_table()
    assert sent == []


async def test_key_and_directory_arguments_are_checked() -> None:
    with pytest.raises(InvalidValue):
        KademliaDirectory(os.urandom(32), "bad name", b"s")
    with pytest.raises(InvalidValue):
        KademliaDirectory(os.urandom(32), "alpha", "not bytes")  # type: ignore[arg-type]
    seed = os.urandom(32)
    node = KademliaDirectory(seed, "alpha", b"s")
    assert node.pubkey == pubkey_of(SigningKey(seed))
    with pytest.raises(InvalidValue):
        await node.start([("localhost", 1)])
    await node.stop()


async def _sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)
