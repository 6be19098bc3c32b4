"""A replica rebuilds a key from its owner's base (``Bus.install``, history rule 5): plain calls."""

from __future__ import annotations

import pytest
from pycrdt import Doc, Text

from statebus.bus import Bus
from statebus.errors import BadSnapshot, Forbidden
from statebus.keys import encode_pubkey
from statebus.oplog import Patch, decode_op
from statebus.storage.memory import MemoryStorage

OWNER = encode_pubkey(bytes(31) + b"\x07")
FOLLOWER = encode_pubkey(bytes(31) + b"\x08")
DOC, X = f"/{OWNER}/app/doc", f"/{OWNER}/app/x"


def _owner() -> Bus:
    owner = Bus(MemoryStorage(), OWNER, keep_ops=3)
    doc: Doc = Doc()
    text = doc.get("t", type=Text)
    owner.save("/~/app/x", {"n": 0})
    for i in range(40):
        before = doc.get_state()
        text += f"{i % 10}"
        owner.crdt_update("/~/app/doc", doc.get_update(before))
        owner.patch("/~/app/x", [Patch(".n", i)])
        owner.flush()
    return owner


def _base(owner: Bus, key: str) -> bytes:
    record = owner.storage.load(key)
    assert record is not None and record.snapshot is not None
    return record.snapshot.data


def _follower(owner: Bus) -> Bus:
    follower = Bus(MemoryStorage(), FOLLOWER)
    for stored in owner.storage.scan(f"/{OWNER}/", 0, 10_000):
        follower.apply(decode_op(stored.data))
    follower.flush()
    return follower


@pytest.mark.parametrize("key", [DOC, X])
def test_the_owners_base_completes_a_key_with_a_gap_and_keeps_the_ops_after_it(key: str) -> None:
    owner = _owner()
    follower = _follower(owner)
    assert follower.gap(key) is not None
    change = follower.install(key, _base(owner, key))
    assert change.kind == "snapshot" and follower.gap(key) is None
    mine, theirs = owner.fetch(key), follower.fetch(key)
    assert (theirs.value, theirs.version) == (mine.value, mine.version)  # the kept ops stayed on top
    follower.flush()
    follower._entries.clear()  # rebuilt from what storage holds: the base and the ops after it
    assert follower.gap(key) is None and follower.fetch(key).value == mine.value


def test_a_base_of_another_merge_type_or_of_an_own_key_changes_nothing() -> None:
    owner = _owner()
    follower = _follower(owner)
    before = follower.fetch_or_none(X)  # patches on a value folded away: no value
    with pytest.raises(BadSnapshot, match="is a lww key here"):
        follower.install(X, _base(owner, DOC))
    with pytest.raises(BadSnapshot, match="does not load"):
        follower.install(X, b'{"merge": "lww", "state": 7, "log": {}}')
    assert (
        follower.fetch_or_none(X) == before and follower.gap(X) is not None and not follower.outbox.snapshots
    )
    with pytest.raises(Forbidden):
        owner.install(X, _base(owner, X))


def test_a_replica_that_compacted_the_key_itself_drops_its_ops_and_takes_them_again_in_order() -> None:
    owner = _owner()
    follower = Bus(MemoryStorage(), FOLLOWER, keep_ops=1)
    kept = [decode_op(s.data) for s in owner.storage.scan(f"/{OWNER}/app/", 0, 10_000)]
    for op in kept:
        follower.apply(op)
        follower.flush()
    assert follower.storage.horizon(DOC) > 0 and follower.gap(DOC) is not None
    follower.install(DOC, _base(owner, DOC))
    assert follower.gap(DOC) is None and len(follower.history_page(DOC, 0, 100).versions) == 0  # no op kept
    follower.flush()  # the base is on disk before the ops come again (Node.install_bases waits for it)
    for op in kept:  # anti-entropy brings back what the base did not fold, in order
        follower.apply(op)
    follower.flush()
    assert follower.gap(DOC) is None
    assert (follower.fetch(DOC).value, follower.fetch(DOC).version) == (
        owner.fetch(DOC).value,
        owner.fetch(DOC).version,
    )


def test_a_key_never_held_starts_with_the_base_and_takes_the_ops_after_it() -> None:
    owner = _owner()
    follower = Bus(MemoryStorage(), FOLLOWER)
    follower.install(DOC, _base(owner, DOC))  # a new follower: the base before any op
    follower.flush()
    assert follower.children(f"/{OWNER}/app/", durable=True) == ["doc"]
    for stored in owner.storage.scan(f"/{OWNER}/app/doc", 0, 10_000):  # then the op tail
        follower.apply(decode_op(stored.data))
    follower.flush()
    follower._entries.clear()  # from storage: the base and the ops after it
    assert follower.gap(DOC) is None
    assert (follower.fetch(DOC).value, follower.fetch(DOC).version) == (
        owner.fetch(DOC).value,
        owner.fetch(DOC).version,
    )
    with pytest.raises(BadSnapshot, match="merge type"):
        follower.install(f"/{OWNER}/app/new", b'{"merge": "nope", "state": {}, "log": {}}')
    assert follower.fetch_or_none(f"/{OWNER}/app/new") is None
