"""A signed subtree snapshot moves like a blob (issue 14, item 5 with items 2 and 4): as a torrent
between nodes that swarm (the late follower fetches it over libtorrent, checks it and completes the
compacted document; the next follower is offered the first as a seeder), and from a relay that
installed it, as the owner signed it. Real nodes (uvicorn, port 0, a real DHT) in this process."""

from __future__ import annotations

import pytest
from pycrdt import Doc, Text

from statebus.server import Cluster, RunningNode

from .support import live, wait_until

pytestmark = pytest.mark.anyio

SWARM = {"swarm": True, "swarm_min_bytes": 1}
"""Every snapshot goes over the swarm here (the default is 1 MiB and more)."""


async def _busy_doc(a: RunningNode, n: int) -> None:
    doc: Doc = Doc()
    text = doc.get("t", type=Text)
    for i in range(n):
        before = doc.get_state()
        text += f"{i % 10}"
        await a.node.crdt_update("/~/yc/doc", doc.get_update(before))


def _complete(node: RunningNode, owner: RunningNode, key: str) -> bool:
    mine, theirs = owner.node.fetch_or_none(key), node.node.fetch_or_none(key)
    return (
        node.node.incomplete(key) is None
        and mine is not None
        and theirs is not None
        and mine.version == theirs.version
        and node.node.yjs_update(key, mine.version) == owner.node.yjs_update(key, mine.version)
    )


async def test_a_snapshot_travels_over_the_swarm_and_the_next_follower_is_offered_the_first(
    cluster: Cluster,
) -> None:
    a = await cluster.add("a", history_keep_ops=4, **SWARM)
    b = await cluster.add("b", **SWARM)
    c = await cluster.add("c", **SWARM)
    await a.share("/~/yc/")
    await _busy_doc(a, 60)
    yc = f"/{a.pubkey}/yc/"
    doc = yc + "doc"
    await b.follow(yc)
    await wait_until(lambda: live(b) and _complete(b, a, doc), what="b completes the document")
    follower = next(iter(b.federation.followers.values()))
    assert follower.snapshot is not None and follower.snapshot.via == "swarm"
    kept = a.federation.snapshots.kept[yc][0]
    assert a.federation.swarm is not None and b.federation.swarm is not None
    roles = {t.hash: t.role for t in b.federation.swarm.session.stats().torrents}
    assert roles.get(kept.hash) == "fetched"  # b seeds it now
    await c.follow(yc)
    await wait_until(lambda: live(c) and _complete(c, a, doc), what="c completes the document")
    assert next(iter(c.federation.followers.values())).snapshot.via == "swarm"  # type: ignore[union-attr]
    offer = await a.federation.swarm_offer(kept.pointer, "", None)
    assert offer["seeders"][0] == a.federation.swarm.address
    assert b.federation.swarm.address in offer["seeders"] and c.federation.swarm.address in offer["seeders"]


async def test_a_relay_serves_the_owners_snapshot_to_a_new_follower_while_the_owner_is_away(
    cluster: Cluster,
) -> None:
    """A relay cannot sign a snapshot; it serves the owner's, as it got it (``snapshots`` rule 4)."""
    a = await cluster.add("a", history_keep_ops=4)
    relay, c = await cluster.add("relay"), await cluster.add("c")
    await a.share("/~/yc/")
    await _busy_doc(a, 40)
    yc = f"/{a.pubkey}/yc/"
    doc = yc + "doc"
    await relay.follow(yc)
    await wait_until(lambda: live(relay) and _complete(relay, a, doc), what="the relay completes")
    assert relay.federation.snapshots.kept[yc][0].hash == a.federation.snapshots.kept[yc][0].hash
    mine = a.node.fetch(doc).version
    theirs = a.node.yjs_update(doc, mine)
    await cluster.stop("a")
    await c.follow(yc, via=[relay.url])
    await wait_until(lambda: live(c) and c.node.incomplete(doc) is None, what="c completes via the relay")
    follower = next(iter(c.federation.followers.values()))
    assert follower.url == relay.url and follower.snapshot is not None and follower.snapshot.keys == [doc]
    assert c.node.fetch(doc).version == mine and c.node.yjs_update(doc, mine) == theirs
