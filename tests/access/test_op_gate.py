"""The one gate for remote ops: federation ingest and the signed-op HTTP route pass the same checks
and count against the same quota."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from statebus.access.control import AccessControl
from statebus.access.op_gate import OpGate
from statebus.bus import Bus
from statebus.config import Settings
from statebus.errors import Forbidden, InvalidOp, InvalidValue, QuotaExceeded
from statebus.federation.ingest import Ingest
from statebus.identity import Identity, sign_op
from statebus.oplog import Op, encode_op, mint_version
from statebus.runtime import Node
from statebus.storage.memory import MemoryStorage

pytestmark = pytest.mark.anyio

LOCAL, ALICE = Identity.generate(), Identity.generate()
CLOCK = itertools.count(1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def signed(key: str, value: Any) -> Op:
    op = Op(key, "", (), ALICE.pubkey, next(CLOCK), "lww", "set", value)
    return sign_op(dataclasses.replace(op, version=mint_version(op)), ALICE)


@pytest.fixture
async def doors(tmp_path: Path) -> AsyncIterator[tuple[Node, AccessControl, Ingest]]:
    """A node hosting ALICE's namespace (HTTP door) that also follows it (federation door)."""
    node = Node(Bus(MemoryStorage(), LOCAL.pubkey))
    control = AccessControl(node, Settings(data_dir=tmp_path, quota_bytes_per_remote_namespace=1000))
    await node.save("/~/.acl/.host", [ALICE.pubkey])
    ingest = Ingest(node, control.op_gate, lambda ns: ns == ALICE.pubkey)
    yield node, control, ingest
    await node.aclose()


async def test_both_doors_count_against_one_quota(doors: tuple[Node, AccessControl, Ingest]) -> None:
    _node, control, ingest = doors
    first, second, third = (signed(f"/{ALICE.pubkey}/n/{i}", "x" * 200) for i in range(3))
    assert (await ingest.take([first])).applied == 1
    await control.apply_op(ALICE.pubkey, second.key, encode_op(second))
    assert ingest.usage(ALICE.pubkey) == len(encode_op(first)) + len(encode_op(second))
    with pytest.raises(QuotaExceeded):  # the HTTP route's bytes count for federation too
        await ingest.take([third, signed(f"/{ALICE.pubkey}/n/4", "x" * 200)])
    assert ingest.usage(ALICE.pubkey) <= 1000


async def test_a_duplicate_is_not_counted(doors: tuple[Node, AccessControl, Ingest]) -> None:
    _node, control, ingest = doors
    op = signed(f"/{ALICE.pubkey}/n/1", "once")
    await control.apply_op(ALICE.pubkey, op.key, encode_op(op))
    assert (await ingest.take([encode_op(op)])).duplicates == 1
    await control.apply_op(ALICE.pubkey, op.key, encode_op(op))
    assert ingest.usage(ALICE.pubkey) == len(encode_op(op))


async def test_an_app_validator_refuses_at_both_doors(doors: tuple[Node, AccessControl, Ingest]) -> None:
    node, control, ingest = doors

    def no_numbers(op: Op) -> None:
        if isinstance(op.body, int):
            raise InvalidValue("this app stores no numbers")

    control.op_gate.validators.append(no_numbers)
    op = signed(f"/{ALICE.pubkey}/n/1", 7)
    result = await ingest.take([op])
    assert result.applied == 0 and "no numbers" in result.rejected[0]
    with pytest.raises(InvalidValue):
        await control.apply_op(ALICE.pubkey, op.key, encode_op(op))
    assert node.bus.fetch_or_none(op.key) is None and ingest.usage(ALICE.pubkey) == 0


async def test_the_gate_refuses_before_the_signature_is_checked(
    doors: tuple[Node, AccessControl, Ingest],
) -> None:
    node, control, _ingest = doors
    op = dataclasses.replace(signed(f"/{ALICE.pubkey}/n/1", 1), sig=b"")  # unsigned
    with pytest.raises(Forbidden):  # consent first: a namespace nobody follows costs no crypto
        OpGate.for_node(node, 1000).admit(op, Ingest(node, control.op_gate))
    with pytest.raises(InvalidOp, match="sent to"):  # the HTTP door: the op names another key
        await control.apply_op(ALICE.pubkey, f"/{ALICE.pubkey}/n/2", encode_op(op))


async def test_an_op_that_does_not_survive_encoding_is_refused(
    doors: tuple[Node, AccessControl, Ingest],
) -> None:
    _node, _control, ingest = doors
    op = dataclasses.replace(signed(f"/{ALICE.pubkey}/n/1", [1, 2]), body=(1, 2))  # a tuple is no JSON value
    result = await ingest.take([op])
    assert result.applied == 0 and "not canonical" in result.rejected[0]
