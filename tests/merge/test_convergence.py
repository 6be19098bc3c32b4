"""Convergence: replicas fed the same ops in any order (with duplicates) hold the same value and
the same frontier, for lww and yjs keys, with and without compaction. Hypothesis drives writers
that make concurrent ops on their own buses and exchange some of them in between, so parents
form real DAGs."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text

from statebus.bus import Bus
from statebus.errors import StatebusError
from statebus.keys import encode_pubkey
from statebus.oplog import DELETE, Op, Patch
from statebus.storage.memory import MemoryStorage

OWNER = encode_pubkey(b"\x01" * 32)
KEY = f"/{OWNER}/doc"
WRITERS = [encode_pubkey(bytes([i]) * 31 + b"\x00") for i in range(2, 6)]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# one step: (writer, action, argument); actions: set, patch, unset (patch deleting a field), delete,
# sync (writer pulls every op another writer has)
steps = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.sampled_from(["set", "patch", "patch", "unset", "delete", "sync", "sync"]),
        st.integers(0, 3),
    ),
    min_size=1,
    max_size=25,
)


def lww_history(plan: list[tuple[int, str, int]]) -> list[Op]:
    """Run the writers' plan; return every op they made (in the order made)."""
    buses = [Bus(MemoryStorage(), w) for w in WRITERS[:3]]
    made: list[list[Op]] = [[] for _ in buses]
    for i, (w, action, arg) in enumerate(plan):
        bus = buses[w]
        try:
            if action == "set":
                change = bus.save(KEY, {f"f{arg}": i, "by": w} if arg else [i, w])
            elif action == "patch":
                change = bus.patch(KEY, [Patch(f".f{arg}", {"n": i, "by": w})])
            elif action == "unset":
                change = bus.patch(KEY, [Patch(f".f{arg}", DELETE)])
            elif action == "delete":
                change = bus.delete(KEY)
            else:
                src = arg % len(buses)
                for op in made[src]:
                    bus.apply(op)
                continue
        except StatebusError:
            continue  # e.g. patching a key that does not exist here yet: nothing was made
        assert change.op is not None
        made[w].append(change.op)
    return [op for ops in made for op in ops]


def deliver(ops: list[Op], rnd: random.Random) -> list[Op]:
    """Every op at least once, some twice, in a random order."""
    out = ops + rnd.sample(ops, k=len(ops) // 3)
    rnd.shuffle(out)
    return out


def state(bus: Bus, key: str = KEY) -> tuple[Any, ...]:
    snap = bus.fetch_or_none(key)
    if snap is None:
        return (False, None, ())
    return (snap.exists, snap.value, snap.version)


@SETTINGS
@given(plan=steps, seed=st.integers(0, 2**32))
def test_lww_replicas_converge_whatever_the_order(plan: list[tuple[int, str, int]], seed: int) -> None:
    ops = lww_history(plan)
    rnd = random.Random(seed)
    reference = Bus(MemoryStorage(), OWNER)
    for op in ops:
        reference.apply(op)
    want = state(reference)
    for _ in range(3):
        replica = Bus(MemoryStorage(), OWNER)
        for op in deliver(ops, rnd):
            replica.apply(op)
        assert state(replica) == want
        replica.flush()
        assert state(Bus(replica.storage, OWNER)) == want  # and from storage
    if ops:
        assert want[2] == reference.fetch_or_none(KEY).version  # type: ignore[union-attr]


@SETTINGS
@given(plan=steps, seed=st.integers(0, 2**32), keep=st.integers(0, 3))
def test_lww_compaction_after_delivery_keeps_value_and_frontier(
    plan: list[tuple[int, str, int]], seed: int, keep: int
) -> None:
    ops = lww_history(plan)
    rnd = random.Random(seed)
    reference = Bus(MemoryStorage(), OWNER)
    for op in ops:
        reference.apply(op)
    want = state(reference)
    replica = Bus(MemoryStorage(), OWNER, keep_ops=keep)
    for op in deliver(ops, rnd):
        replica.apply(op)
    replica.flush()
    replica.compact(KEY, keep=keep)
    replica.flush()
    assert state(replica) == want
    reloaded = Bus(replica.storage, OWNER)
    assert state(reloaded) == want
    for op in ops:  # re-sent ops, folded or not, are recognised and change nothing
        assert reloaded.apply(op) is None
        assert replica.apply(op) is None
    assert state(reloaded) == want


@SETTINGS
@given(plan=steps, seed=st.integers(0, 2**32), every=st.integers(1, 6))
def test_lww_compaction_during_delivery(plan: list[tuple[int, str, int]], seed: int, every: int) -> None:
    """Compacting while ops still arrive: the documented guarantee (docs/merge.md) is that a
    replica converges unless an op reaches it after it folded an op that orders after it; such a
    late op is ignored (apply returns None although the op is new) — and only such an op."""
    ops = lww_history(plan)
    rnd = random.Random(seed)
    reference = Bus(MemoryStorage(), OWNER)
    for op in ops:
        reference.apply(op)
    replica = Bus(MemoryStorage(), OWNER)
    seen: set[str] = set()
    dropped: list[Op] = []
    for i, op in enumerate(deliver(ops, rnd)):
        horizon = None
        entry_state = replica.merge_state(KEY)
        if entry_state is not None:
            horizon = getattr(entry_state, "horizon", None)
        result = replica.apply(op)
        if result is None and op.version not in seen:
            assert horizon is not None and op.order <= horizon
            dropped.append(op)
        seen.add(op.version)
        if i % every == 0:
            replica.flush()
            replica.compact(KEY, keep=1)
            replica.flush()
    replica.flush()
    assert state(Bus(replica.storage, OWNER)) == state(replica)
    if not dropped:
        assert state(replica) == state(reference)


def test_lww_late_op_below_the_horizon_is_ignored() -> None:
    """The caveat, spelled out: a concurrent op that sorts below ops this replica already folded
    is ignored there, so that replica's frontier (and maybe value) differ from one that did not
    compact."""
    a = Bus(MemoryStorage(), WRITERS[0])
    b = Bus(MemoryStorage(), WRITERS[1])
    base = a.save(KEY, {"x": 0, "y": 0}).op
    assert base is not None
    b.apply(base)
    late = b.patch(KEY, [Patch(".y", "from b")]).op  # clock 2, made without seeing a's set
    mid = a.save(KEY, {"x": 1, "y": 1}).op  # clock 2, concurrent with `late`
    fresh = a.patch(KEY, [Patch(".x", 2)]).op  # clock 3
    assert late is not None and mid is not None and fresh is not None and late.order < fresh.order
    a.flush()
    a.compact(KEY, keep=0)
    assert a.apply(late) is None  # sorts below the horizon: ignored, not stored
    assert a.fetch(KEY).value == {"x": 2, "y": 1}
    assert a.fetch(KEY).version == (fresh.version,)
    uncompacted = Bus(MemoryStorage(), OWNER)
    for op in [late, fresh, mid, base]:
        uncompacted.apply(op)
    assert uncompacted.fetch(KEY).version == tuple(sorted([fresh.version, late.version]))
    expected_y = "from b" if late.order > mid.order else 1
    assert uncompacted.fetch(KEY).value == {"x": 2, "y": expected_y}


# ---------------------------------------------------------------------------------------- yjs

yjs_steps = st.lists(
    st.tuples(
        st.integers(0, 2), st.sampled_from(["map", "text", "text", "sync", "delete"]), st.integers(0, 9)
    ),
    min_size=1,
    max_size=20,
)


def yjs_history(plan: list[tuple[int, str, int]]) -> tuple[list[Op], dict[str, Any], list[str]]:
    """Writers edit their own pycrdt docs and send the updates as crdt ops."""
    buses = [Bus(MemoryStorage(), w) for w in WRITERS[:3]]
    docs: list[Doc[Any]] = []
    for _ in buses:
        doc: Doc[Any] = Doc()
        doc["m"] = Map()
        doc["t"] = Text()
        docs.append(doc)
    made: list[list[Op]] = [[] for _ in buses]
    map_entries: dict[str, Any] = {}
    chunks: list[str] = []
    for i, (w, action, arg) in enumerate(plan):
        bus, doc = buses[w], docs[w]
        if action == "sync":
            src = arg % len(buses)
            for op in made[src]:
                if bus.apply(op) is not None and op.kind == "crdt":
                    doc.apply_update(op.body)
            continue
        if action == "delete":
            try:
                change = bus.delete(KEY)
            except StatebusError:
                continue
            assert change.op is not None
            made[w].append(change.op)
            continue
        before = doc.get_state()
        if action == "map":
            name = f"w{w}-{i}"
            doc["m"][name] = i
            map_entries[name] = float(i)
        else:
            text = doc["t"]
            chunk = f"<{w}.{i}>"
            text.insert(0 if arg % 2 else len(text), chunk)  # at a chunk boundary: never splits one
            chunks.append(chunk)
        change = bus.crdt_update(KEY, doc.get_update(before))
        assert change.op is not None
        made[w].append(change.op)
    return [op for ops in made for op in ops], map_entries, chunks


def check_no_loss(value: dict[str, Any], map_entries: dict[str, Any], chunks: list[str]) -> None:
    if map_entries:
        assert value["m"] == map_entries
    text = value.get("t") or ""
    for chunk in chunks:
        assert chunk in text
    assert len(text) == sum(len(c) for c in chunks)


@SETTINGS
@given(plan=yjs_steps, seed=st.integers(0, 2**32), compact_every=st.integers(0, 5))
def test_yjs_replicas_converge_without_loss(
    plan: list[tuple[int, str, int]], seed: int, compact_every: int
) -> None:
    ops, map_entries, chunks = yjs_history(plan)
    rnd = random.Random(seed)
    results = []
    for r in range(4):
        replica = Bus(MemoryStorage(), OWNER)
        for i, op in enumerate(deliver(ops, rnd)):
            replica.apply(op)
            if compact_every and r % 2 and i % compact_every == 0:
                replica.flush()
                replica.compact(KEY, keep=1)
                replica.flush()
        replica.flush()
        results.append(state(replica))
        results.append(state(Bus(replica.storage, OWNER)))
        for op in ops:
            assert replica.apply(op) is None
        results.append(state(replica))
    assert all(r == results[0] for r in results)
    ydoc_state = results[0]
    if ydoc_state[0]:
        check_no_loss(ydoc_state[1], map_entries, chunks)
    merge = Bus(MemoryStorage(), OWNER)
    for op in ops:
        merge.apply(op)
    doc = merge.merge_state(KEY)
    if doc is not None and ops:
        view = doc.value if doc.exists else None
        assert view is None or view == ydoc_state[1]
