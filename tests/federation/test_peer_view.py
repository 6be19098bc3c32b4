"""What a peer may read over the server-to-server endpoints: the ACL decides this node's namespace,
and a share (``/~/.shares/…``) never reaches past the owner's deny-list."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from statebus.access.control import AccessControl
from statebus.bus import Bus
from statebus.config import Settings
from statebus.federation.policy import SHARES, PeerView, follow_id
from statebus.identity import Identity, sign_op
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
    access = AccessControl(node, Settings(data_dir=tmp_path))
    public = f"/{OWNER.pubkey}/public/"
    assert PeerView(node.bus, FOE.pubkey, access).pattern(public)
    await node.save("/~/.acl/.deny", [FOE.pubkey])
    assert not PeerView(node.bus, FOE.pubkey, access).pattern(public)
    assert not PeerView(node.bus, FOE.pubkey, access).key(public + "x")
    assert PeerView(node.bus, FRIEND.pubkey, access).pattern(public)
    await node.save("/~/.acl/public", {"read": "owner"})  # the owner closes public/
    assert not PeerView(node.bus, FRIEND.pubkey, access).pattern(public)


async def test_a_share_widens_access_but_not_past_the_deny_list(node: Node, tmp_path) -> None:
    access = AccessControl(node, Settings(data_dir=tmp_path))
    chirp = f"/{OWNER.pubkey}/chirp/"
    assert not PeerView(node.bus, FRIEND.pubkey, access).pattern(chirp)
    await node.save(f"/~/{SHARES}/{follow_id(chirp)}", {"pattern": chirp})
    assert PeerView(node.bus, FRIEND.pubkey, access).pattern(chirp)
    await node.save("/~/.acl/.deny", [FOE.pubkey])
    assert not PeerView(node.bus, FOE.pubkey, access).pattern(chirp)
    assert PeerView(node.bus, FRIEND.pubkey, access).pattern(chirp)


async def test_another_namespace_is_read_by_its_owners_replicated_rules(node: Node, tmp_path) -> None:
    access = AccessControl(node, Settings(data_dir=tmp_path))
    remote = Identity.generate()
    source = Bus(MemoryStorage(), remote.pubkey, signer=lambda op: sign_op(op, remote))
    team, pub, rules = (f"/{remote.pubkey}/{p}/" for p in ("team", "public", ".acl"))
    for key, value in (("/~/team/plan", "secret"), ("/~/public/hi", "hi")):
        node.bus.apply(source.save(key, value).op)  # type: ignore[arg-type]
    await node.flush()

    def view(who: Identity) -> PeerView:
        return PeerView(node.bus, who.pubkey, access)

    # no rules held for it: closed, but for public/ (following it gave no right to re-serve it)
    assert not view(FRIEND).pattern(team) and not view(FRIEND).key(team + "plan")
    assert view(FOE).pattern(pub) and view(FOE).key(pub + "hi")
    assert view(remote).pattern(team)  # its owner reads itself back
    grant = source.save("/~/.acl/team", {"read": [FRIEND.pubkey]}).op
    assert grant is not None
    node.bus.apply(grant)
    await node.flush()
    assert view(FRIEND).pattern(team) and view(FRIEND).key(team + "plan")
    assert not view(FOE).pattern(team) and not view(FOE).key(team + "plan")
    # the rules themselves: to the keys they admit somewhere, never to a stranger
    assert view(FOE).pattern(rules) and not view(FOE).key(rules + "team")
    assert view(FRIEND).key(rules + "team") and view(remote).key(rules + "team")
    withdrawn = source.save("/~/.acl/team", {"read": "owner"}).op
    assert withdrawn is not None
    node.bus.apply(withdrawn)
    await node.flush()
    assert not view(FRIEND).key(team + "plan") and not view(FRIEND).key(rules + "team")
