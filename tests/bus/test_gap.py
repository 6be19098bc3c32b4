"""A replica knows when it cannot rebuild a key: its owner compacted history it never had
(``history.gap``, ``OpLog.knows``; issue 18, defect 1)."""

from __future__ import annotations

import json

from pycrdt import Doc, Text

from statebus.bus import Bus
from statebus.bus.history import FOLDED_MARGIN
from statebus.keys import encode_pubkey
from statebus.oplog import Op, Patch, decode_op
from statebus.storage.memory import MemoryStorage

OWNER = encode_pubkey(bytes(31) + b"\x07")
FOLLOWER = encode_pubkey(bytes(31) + b"\x08")
THIRD = encode_pubkey(bytes(31) + b"\x09")
K = f"/{OWNER}/app/x"


def stored_ops(bus: Bus) -> list[Op]:
    """The ops the owner's storage still holds (what anti-entropy would send a new follower)."""
    bus.flush()
    return [decode_op(s.data) for s in bus.storage.scan(f"/{OWNER}/", 0, 10_000)]


def test_patches_on_a_compacted_value_leave_a_gap_until_a_whole_value_arrives() -> None:
    owner = Bus(MemoryStorage(), OWNER, keep_ops=2)
    owner.save("/~/app/x", {"n": 0})
    for i in range(1, 30):
        owner.patch("/~/app/x", [Patch(".n", i)])
        owner.flush()
    assert owner.gap(K) is None  # the owner folded its own history: it knows all of it
    follower = Bus(MemoryStorage(), FOLLOWER)
    for op in stored_ops(owner):
        follower.apply(op)
    assert follower.gap(K) is not None and "compacted" in str(follower.gap(K))
    owner.save("/~/app/x", {"n": -1})
    for op in stored_ops(owner):
        follower.apply(op)
    assert follower.gap(K) is None and follower.fetch(K).value == {"n": -1}


def test_a_key_whose_kept_ops_hold_a_whole_value_has_no_gap() -> None:
    owner = Bus(MemoryStorage(), OWNER, keep_ops=2)
    for i in range(30):
        owner.save("/~/app/x", i)
        owner.flush()
    follower = Bus(MemoryStorage(), FOLLOWER)
    for op in stored_ops(owner):
        follower.apply(op)
    assert follower.gap(K) is None and follower.fetch(K).value == 29


def test_the_gap_survives_the_followers_own_compaction_and_a_reload() -> None:
    owner = Bus(MemoryStorage(), OWNER, keep_ops=2)
    owner.save("/~/app/x", {"n": 0})
    for i in range(1, 10):
        owner.patch("/~/app/x", [Patch(".n", i)])
        owner.flush()
    storage = MemoryStorage()
    follower = Bus(storage, FOLLOWER, keep_ops=2)
    for op in stored_ops(owner):
        follower.apply(op)
    for i in range(20):
        change = owner.patch("/~/app/x", [Patch(".m", i)])
        assert change.op is not None
        follower.apply(change.op)
        follower.flush()
    assert storage.horizon(K) > 0 and follower.gap(K) is not None
    assert Bus(storage, FOLLOWER).gap(K) is not None  # rebuilt from the stored snapshot


def test_a_concurrent_op_kept_after_its_parent_was_folded_is_no_gap() -> None:
    owner = Bus(MemoryStorage(), OWNER, keep_ops=1)
    a = owner.save("/~/app/x", {}).op
    assert a is not None
    concurrent = []
    for field in (".b", ".c"):  # two patches on a, concurrent with each other
        other = Bus(MemoryStorage(), THIRD)
        other.apply(a)
        op = other.patch(K, [Patch(field, 1)], parents=[a.version], author=OWNER).op
        assert op is not None
        concurrent.append(op)
    low, high = sorted(concurrent, key=lambda op: op.order)
    owner.apply(low)
    owner.apply(high)
    owner.flush()
    assert owner.compact(K, keep=1) is not None  # folds a and low; keeps high, whose parent a is
    owner.flush()  # not in the base frontier (low is)
    assert owner.gap(K) is None  # a was folded here: known, not a gap
    reloaded = Bus(owner.storage, OWNER)
    assert reloaded.gap(K) is None
    assert set(reloaded.fetch(K).version) == {low.version, high.version}
    assert reloaded.fetch(K).value == {"b": 1, "c": 1}


def test_a_yjs_replica_compacted_many_times_remembers_a_bounded_window_and_no_false_gap() -> None:
    keep = 4
    owner = Bus(MemoryStorage(), OWNER, keep_ops=keep)
    doc: Doc = Doc()
    text = doc.get("t", type=Text)
    ops: list[Op] = []
    for i in range(300):
        before = doc.get_state()
        text += str(i % 10)
        change = owner.crdt_update("/~/app/doc", bytes(doc.get_update(before)))
        assert change.op is not None
        ops.append(change.op)
        owner.flush()
    key = f"/{OWNER}/app/doc"
    record = owner.storage.load(key)
    assert record is not None and record.snapshot is not None
    log = json.loads(record.snapshot.data)["log"]
    assert 0 < len(log["folded"]) <= 2 * keep + FOLDED_MARGIN  # ~290 ops folded: a window kept
    assert owner.gap(key) is None and Bus(owner.storage, OWNER).gap(key) is None
    assert owner.apply(ops[300 - keep - 20]) is None  # a recently folded op sent again: recognised
    assert owner.fetch(key).value == {"t": "".join(str(i % 10) for i in range(300))}
