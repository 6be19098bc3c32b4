"""A follower whose disk is full must not skip the ops it could not store: ingest raises
``StorageFailed`` (the follow retries from its cursor) instead of counting them as refused."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import pytest

from statebus.access.op_gate import OpGate
from statebus.bus import Bus
from statebus.errors import StorageFailed
from statebus.federation.ingest import Ingest
from statebus.identity import Identity, sign_op
from statebus.oplog import Op
from statebus.runtime import Node
from statebus.storage.base import StoredOp
from statebus.storage.memory import MemoryStorage

pytestmark = pytest.mark.anyio

OWNER, FOLLOWER = Identity.generate(), Identity.generate()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FillableStorage(MemoryStorage):
    full = False

    def append(self, batch: Sequence[StoredOp]) -> None:
        if self.full:
            raise sqlite3.OperationalError("database or disk is full")
        super().append(batch)


def owner_ops(n: int) -> list[Op]:
    bus = Bus(MemoryStorage(), OWNER.pubkey, signer=lambda op: sign_op(op, OWNER))
    ops = [bus.save(f"/~/chirp/{i}", i).op for i in range(n)]
    return [op for op in ops if op is not None]


async def test_ops_that_cannot_be_stored_are_not_counted_as_refused() -> None:
    storage = FillableStorage()
    node = Node(Bus(storage, FOLLOWER.pubkey))
    ingest = Ingest(node, OpGate.for_node(node, 1 << 20), consent=lambda ns: ns == OWNER.pubkey)
    ops = owner_ops(4)
    storage.full = True
    with pytest.raises(StorageFailed):
        await ingest.take(ops[:2])  # the commit fails
    with pytest.raises(StorageFailed):
        await ingest.take(ops[2:])  # writes are refused during the backoff
    assert node.bus.fetch_or_none(ops[0].key) is None
    storage.full = False
    node.bus.storage_refused = None  # the backoff is over (what the committer's timer does)
    result = await ingest.take(ops)
    assert (result.applied, result.rejected) == (4, [])
    await node.aclose()
