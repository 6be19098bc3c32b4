"""Placement between real nodes: N copies per subtree across this node, a device of the same owner
(a delegated key that follows it, holding plaintext) and a mirror (holding ciphertext)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from statebus.errors import InvalidValue
from statebus.federation.client import PeerClient
from statebus.federation.placement import Device, devices, placement, rules
from statebus.identity import delegate, keystore, record_key
from statebus.mirror.push import MirrorTargets, challenge, push, status
from statebus.server import Cluster

pytestmark = pytest.mark.anyio


async def test_a_device_of_the_owner_counts_per_subtree_and_status_shows_what_is_short(
    cluster: Cluster, tmp_path: Path
) -> None:
    identity, _ = keystore.init(tmp_path / "a")
    m = await cluster.add("m", mirror_for=(identity.pubkey,))
    a = await cluster.add("a")
    d, stranger = await cluster.add("d"), await cluster.add("e")
    photos, notes = f"/{a.pubkey}/photos/", f"/{a.pubkey}/notes/"
    whole = delegate(a.identity, d.pubkey, [f"/{a.pubkey}/"], issued=1).to_json()
    await a.node.save(record_key(a.pubkey, d.pubkey), whole)
    for i in range(5):
        await a.node.save(f"/~/photos/{i}", {"private": i})
        await a.node.save(f"/~/notes/{i}", {"private": i})
    await d.follow(photos)  # the device keeps the photos only (plaintext: it is the owner's)
    deadline = asyncio.get_running_loop().time() + 60
    while not all((c := d.node.fetch_or_none(f"{photos}{i}")) is not None and c.exists for i in range(5)):
        assert asyncio.get_running_loop().time() < deadline, "the device never caught up"
        await asyncio.sleep(0.05)
    targets = MirrorTargets(a.settings.data_dir)
    targets.add(m.url)
    assert (await push(a.node, a.identity, targets, m.url)).error == ""
    assert (await challenge(a.node, a.identity, targets, m.url))["ok"]
    wanted = rules(a.pubkey, 2, ("/~/photos/=3", "/~/notes/=3"))
    listed = [Device(d.pubkey, d.url), Device(stranger.pubkey, stranger.url), Device(d.pubkey, stranger.url)]
    client = PeerClient(a.identity)
    try:
        places, checked = await placement(a.node, client, wanted, status(a.node, targets), listed)
        by = {(c.device, c.subtree): c for c in checked}
        assert by[listed[0], photos].complete and by[listed[0], photos].lacking == 0
        assert by[listed[0], notes].lacking == 5 and not by[listed[0], notes].complete
        assert by[listed[1], photos].error == f"no delegation of ours for {stranger.pubkey}"
        assert by[listed[2], photos].error == f"{stranger.url} answers as {stranger.pubkey}, not {d.pubkey}"
        got = {p.subtree: (p.have, p.wanted, p.short) for p in places}
        assert got == {f"/{a.pubkey}/": (2, 2, 0), photos: (3, 3, 0), notes: (2, 3, 1)}, places
        assert next(p for p in places if p.subtree == photos).holders == [
            "this node",
            f"device {d.pubkey}",
            f"mirror {m.url}",
        ]
        # the device stops following: a new photo is on this node and the mirror, not on the device
        await d.unfollow(photos)
        await asyncio.sleep(0.3)
        await a.node.save("/~/photos/new", {"private": "new"})
        await a.node.flush()
        assert (await push(a.node, a.identity, targets, m.url)).error == ""
        places, checked = await placement(a.node, client, wanted, status(a.node, targets), listed[:1])
        assert [c.lacking for c in checked if c.subtree == photos] == [1]
        assert {p.subtree: p.short for p in places}[photos] == 1

    finally:
        await client.aclose()


def test_placement_rules_and_devices_are_checked_with_a_reason() -> None:
    pk = "a" * 51 + "q"
    assert rules(pk, 2, ("/~/photos/=3", f"/{pk}/x/y/=1")) == {
        f"/{pk}/": 2,
        f"/{pk}/photos/": 3,
        f"/{pk}/x/y/": 1,
    }
    for bad, why in (
        ("/~/photos/", "SUBTREE=N"),
        ("/~/photos/=0", "SUBTREE=N"),
        ("/~/photos=2", "this node's namespace"),
        (f"/{'b' * 51}q/x/=2", "this node's namespace"),
    ):
        with pytest.raises(InvalidValue, match=why):
            rules(pk, 2, (bad,))
    with pytest.raises(InvalidValue, match="PUBKEY@URL"):
        devices(("http://127.0.0.1:1",))
    with pytest.raises(InvalidValue, match="http"):
        devices((f"{pk}@ftp://x",))
    assert devices((f"{pk}@http://127.0.0.1:9/",)) == [Device(pk, "http://127.0.0.1:9")]
