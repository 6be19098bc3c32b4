"""validate on ops from other nodes: a follower's app refuses a peer's op that breaks it (issue 11)."""

from __future__ import annotations

import functools

import httpx
import pytest

from statebus.errors import AppRejected
from statebus.server import Cluster

from ..federation.support import has, wait_until
from .support import gb_spec

pytestmark = pytest.mark.anyio


async def test_a_followers_validator_refuses_a_forged_long_post(cluster: Cluster) -> None:
    a, b = await cluster.add("a", app_call_timeout=1.0), await cluster.add("b", app_call_timeout=1.0)
    a.apps.load(gb_spec(b.pubkey, derive={}, on_write={}))  # A runs the app; B does not
    await b.share("/~/gb/")
    gb = f"/{b.pubkey}/gb/entries/"
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {b.token}"}) as http:
        r = await http.put(f"{b.url}/~/gb/entries/1", json={"text": "hello"})
        assert r.status_code == 200
        await a.follow(f"/{b.pubkey}/gb/")
        await wait_until(functools.partial(has, a, gb + "1"), what="the valid entry")
        # B's owner writes a 10,000-character post on B's own node (B runs no validator): B signs it
        r = await http.put(f"{b.url}/~/gb/entries/2", json={"text": "x" * 10_000})
        assert r.status_code == 200
        r = await http.put(f"{b.url}/~/gb/entries/3", json={"text": "after"})
        assert r.status_code == 200
    await wait_until(functools.partial(has, a, gb + "3"), what="the later valid entry")
    assert not has(a, gb + "2")  # refused by A's validator, as a follower
    follower = next(iter(a.federation.followers.values()))
    assert follower.rejected == 1
    assert "app_rejected" in follower.last_rejection
    assert "at most 280 characters, not 10000" in follower.last_rejection
    # the follow status (what `statebus peers` and /~/.follows show) names the reason
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {a.token}"}) as http:
        r = await http.get(f"{a.url}{gb}2")
        assert r.status_code == 404
    [status] = [f.state() for f in a.federation.followers.values()]
    assert "at most 280 characters" in str(status["last_rejection"])
    assert a.apps.status()[0].calls >= 3


async def test_every_replica_reaches_the_same_verdict(cluster: Cluster) -> None:
    """A validator that flips a coin (Math.random) still gives an op the same verdict on the writer's
    node and on its follower: the seed comes from the op, never from the replica."""
    a, b = await cluster.add("a", app_call_timeout=1.0), await cluster.add("b", app_call_timeout=1.0)
    for n in (a, b):
        n.apps.load(gb_spec(b.pubkey, validate={"gb/coin/*": "coin"}, derive={}, on_write={}, schemas={}))
    await b.share("/~/gb/")
    accepted = []
    for i in range(24):
        try:
            await b.node.save(f"/~/gb/coin/{i}", {"n": i})
            accepted.append(i)
        except AppRejected as exc:
            assert "tails (0)" in exc.detail
    assert 0 < len(accepted) < 24  # the coin does flip
    await a.follow(f"/{b.pubkey}/gb/")
    coin = f"/{b.pubkey}/gb/coin/"
    await wait_until(lambda: all(has(a, f"{coin}{i}") for i in accepted), what="the accepted ops")
    follower = next(iter(a.federation.followers.values()))
    assert follower.rejected == 0, follower.last_rejection
    assert not any(has(a, f"{coin}{i}") for i in range(24) if i not in accepted)
