"""Relaying and forged ops: every op is verified against its owner's key, never trusted to the relay."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest

from statebus.access.op_gate import OpGate
from statebus.bus import Bus
from statebus.errors import Forbidden, QuotaExceeded
from statebus.federation.ingest import Ingest
from statebus.federation.opset import op_set
from statebus.identity import Identity, delegate, record_key, revoke, sign_op
from statebus.oplog import Op, decode_op, encode_op
from statebus.runtime import Node
from statebus.server import Cluster
from statebus.storage.memory import MemoryStorage

from .support import live, wait_until

pytestmark = pytest.mark.anyio

OWNER, DEVICE, STRANGER, FOLLOWER = (Identity.generate() for _ in range(4))
IDS = {i.pubkey: i for i in (OWNER, DEVICE, STRANGER, FOLLOWER)}


def source(local: Identity) -> Bus:
    """A bus writing ``local``'s namespace, signing each op as its author."""
    return Bus(MemoryStorage(), local.pubkey, signer=lambda op: sign_op(op, IDS[op.author]))


def written(bus: Bus, key: str, value: object, author: Identity | None = None) -> Op:
    change = bus.save(key, value, author=author.pubkey if author else None)
    assert change.op is not None
    return change.op


@pytest.fixture
async def follower() -> AsyncIterator[tuple[Node, Ingest]]:
    node = Node(Bus(MemoryStorage(), FOLLOWER.pubkey))
    ingest = Ingest(node, OpGate.for_node(node, 1 << 20), consent=lambda ns: ns == OWNER.pubkey)
    yield node, ingest
    await node.aclose()


def stored(node: Node, key: str) -> bool:
    change = node.bus.fetch_or_none(key)
    return change is not None and change.exists


async def test_forged_ops_are_refused_and_not_stored(follower: tuple[Node, Ingest]) -> None:
    node, ingest = follower
    owner = source(OWNER)
    good = written(owner, "/~/chirp/1", "hello")
    tampered = dataclasses.replace(written(owner, "/~/chirp/2", "original"), body="changed by a relay")
    stranger = source(STRANGER)
    wrong_ns = sign_op(
        Op(f"/{OWNER.pubkey}/chirp/3", "1-x", (), STRANGER.pubkey, 1, "lww", "set", "forged"), STRANGER
    )
    not_followed = written(stranger, "/~/chirp/4", "nobody follows me")
    unsigned = dataclasses.replace(written(owner, "/~/chirp/5", "x"), sig=b"")
    result = await ingest.take([good, tampered, wrong_ns, not_followed, unsigned])
    assert result.applied == 1
    reasons = " | ".join(result.rejected)
    assert "bad_signature" in reasons and "forbidden" in reasons
    assert stored(node, good.key)
    for op in (tampered, wrong_ns, not_followed, unsigned):
        assert not stored(node, op.key)
    again = await ingest.take([encode_op(good)])
    assert (again.applied, again.duplicates) == (0, 1)
    ingest.allow_namespace(STRANGER.pubkey)  # an invitation: now its ops are welcome
    invited = await ingest.take([not_followed])
    assert invited.applied == 1 and stored(node, not_followed.key)
    ingest.disallow_namespace(STRANGER.pubkey)
    later = await ingest.take([written(stranger, "/~/chirp/5", "after the invite ended")])
    assert later.applied == 0 and "forbidden" in later.rejected[0]


async def test_delegates_are_checked_against_replicated_records(follower: tuple[Node, Ingest]) -> None:
    node, ingest = follower
    owner = source(OWNER)
    now = int(time.time())
    rec = written(
        owner,
        record_key(OWNER.pubkey, DEVICE.pubkey),
        delegate(OWNER, DEVICE.pubkey, [f"/{OWNER.pubkey}/chirp/"], issued=1).to_json(),
    )
    by_device = written(owner, "/~/chirp/from-phone", "hi", author=DEVICE)
    outside = written(owner, "/~/private/x", "no", author=DEVICE)
    # the delegate's op comes first in the batch; the record is applied first anyway
    result = await ingest.take([by_device, outside, rec])
    assert result.applied == 2, result.rejected
    assert stored(node, by_device.key) and not stored(node, outside.key)
    revoked = written(
        owner, record_key(OWNER.pubkey, DEVICE.pubkey), revoke(OWNER, DEVICE.pubkey, issued=now).to_json()
    )
    late = written(owner, "/~/chirp/after-revoke", "too late", author=DEVICE)
    result = await ingest.take([revoked, late])
    assert result.applied == 1
    assert "revoked" in result.rejected[0]
    assert not stored(node, late.key)
    forged_record = written(
        owner, record_key(OWNER.pubkey, STRANGER.pubkey), {"type": "statebus/delegation"}, author=DEVICE
    )
    result = await ingest.take([forged_record])
    assert result.applied == 0 and "forbidden" in result.rejected[0]


async def test_quota_is_per_remote_namespace(follower: tuple[Node, Ingest]) -> None:
    node, _ = follower
    ingest = Ingest(node, OpGate.for_node(node, 1000), consent=lambda ns: True)
    owner = source(OWNER)
    ops = [written(owner, f"/~/chirp/{i}", "z" * 100) for i in range(20)]
    with pytest.raises(QuotaExceeded) as err:
        await ingest.take(ops)
    assert err.value.status_hint == 413 and OWNER.pubkey in err.value.detail
    assert 0 < ingest.usage(OWNER.pubkey) <= 1000
    assert ingest.usage(STRANGER.pubkey) == 0
    with pytest.raises(Forbidden):
        ingest.check(written(source(FOLLOWER), "/~/x", 1))  # our own namespace is never taken


async def test_a_relay_serves_the_owners_ops_and_cannot_tamper(cluster: Cluster) -> None:
    a, relay, c = await cluster.add("a"), await cluster.add("relay"), await cluster.add("c")
    await a.share("/~/chirp/")
    for i in range(10):
        a.node.bus.save(f"/~/chirp/{i}", {"n": i})
    await a.node.flush()
    chirp = f"/{a.pubkey}/chirp/"
    await relay.follow(chirp)
    await wait_until(lambda: live(relay))
    await cluster.stop("a")
    # the relay slips in an op it made up from a real one: the owner's signature no longer matches
    stored_op = next(s for s in relay.node.bus.storage.scan(chirp, 0, 100) if s.key == chirp + "1")
    original = decode_op(stored_op.data)
    evil = dataclasses.replace(original, key=chirp + "evil", body={"n": "evil"})
    relay.node.bus.apply(evil)  # straight into the relay's store, past every check
    await relay.node.flush()
    await c.follow(chirp, via=[relay.url])
    await wait_until(lambda: live(c))
    follower = next(iter(c.federation.followers.values()))
    assert follower.url == relay.url
    assert c.node.bus.fetch(chirp + "9").value == {"n": 9}
    assert c.node.bus.fetch_or_none(chirp + "evil") is None
    assert follower.rejected >= 1 and "bad_signature" in follower.last_rejection
    relay_ops = op_set(relay.node, chirp).ops
    c_ops = op_set(c.node, chirp).ops
    assert set(c_ops) == set(relay_ops) - {k for k, v in relay_ops.items() if b"evil" in v}


async def test_a_hostile_peer_cannot_flood_or_crash_a_follower(cluster: Cluster) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    owner = OWNER.pubkey
    mode = {"sync": "huge"}

    async def node(request: Request) -> Response:
        return JSONResponse({"v": 1, "pubkey": owner})  # claims to be the owner

    async def sync(request: Request) -> Response:
        if mode["sync"] == "huge":
            return Response(b"x" * (17 * 1024 * 1024), media_type="application/json")
        return Response(b'{"v":1,"ranges":[],"ops":[],"want":[]}', media_type="application/json")

    async def ops(request: Request) -> Response:
        async def lines() -> AsyncIterator[bytes]:
            yield b'{"seq": 1, "op": {"k": "nonsense"}}\n'
            yield b"not json at all\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    app = Starlette(
        routes=[
            Route("/.well-known/statebus/node", node),
            Route("/.well-known/statebus/sync", sync, methods=["POST"]),
            Route("/.well-known/statebus/ops", ops),
        ]
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        await wait_until(lambda: server.started)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        b = await cluster.add("b")
        b.federation.directory = None
        await b.follow(f"/{owner}/chirp/", via=[url])
        follower = next(iter(b.federation.followers.values()))
        await wait_until(lambda: "too_large" in follower.reason)
        mode["sync"] = "empty"
        await wait_until(lambda: "invalid" in follower.reason or follower.rejected > 0)
        assert follower.running  # it keeps trying, with backoff
        assert b.federation.ingest.usage(owner) == 0
    finally:
        server.should_exit = True
        await task
