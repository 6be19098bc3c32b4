"""A follower in process: a fake peer client stands in for the network (as httpx's MockTransport
does), so verification, resuming, throttling and consent are tested without HTTP servers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from statebus.access.op_gate import OpGate
from statebus.bus import Bus
from statebus.errors import PeerUnavailable, RateLimited, StatebusError
from statebus.federation.client import StreamItem
from statebus.federation.follow import Backoff, FollowContext, Follower, state_key
from statebus.federation.ingest import Ingest
from statebus.federation.opset import op_set, scan_all
from statebus.federation.policy import Follow
from statebus.federation.sync import SyncSession, answer
from statebus.identity import Identity, sign_op
from statebus.oplog import encode_op
from statebus.runtime import Node
from statebus.storage.memory import MemoryStorage
from statebus.types import PubKey, Seq

from .support import wait_until

pytestmark = pytest.mark.anyio

OWNER, STRANGER, FOLLOWER = (Identity.generate() for _ in range(3))
URL = "http://owner.test"


class FakePeer:
    """The owner's node as a follower's client sees it, in process."""

    def __init__(self, owner: Node) -> None:
        self.owner = owner
        self.refusals: list[StatebusError] = []
        """Raised by the next connections, one each."""
        self.slipped: list[bytes] = []
        """Lines a hostile relay slips into the next stream."""
        self.cursors: list[Seq] = []
        """The cursor each stream was opened from."""
        self.end = asyncio.Event()
        self.names_seq = True
        """Whether anti-entropy answers name the server's cursor (older servers do not)."""

    async def node_info(self, base: str) -> PubKey:
        if self.refusals:
            raise self.refusals.pop(0)
        return self.owner.local

    async def sync(self, base: str, session: SyncSession, on_page: Any = None) -> SyncSession:
        found = op_set(self.owner, session.pattern)
        request = session.start()
        while request is not None:
            reply = answer(found.index, found.ops, request)
            seq = self.owner.committer.durable_seq if self.names_seq else None
            request = session.receive(dataclasses.replace(reply, seq=seq))
            if on_page is not None:
                await on_page(session.take())
        return session

    async def ops(
        self, base: str, patterns: Sequence[str], since: Seq, *, live: bool = True
    ) -> AsyncGenerator[list[StreamItem], None]:
        self.cursors.append(since)
        self.end.clear()
        stored = sorted((s for p in patterns for s in scan_all(self.owner, p, since)), key=lambda s: s.seq)
        lines = [StreamItem("op", s.seq, s.data) for s in stored]
        lines += [StreamItem("op", since, raw) for raw in self.slipped]
        self.slipped = []
        yield [*lines, StreamItem("live", max(since, self.owner.committer.durable_seq))]
        await self.end.wait()  # the server closes the stream


def owner_node(identity: Identity = OWNER) -> Node:
    return Node(Bus(MemoryStorage(), identity.pubkey, signer=lambda op: sign_op(op, identity)))


@pytest.fixture
async def nodes() -> AsyncIterator[tuple[Node, Node]]:
    owner, mine = owner_node(), Node(Bus(MemoryStorage(), FOLLOWER.pubkey))
    yield owner, mine
    await mine.aclose()
    await owner.aclose()


def following(
    mine: Node,
    peer: FakePeer,
    *,
    consent: bool = True,
    base: float = 0.01,
    locate: Callable[[Follow], Awaitable[list[str]]] | None = None,
) -> Follower:
    ingest = Ingest(mine, OpGate.for_node(mine, 1 << 20), lambda ns: consent and ns == OWNER.pubkey)

    async def at_url(follow: Follow) -> list[str]:
        return [URL]

    ctx = FollowContext(mine, peer, ingest, locate or at_url, Backoff(base, 4 * base, rnd=lambda: 0.0))
    return Follower(ctx, Follow("f1", f"/{OWNER.pubkey}/chirp/"))


def has(node: Node, key: str) -> bool:
    change = node.bus.fetch_or_none(key)
    return change is not None and change.exists


async def test_a_follower_refuses_a_forged_op_and_keeps_the_good_ones(nodes: tuple[Node, Node]) -> None:
    owner, mine = nodes
    good = (await owner.save("/~/chirp/1", "hello")).op
    assert good is not None
    peer = FakePeer(owner)
    peer.slipped = [encode_op(dataclasses.replace(good, version="forged", body="changed by a relay"))]
    follower = following(mine, peer)
    follower.start()
    # the stream's batch (the forged op, then the live mark) is applied an op at a time: wait for its end
    await wait_until(lambda: follower.rejected == 1 and has(mine, good.key) and follower.status == "live")
    assert "bad_signature" in follower.last_rejection
    assert mine.fetch(good.key).value == "hello" and follower.status == "live"
    await follower.stop()


async def test_a_follower_resumes_from_its_cursor_after_a_reconnect_and_a_restart(
    nodes: tuple[Node, Node],
) -> None:
    owner, mine = nodes
    await owner.save("/~/chirp/1", 1)
    peer = FakePeer(owner)
    peer.names_seq = False  # the cursor then comes from the follower alone
    follower = following(mine, peer)
    follower.start()
    await wait_until(lambda: follower.status == "live" and has(mine, f"/{OWNER.pubkey}/chirp/1"))
    first = owner.committer.durable_seq
    await owner.save("/~/chirp/2", 2)
    peer.end.set()  # the server closes the stream: the follower reconnects
    await wait_until(lambda: len(peer.cursors) == 2 and has(mine, f"/{OWNER.pubkey}/chirp/2"))
    await follower.stop()
    second = owner.committer.durable_seq
    await owner.save("/~/chirp/3", 3)  # written while this node is down
    again = following(mine, peer)  # a restarted node: the cursor comes from the stored state
    again.start()
    # each connection runs anti-entropy before it streams, and that exchange alone brings chirp/3:
    # wait for the stream too, whose cursor is what this test is about
    await wait_until(lambda: len(peer.cursors) == 3 and has(mine, f"/{OWNER.pubkey}/chirp/3"))
    assert peer.cursors == [0, first, second]  # never from the start again
    assert again.rejected == 0
    await again.stop()


async def test_a_follower_waits_a_throttling_servers_retry_after(nodes: tuple[Node, Node]) -> None:
    owner, mine = nodes
    await owner.save("/~/chirp/1", 1)
    peer = FakePeer(owner)
    peer.refusals = [RateLimited("slow down", retry_after=0.3), PeerUnavailable("gone")]
    follower = following(mine, peer)
    began = time.monotonic()
    follower.start()
    await wait_until(lambda: follower.status == "live")
    assert time.monotonic() - began >= 0.3  # the Retry-After, not the 10 ms backoff
    assert follower.throttled == 1 and follower.connections == 1
    await follower.stop()


async def test_a_follower_takes_nothing_of_a_namespace_it_does_not_follow(nodes: tuple[Node, Node]) -> None:
    owner, mine = nodes
    stranger = owner_node(STRANGER)
    foreign = (await stranger.save("/~/chirp/1", "spam")).op
    await stranger.aclose()
    assert foreign is not None
    await owner.save("/~/chirp/1", "mine")
    peer = FakePeer(owner)
    peer.slipped = [encode_op(foreign)]
    follower = following(mine, peer)
    follower.start()
    await wait_until(lambda: follower.rejected == 1)
    assert "does not follow" in follower.last_rejection and not has(mine, foreign.key)
    await follower.stop()
    await owner.save("/~/chirp/2", "later")
    withdrawn = following(mine, FakePeer(owner), consent=False)  # this node unfollowed meanwhile
    withdrawn.start()
    await wait_until(lambda: withdrawn.rejected >= 1)
    assert "does not follow" in withdrawn.last_rejection and not has(mine, f"/{OWNER.pubkey}/chirp/2")
    await withdrawn.stop()


async def test_a_restarted_follower_keeps_its_counters_and_says_syncing_until_an_exchange(
    nodes: tuple[Node, Node],
) -> None:
    owner, mine = nodes
    for i in range(3):
        await owner.save(f"/~/chirp/{i}", i)
    peer = FakePeer(owner)
    follower = following(mine, peer)
    follower.start()
    key = state_key(mine.local, "f1")

    def stored() -> Any:
        change = mine.fetch_or_none(key)
        return change.value["status"] if change is not None and change.exists else None

    # the status is set before it is stored (an await later): crash only once it is stored
    await wait_until(lambda: follower.status == "live" and follower.applied == 3 and stored() == "live")
    assert follower._task is not None
    follower._task.cancel()  # a crash: nothing is stored on the way out
    with contextlib.suppress(asyncio.CancelledError):
        await follower._task
    assert mine.fetch(key).value["status"] == "live"  # what the crashed node stored last
    hold = asyncio.Event()
    real_info = peer.node_info

    async def slow_info(base: str) -> PubKey:
        await hold.wait()  # the server has not answered yet
        return await real_info(base)

    peer.node_info = slow_info  # type: ignore[method-assign]
    again = following(mine, peer)  # the restarted node
    assert (again.status, again.applied, again.url) == ("syncing", 3, URL)
    again.start()
    await wait_until(lambda: mine.fetch(key).value["status"] == "syncing", timeout=5)
    assert mine.fetch(key).value["applied"] == 3  # the counters go on, never from 0 again
    assert not again.live.is_set()
    await owner.save("/~/chirp/3", 3)
    hold.set()
    await wait_until(lambda: again.status == "live" and again.applied == 4)
    await again.stop()
    assert mine.fetch(key).value["applied"] == 4


async def test_a_restarted_follower_reconnects_to_its_last_server_while_the_dht_is_slow(
    nodes: tuple[Node, Node],
) -> None:
    owner, mine = nodes
    await owner.save("/~/chirp/1", 1)
    peer = FakePeer(owner)
    follower = following(mine, peer)
    follower.start()
    await wait_until(lambda: follower.status == "live")
    await follower.stop()
    lookups: list[str] = []

    async def slow_dht(follow: Follow) -> list[str]:
        lookups.append(follow.owner)
        await asyncio.sleep(30)  # a DHT full of dead contacts
        return [URL]

    again = following(mine, peer, locate=slow_dht)
    began = time.monotonic()
    again.start()
    await wait_until(lambda: again.status == "live", timeout=10)
    assert time.monotonic() - began < 5  # not the DHT's 30 s: the stored URL came first
    assert lookups == [OWNER.pubkey]  # the lookup still ran alongside (a moved owner is found next time)
    await again.stop()
