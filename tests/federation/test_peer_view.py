"""What a peer may read over the server-to-server endpoints: the ACL decides this node's namespace,
and a share (``/~/.shares/…``) never reaches past the owner's deny-list."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from statebus.access.control import access_control
from statebus.bus import Bus
from statebus.config import Settings
from statebus.federation.policy import SHARES, PeerView, follow_id
from statebus.identity import Identity
from statebus.runtime import Node
from statebus.storage.memory import MemoryStorage

pytestmark = pytest.mark.anyio

OWNER, FRIEND, FOE = (Identity.generate() for _ in range(3))


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    n = Node(Bus(MemoryStorage(), OWNER.pubkey))
    yield n
    await n.aclose()


async def test_public_data_follows_the_acl_and_the_deny_list(node: Node, tmp_path) -> None:
    access = access_control(node, Settings(data_dir=tmp_path))
    public = f"/{OWNER.pubkey}/public/"
    assert PeerView(node.bus, FOE.pubkey, access).pattern(public)
    await node.save("/~/.acl/.deny", [FOE.pubkey])
    assert not PeerView(node.bus, FOE.pubkey, access).pattern(public)
    assert not PeerView(node.bus, FOE.pubkey, access).key(public + "x")
    assert PeerView(node.bus, FRIEND.pubkey, access).pattern(public)
    await node.save("/~/.acl/public", {"read": "owner"})  # the owner closes public/
    assert not PeerView(node.bus, FRIEND.pubkey, access).pattern(public)


async def test_a_share_widens_access_but_not_past_the_deny_list(node: Node, tmp_path) -> None:
    access = access_control(node, Settings(data_dir=tmp_path))
    chirp = f"/{OWNER.pubkey}/chirp/"
    assert not PeerView(node.bus, FRIEND.pubkey, access).pattern(chirp)
    await node.save(f"/~/{SHARES}/{follow_id(chirp)}", {"pattern": chirp})
    assert PeerView(node.bus, FRIEND.pubkey, access).pattern(chirp)
    await node.save("/~/.acl/.deny", [FOE.pubkey])
    assert not PeerView(node.bus, FOE.pubkey, access).pattern(chirp)
    assert PeerView(node.bus, FRIEND.pubkey, access).pattern(chirp)
