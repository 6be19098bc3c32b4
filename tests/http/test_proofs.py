"""``statebus.http.proofs``: the signature material ``GET ?proof`` and SSE ``?proof`` carry (issue 19)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import pytest

from statebus.bus import Bus
from statebus.http.proofs import proof_of
from statebus.identity import Identity, delegate, record_key, sign_op
from statebus.identity.keys import verify_signature
from statebus.oplog.codec import SIGNING_DOMAIN
from statebus.oplog.events import Patch
from statebus.runtime import Node
from statebus.storage.memory import MemoryStorage

pytestmark = pytest.mark.anyio

OWNER, DEVICE = Identity.generate(), Identity.generate()
IDS = {i.pubkey: i for i in (OWNER, DEVICE)}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    bus = Bus(MemoryStorage(), OWNER.pubkey, signer=lambda op: sign_op(op, IDS[op.author]))
    n = Node(bus)
    yield n
    await n.aclose()


def opened(proof: dict[str, object]) -> dict[str, object]:
    """The op a proof's signed bytes hold, after checking the signature over exactly those bytes."""
    signed = base64.b64decode(str(proof["signed"]))
    assert signed.startswith(SIGNING_DOMAIN)
    assert verify_signature(str(proof["author"]), signed, base64.b64decode(str(proof["sig"])))
    op: dict[str, object] = json.loads(signed[len(SIGNING_DOMAIN) :])
    return op


async def test_a_whole_value_comes_with_the_bytes_its_author_signed(node: Node) -> None:
    key = f"/{OWNER.pubkey}/chirp/1"
    await node.save(key, {"text": "hello"})
    await node.flush()
    proof = proof_of(node, node.fetch(key))
    assert proof["author"] == OWNER.pubkey and "delegation" not in proof
    op = opened(proof)
    assert (op["k"], op["a"], op["t"], op["b"]) == (key, OWNER.pubkey, "set", {"text": "hello"})


async def test_a_delegates_value_comes_with_the_owners_delegation_op(node: Node) -> None:
    grant = delegate(OWNER, DEVICE.pubkey, [f"/{OWNER.pubkey}/chirp/"], issued=1).to_json()
    await node.save(record_key(OWNER.pubkey, DEVICE.pubkey), grant)
    key = f"/{OWNER.pubkey}/chirp/2"
    await node.save(key, "from the phone", author=DEVICE.pubkey)
    await node.flush()
    proof = proof_of(node, node.fetch(key))
    assert opened(proof)["a"] == DEVICE.pubkey
    delegation = proof["delegation"]
    assert isinstance(delegation, dict) and delegation["author"] == OWNER.pubkey
    record = opened(delegation)
    assert record["k"] == record_key(OWNER.pubkey, DEVICE.pubkey) and record["b"] == grant


async def test_values_that_are_not_one_ops_body_say_why(node: Node) -> None:
    key = f"/{OWNER.pubkey}/chirp/3"
    await node.save(key, {"text": "hello"})
    await node.patch(key, [Patch(".text", "patched")])
    await node.flush()
    assert "patch" in str(proof_of(node, node.fetch(key))["unverifiable"])
    await node.delete(key)
    await node.flush()
    deleted = node.fetch_or_none(key)
    assert deleted is not None and not deleted.exists
    assert proof_of(node, deleted) == {"unverifiable": "the key has no value"}


async def test_a_bytes_value_comes_with_the_bytes_its_author_signed(node: Node) -> None:
    key = f"/{OWNER.pubkey}/chirp/images/a.png"
    await node.save(key, b"\x89PNG not really", content_type="image/png")
    await node.flush()
    proof = proof_of(node, node.fetch(key))
    assert proof["author"] == OWNER.pubkey, proof
    op = opened(proof)
    assert (op["k"], op["t"], op["m"], op["ct"]) == (key, "set", "lww", "image/png")
    assert base64.b64decode(str(op["bb"])) == b"\x89PNG not really"
