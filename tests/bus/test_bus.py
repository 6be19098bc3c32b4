"""The bus: reads, writes, remote ops, subscriptions, compaction, handlers, reactive keys."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from statebus.bus import Bus, Change
from statebus.errors import (
    Forbidden,
    HistoryCompacted,
    InvalidKey,
    InvalidOp,
    InvalidRange,
    NotFound,
    StatebusError,
    VersionConflict,
)
from statebus.keys import encode_pubkey
from statebus.oplog import DELETE, Op, Patch, decode_op, signing_bytes
from statebus.storage.base import Storage
from statebus.storage.memory import MemoryStorage

LOCAL = encode_pubkey(bytes(31) + b"\x05")
OTHER = encode_pubkey(bytes(31) + b"\x06")
Reopen = Callable[[], Storage]

K = f"/{LOCAL}/app/x"


def local_bus(storage: Storage | None = None, **kw: Any) -> Bus:
    return Bus(storage if storage is not None else MemoryStorage(), LOCAL, **kw)


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Change] = []

    def __call__(self, change: Change) -> None:
        self.changes.append(change)

    def values(self) -> list[Any]:
        return [(c.kind, c.exists, c.value) for c in self.changes]


def frozen(bus: Bus) -> tuple[int, int]:
    return bus.seq, bus.pending


# ---------------------------------------------------------------- reads and writes


def test_save_fetch_and_change_fields(storage: Storage) -> None:
    bus = local_bus(storage)
    c1 = bus.save("/~/app/x", {"a": 1})
    assert (c1.key, c1.seq, c1.kind, c1.exists, c1.value, c1.merge) == (K, 1, "op", True, {"a": 1}, "lww")
    assert c1.parents == () and c1.version == (c1.op.version,) if c1.op else False
    assert c1.linear
    c2 = bus.save(K, [1, 2])
    assert c2.parents == c1.version and c2.seq == 2
    snap = bus.fetch("/~/app/x")
    assert (snap.kind, snap.value, snap.version, snap.seq) == ("snapshot", [1, 2], c2.version, 2)
    assert bus.fetch_or_none(f"/{LOCAL}/nothing") is None
    with pytest.raises(NotFound):
        bus.fetch(f"/{LOCAL}/nothing")
    with pytest.raises(InvalidKey):
        bus.fetch("/~/app/")
    with pytest.raises(InvalidKey):
        bus.save("/~/../x", 1)


def test_delete(storage: Storage) -> None:
    bus = local_bus(storage)
    with pytest.raises(NotFound):
        bus.delete(K)
    bus.save(K, 1)
    d = bus.delete(K)
    assert d.kind == "op" and not d.exists and d.value is None
    with pytest.raises(NotFound):
        bus.fetch(K)
    snap = bus.fetch_or_none(K)
    assert snap is not None and not snap.exists
    with pytest.raises(NotFound):
        bus.delete(K)
    assert bus.save(K, 2).value == 2


def test_bytes_values_and_ranges_on_read() -> None:
    bus = local_bus()
    c = bus.save(K, b"\x00\x01", content_type="application/octet-stream")
    assert c.value == b"\x00\x01" and c.content_type == "application/octet-stream"
    assert bus.fetch(K).value == b"\x00\x01"
    with pytest.raises(InvalidRange):
        bus.fetch(K, ".a")
    with pytest.raises(InvalidOp):
        bus.save(K, b"x")
    with pytest.raises(InvalidOp):
        bus.save(K, {"a": 1}, content_type="text/plain")
    with pytest.raises(InvalidOp):
        bus.patch(K, [Patch(".a", 1)])  # no patching bytes
    bus.save(K, {"a": {"b": [10, 20, 30]}})
    assert bus.fetch(K).content_type is None
    assert bus.fetch(K, ".a.b[1]").value == 20
    assert bus.fetch(K, ".a.b[1:3]").value == [20, 30]
    with pytest.raises(NotFound):
        bus.fetch(K, ".nope")


def test_patch_with_ranges() -> None:
    bus = local_bus()
    bus.save(K, {"a": 1, "list": [1, 2, 3], "text": "hello"})
    c = bus.patch(K, [Patch(".a", 2), Patch(".list[0:2]", ["x"]), Patch(".b", {"c": True})])
    assert c.value == {"a": 2, "list": ["x", 3], "text": "hello", "b": {"c": True}}
    assert c.linear and c.op is not None and c.op.kind == "patch"
    c = bus.patch(K, [Patch(".b", DELETE), Patch(".list[-1]", 4)])
    assert c.value == {"a": 2, "list": ["x", 4], "text": "hello"}


def test_bad_writes_change_nothing() -> None:
    bus = local_bus()
    bus.save(K, {"a": [1]})
    rec = Recorder()
    bus.observe(K, rec)
    before = (frozen(bus), bus.fetch(K), len(rec.changes))
    bad: list[Any] = [
        lambda: bus.patch(K, [Patch(".a.b.c", 1)]),
        lambda: bus.patch(K, [Patch(".a[9]", 1)]),
        lambda: bus.patch(K, [Patch(".ok", 1), Patch("[[[", 1)]),
        lambda: bus.patch(K, []),
        lambda: bus.patch(f"/{LOCAL}/missing", [Patch(".a", 1)]),
        lambda: bus.save(K, float("nan")),
        lambda: bus.save(K, {1: 2}),
        lambda: bus.save(K, (1, 2)),
        lambda: bus.save(K, {"x": object()}),
        lambda: bus.save(K, 2**60),
        lambda: bus.save(K, 1, parents=["unknown"]),
        lambda: bus.save(K, 1, version=""),
        lambda: bus.save(K, 1, version="x" * 500),
        lambda: bus.save(K, 1, merge="nope"),
        lambda: bus.crdt_update(K, b"\x00"),
        lambda: bus.save(f"/{LOCAL}/new", 1, merge="nope"),
        lambda: bus.crdt_update(f"/{LOCAL}/doc", b"not an update"),
        lambda: bus.save(f"/{LOCAL}/new", 1, parents=["p"]),
    ]
    for attempt in bad:
        with pytest.raises(StatebusError):
            attempt()
        assert (frozen(bus), bus.fetch(K), len(rec.changes)) == before
    assert bus.fetch_or_none(f"/{LOCAL}/new") is None
    assert bus.fetch_or_none(f"/{LOCAL}/doc") is None
    stored, snaps = bus.take_outbox()
    assert len(stored) == 1 and snaps == []


def test_saved_values_are_private_copies() -> None:
    bus = local_bus()
    value = {"a": [1]}
    bus.save(K, value)
    value["a"].append(2)
    assert bus.fetch(K).value == {"a": [1]}
    content: dict[str, Any] = {"n": 1}
    bus.patch(K, [Patch(".b", content)])
    content["n"] = 99
    assert bus.fetch(K).value == {"a": [1], "b": {"n": 1}}
    stored, _ = bus.take_outbox()
    assert decode_op(stored[0].data).body == {"a": [1]}


def test_version_conflict_and_idempotent_resave(storage: Storage) -> None:
    bus = local_bus(storage)
    c = bus.save(K, {"v": 1}, version="v1")
    assert c.version == ("v1",)
    again = bus.save(K, {"v": 1}, version="v1")
    assert again.kind == "snapshot" and bus.seq == 1 and bus.pending == 1
    with pytest.raises(VersionConflict):
        bus.save(K, {"v": 2}, version="v1")
    with pytest.raises(VersionConflict):
        bus.delete(K, version="v1")
    bus.save(K, {"v": 2}, version="v2")
    assert bus.save(K, {"v": 1}, version="v1").kind == "snapshot"  # a late retry of v1 still is a no-op
    bus.delete(K, version="v3")
    assert bus.delete(K, version="v3").kind == "snapshot"
    bus.flush()
    bus2 = local_bus(storage)
    assert bus2.save(K, {"v": 2}, version="v2").kind == "snapshot"
    with pytest.raises(VersionConflict):
        bus2.save(K, {"v": 3}, version="v2")


def test_own_version_as_parent_is_rejected() -> None:
    bus = local_bus()
    bus.save(K, 1, version="a")
    with pytest.raises(InvalidOp):
        bus.save(K, 2, version="b", parents=["a", "b"])


def test_explicit_parents_make_concurrent_versions() -> None:
    bus = local_bus()
    a = bus.save(K, {"x": 1}, version="a")
    bus.save(K, {"x": 2}, version="b", parents=["a"])
    c = bus.save(K, {"x": 3}, version="c", parents=["a"])
    assert c.version == ("b", "c") and c.parents == ("b",) and not c.linear
    assert a.version == ("a",)
    merged = bus.save(K, {"x": 4})
    assert merged.parents == ("b", "c") and merged.version == (merged.op.version,) if merged.op else False


def test_merge_type_mismatch() -> None:
    bus = local_bus()
    bus.save(K, 1)
    with pytest.raises(InvalidOp):
        bus.save(K, 2, merge="yjs")
    with pytest.raises(InvalidOp):
        bus.crdt_update(K, b"\x00\x00")
    other = Bus(MemoryStorage(), LOCAL)
    op = other.save(K, 1, merge="lww").op
    assert op is not None
    yop = dataclasses.replace(op, merge="yjs", version="y1")
    with pytest.raises(InvalidOp):
        bus.apply(yop)


def test_children_and_walk_include_unflushed_keys(storage: Storage) -> None:
    bus = local_bus(storage)
    for path in ["/~/a/1", "/~/a/2", "/~/a/sub/x", "/~/b"]:
        bus.save(path, 1)
    bus.flush()
    bus.save("/~/a/3", 1)
    bus.save("/~/a/other/y", 1)
    assert bus.children("/~/a/") == ["1", "2", "3", "other/", "sub/"]
    assert bus.children("/~/a") == ["1", "2", "3", "other/", "sub/"]
    assert bus.children("/~/a/", after="2") == ["3", "other/", "sub/"]
    assert bus.children("/~/a/", limit=2) == ["1", "2"]
    assert sorted(bus.walk(f"/{LOCAL}/", 100)) == sorted(
        f"/{LOCAL}/{p}" for p in ["a/1", "a/2", "a/3", "a/sub/x", "a/other/y", "b"]
    )
    assert len(bus.walk(f"/{LOCAL}/", 2)) == 2
    bus.delete("/~/a/3")
    bus.flush()
    assert "3" not in bus.children("/~/a/")


# ---------------------------------------------------------------- subscriptions


def test_observe_key_snapshot_then_changes_exactly_once(storage: Storage) -> None:
    bus = local_bus(storage)
    bus.save(K, 1)
    rec = Recorder()
    sub = bus.observe(K, rec)
    bus.save(K, 2)
    bus.save(f"/{LOCAL}/app/other", 5)
    bus.delete(K)
    bus.save(K, 3)
    assert rec.values() == [("snapshot", True, 1), ("op", True, 2), ("op", False, None), ("op", True, 3)]
    seqs = [c.seq for c in rec.changes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    sub.close()
    bus.save(K, 4)
    assert len(rec.changes) == 4


def test_observe_missing_key_gets_an_empty_snapshot() -> None:
    bus = local_bus()
    rec = Recorder()
    bus.observe(K, rec)
    assert rec.values() == [("snapshot", False, None)]
    bus.save(K, 1)
    assert rec.values()[-1] == ("op", True, 1)


def test_observe_subtree() -> None:
    bus = local_bus()
    bus.save("/~/app/a", 1)
    bus.save("/~/app/b/c", 2)
    bus.save("/~/elsewhere", 0)
    rec = Recorder()
    bus.observe("/~/app/", rec)
    snaps = rec.changes
    assert sorted((c.key, c.value) for c in snaps[:-1]) == [(f"/{LOCAL}/app/a", 1), (f"/{LOCAL}/app/b/c", 2)]
    assert [c.last for c in snaps] == [False, False, True]
    assert snaps[-1].key == f"/{LOCAL}/app/"
    n = len(rec.changes)
    bus.save("/~/app/b/d", 3)
    bus.save("/~/elsewhere", 1)
    bus.delete("/~/app/a")
    assert [(c.key, c.exists) for c in rec.changes[n:]] == [
        (f"/{LOCAL}/app/b/d", True),
        (f"/{LOCAL}/app/a", False),
    ]


def test_observe_since_resumes_by_cursor_across_many_keys(storage: Storage) -> None:
    bus = local_bus(storage)
    for i in range(10):
        bus.save(f"/~/app/k{i}", i)
    bus.flush()
    cursor = bus.seq
    expected = []
    for i in range(30):
        key = f"/~/app/k{i % 7}"
        if i % 5 == 4:
            expected.append(
                bus.delete(key) if bus.fetch_or_none(key) and bus.fetch(key) else bus.save(key, i)
            )
        else:
            expected.append(bus.save(key, i))
        if i == 15:
            bus.flush()  # half on disk, half still in the outbox
    bus.save("/~/elsewhere", 1)
    rec = Recorder()
    bus.observe("/~/app/", rec, since=cursor)
    assert [(c.key, c.seq, c.exists, c.value, c.version) for c in rec.changes] == [
        (c.key, c.seq, c.exists, c.value, c.version) for c in expected
    ]
    live = bus.save("/~/app/k1", "live")
    assert rec.changes[-1] == live
    rec2 = Recorder()
    bus.observe("/~/app/k3", rec2, since=cursor)
    assert [c.seq for c in rec2.changes] == [c.seq for c in expected if c.key.endswith("/k3")]
    with pytest.raises(HistoryCompacted):
        bus.observe("/~/app/", Recorder(), since=bus.seq + 5)


def test_observe_with_parents_resumes_one_key() -> None:
    bus = local_bus()
    c1 = bus.save(K, 1)
    c2 = bus.save(K, 2)
    c3 = bus.patch(K, [Patch("", 3)])
    rec = Recorder()
    bus.observe(K, rec, parents=c1.version)
    assert [(c.seq, c.value, c.version) for c in rec.changes] == [
        (c2.seq, 2, c2.version),
        (c3.seq, 3, c3.version),
    ]
    rec = Recorder()
    bus.observe(K, rec, parents=c3.version)
    assert rec.changes == []
    rec = Recorder()
    bus.observe(K, rec, parents=[])
    assert [c.value for c in rec.changes] == [1, 2, 3]
    with pytest.raises(HistoryCompacted):
        bus.observe(K, Recorder(), parents=["nope"])
    with pytest.raises(InvalidKey):
        bus.observe("/~/app/", Recorder(), parents=["x"])


def test_failing_observer_is_closed_and_others_still_hear() -> None:
    bus = local_bus()
    good = Recorder()

    def bad(change: Change) -> None:
        if change.kind == "op":
            raise ValueError("boom")

    sub_bad = bus.observe(K, bad)
    bus.observe(K, good)
    bus.save(K, 1)
    assert sub_bad.closed and sub_bad.reason is not None and "boom" in sub_bad.reason
    bus.save(K, 2)
    assert [c.value for c in good.changes] == [None, 1, 2]
    assert len(bus.subscriptions) == 1


def test_observer_failing_on_snapshot_is_closed() -> None:
    bus = local_bus()
    bus.save(K, 1)

    def bad(change: Change) -> None:
        raise ValueError("nope")

    sub = bus.observe(K, bad)
    assert sub.closed
    bus.save(K, 2)


# ---------------------------------------------------------------- compaction and reload


def test_compaction_drops_ops_and_resumes_raise_history_compacted(stores: tuple[Storage, Reopen]) -> None:
    storage, reopen = stores
    bus = local_bus(storage, keep_ops=3)
    changes = [bus.save(K, i) for i in range(5)]
    bus.flush()
    cursor_old = changes[0].seq
    assert len(storage.load(K).ops) == 5  # type: ignore[union-attr]
    snap = bus.compact(K)
    assert snap is not None
    bus.flush()
    record = storage.load(K)
    assert record is not None and record.snapshot is not None
    assert len(record.ops) == 3
    with pytest.raises(HistoryCompacted):
        bus.observe(K, Recorder(), since=cursor_old)
    with pytest.raises(HistoryCompacted):
        bus.observe(K, Recorder(), parents=changes[0].version)
    rec = Recorder()
    bus.observe(K, rec, parents=changes[2].version)
    assert [c.value for c in rec.changes] == [3, 4]
    rec = Recorder()
    bus.observe(K, rec, since=changes[2].seq)
    assert [c.value for c in rec.changes] == [3, 4]
    assert bus.fetch(K).value == 4
    # a restarted node sees the same value and frontier
    again = local_bus(reopen(), keep_ops=3)
    assert again.fetch(K).value == 4
    assert again.fetch(K).version == changes[-1].version
    assert again.seq == bus.seq
    c = again.save(K, 5)
    assert c.parents == changes[-1].version and c.seq == bus.seq + 1


def test_automatic_compaction_keeps_the_log_bounded(storage: Storage) -> None:
    bus = local_bus(storage, keep_ops=5)
    for i in range(40):
        bus.save(K, {"n": i})
        bus.flush()
    record = storage.load(K)
    assert record is not None and record.snapshot is not None
    assert len(record.ops) < 10
    assert local_bus(storage).fetch(K).value == {"n": 39}


def test_reload_from_storage(stores: tuple[Storage, Reopen]) -> None:
    storage, reopen = stores
    bus = local_bus(storage)
    bus.save("/~/a", {"x": [1, 2]})
    bus.patch("/~/a", [Patch(".x[0]", 9)])
    bus.save("/~/b", b"bin", content_type="image/png")
    bus.save("/~/c", 1)
    bus.delete("/~/c")
    bus.save("/~/d", 1, version="d1")
    bus.save("/~/d", 2, version="d2", parents=["d1"])
    bus.save("/~/d", 3, version="d3", parents=["d1"])
    before = {k: bus.fetch_or_none(f"/~/{k}") for k in "abcd"}
    bus.flush()
    again = local_bus(reopen())
    for k, snap in before.items():
        now = again.fetch_or_none(f"/~/{k}")
        assert snap is not None and now is not None
        assert (now.exists, now.value, now.content_type, now.version) == (
            snap.exists,
            snap.value,
            snap.content_type,
            snap.version,
        )
    assert again.fetch("/~/d").version == ("d2", "d3")
    assert again.seq == bus.seq


def test_small_cache_keeps_correctness(storage: Storage) -> None:
    bus = local_bus(storage, cache_keys=2)
    for round_ in range(3):
        for i in range(6):
            bus.save(f"/~/k{i}", [round_, i])
        if round_ == 1:
            bus.flush()
    for i in range(6):
        assert bus.fetch(f"/~/k{i}").value == [2, i]
        bus.patch(f"/~/k{i}", [Patch("[0]", 7)])
    bus.flush()
    for i in range(6):
        assert bus.fetch(f"/~/k{i}").value == [7, i]
    assert bus.keys_in_memory <= 2
    tiny = local_bus(storage, cache_keys=0)
    tiny.save("/~/k0", "tiny")
    assert tiny.fetch("/~/k0").value == "tiny"
    tiny.save("/~/k1", "one")
    tiny.flush()
    assert tiny.fetch("/~/k0").value == "tiny" and tiny.fetch("/~/k1").value == "one"


# ---------------------------------------------------------------- remote ops, verifier, signer


def remote_ops(n: int = 2) -> list[Op]:
    other = Bus(MemoryStorage(), OTHER)
    out = []
    for i in range(n):
        c = other.save("/~/doc", {"i": i})
        assert c.op is not None
        out.append(c.op)
    return out


def test_apply_remote_ops_idempotently() -> None:
    bus = local_bus()
    ops = remote_ops(3)
    rec = Recorder()
    bus.observe(f"/{OTHER}/doc", rec)
    for op in ops:
        assert bus.apply(op, peer="p1") is not None
    assert bus.apply(ops[1]) is None
    assert rec.changes[-1].value == {"i": 2} and rec.changes[-1].peer == "p1"
    assert len(rec.changes) == 4
    with pytest.raises(VersionConflict):
        bus.apply(dataclasses.replace(ops[0], body={"i": 99}))
    with pytest.raises(InvalidKey):
        bus.apply(dataclasses.replace(ops[0], key="/~/doc", version="zz"))
    with pytest.raises(InvalidOp):
        bus.apply(dataclasses.replace(ops[0], version="bad", body={1: 2}))
    with pytest.raises(InvalidOp):
        bus.apply(dataclasses.replace(ops[0], version="bad", body=b"no content type"))
    with pytest.raises(InvalidOp):
        bus.apply(dataclasses.replace(ops[0], version="bad", kind="crdt"))


def test_apply_out_of_order_converges() -> None:
    ops = remote_ops(4)
    a, b = local_bus(), local_bus()
    for op in ops:
        a.apply(op)
    for op in reversed(ops):
        b.apply(op)
    key = f"/{OTHER}/doc"
    assert a.fetch(key).value == b.fetch(key).value == {"i": 3}
    assert a.fetch(key).version == b.fetch(key).version == (ops[-1].version,)


def test_verifier_runs_on_apply_and_can_reject() -> None:
    seen: list[Op] = []

    def verifier(op: Op) -> None:
        seen.append(op)
        if op.body == {"i": 1}:
            raise Forbidden("not you")

    bus = local_bus(verifier=verifier)
    rec = Recorder()
    bus.observe(f"/{OTHER}/doc", rec)
    ops = remote_ops(2)
    bus.apply(ops[0])
    state = (frozen(bus), bus.fetch(f"/{OTHER}/doc"), len(rec.changes))
    with pytest.raises(Forbidden):
        bus.apply(ops[1])
    assert (frozen(bus), bus.fetch(f"/{OTHER}/doc"), len(rec.changes)) == state
    assert seen == ops
    bus.save(K, 1)  # local writes are the signer's business, not the verifier's
    assert len(seen) == 2


def test_signer_signs_local_writes_and_batch_signer_replaces_ops() -> None:
    def signer(op: Op) -> Op:
        return dataclasses.replace(op, sig=b"S" + signing_bytes(op)[-4:])

    bus = local_bus(signer=signer)
    c = bus.save(K, {"a": 1})
    assert c.op is not None and c.op.sig.startswith(b"S")
    stored, _ = bus.take_outbox()
    assert decode_op(stored[0].data).sig == c.op.sig
    bus.mark_durable(stored[-1].seq)

    batch_calls: list[list[Op]] = []

    def batch_signer(ops: list[Op]) -> list[Op]:
        batch_calls.append(ops)
        return [dataclasses.replace(o, sig=b"batch") for o in ops]

    plain = local_bus()
    plain.save(K, 1)
    plain.save(f"/{LOCAL}/y", 2)
    stored, _ = plain.take_outbox(batch_signer)
    assert [decode_op(s.data).sig for s in stored] == [b"batch", b"batch"]
    assert len(batch_calls) == 1 and len(batch_calls[0]) == 2
    hist = plain.history(K, [])
    assert hist[0].op is not None and hist[0].op.sig == b"batch"
    assert plain.take_outbox() == ([], [])


def test_a_failing_signer_changes_nothing() -> None:
    def signer(op: Op) -> Op:
        raise Forbidden("no key")

    bus = local_bus(signer=signer)
    with pytest.raises(Forbidden):
        bus.save(K, 1)
    assert frozen(bus) == (0, 0) and bus.fetch_or_none(K) is None


# ---------------------------------------------------------------- handlers and reactive keys


def test_handlers() -> None:
    bus = local_bus()
    bus.handle("/~/virtual/*", to_fetch=lambda key: {"virtual": key.rsplit("/", 1)[1]})
    assert bus.fetch("/~/virtual/abc").value == {"virtual": "abc"}

    def to_save(op: Op) -> Op | None:
        if op.body == "forbidden":
            raise Forbidden("no")
        if isinstance(op.body, str):
            return dataclasses.replace(op, body=op.body.upper())
        return None

    saved: list[Change] = []
    deleted: list[Op] = []
    h = bus.handle(
        f"/{LOCAL}/guarded/",
        to_save=to_save,
        to_delete=lambda op: deleted.append(op),
        on_save=saved.append,
    )
    assert bus.save("/~/guarded/a", "hi").value == "HI"
    with pytest.raises(Forbidden):
        bus.save("/~/guarded/a", "forbidden")
    assert bus.fetch("/~/guarded/a").value == "HI"
    bus.delete("/~/guarded/a")
    assert len(deleted) == 1 and [c.exists for c in saved] == [True, False]
    bus.save("/~/unguarded", "lower")
    assert bus.fetch("/~/unguarded").value == "lower"
    bus.handle("/~/guarded/*", to_save=lambda op: dataclasses.replace(op, key=f"/{LOCAL}/elsewhere"))
    with pytest.raises(InvalidOp):
        bus.save("/~/guarded/b", "x")

    def broken_on_save(change: Change) -> None:
        raise ValueError("hook broke")

    h2 = bus.handle("/~/hooked", on_save=broken_on_save)
    assert bus.save("/~/hooked", 1).value == 1  # the write stands
    assert h2.last_error is not None and "hook broke" in h2.last_error
    bus.handlers.remove(h)
    bus.save("/~/hooked", 2)


def test_reactive_keys() -> None:
    bus = local_bus()
    bus.save("/~/a", 2)
    bus.save("/~/b", 3)
    calls: list[str] = []

    def total(key: str, get: Any) -> Any:
        calls.append(key)
        return {"sum": (get("/~/a") or 0) + (get("/~/b") or 0)}

    bus.reactive("/~/sum", total)
    assert bus.fetch("/~/sum").value == {"sum": 5}
    rec = Recorder()
    bus.observe("/~/sum", rec)
    bus.save("/~/a", 10)
    assert rec.changes[-1].kind == "derived" and rec.changes[-1].value == {"sum": 13}
    n = len(rec.changes)
    bus.save("/~/unrelated", 1)
    assert len(rec.changes) == n
    bus.save("/~/a", 10, version="same-value")  # recomputed, but unchanged: no notification
    assert len(rec.changes) == n
    bus.delete("/~/b")
    assert rec.changes[-1].value == {"sum": 10}

    bus.reactive("/~/double", lambda key, get: {"d": get("/~/sum")["sum"] * 2})
    rec2 = Recorder()
    bus.observe("/~/double", rec2)
    assert rec2.changes[-1].value == {"d": 20}
    bus.save("/~/a", 1)
    assert rec2.changes[-1].value == {"d": 2}


def test_reactive_function_errors_do_not_break_writes() -> None:
    bus = local_bus()
    bus.save("/~/a", 1)

    def fragile(key: str, get: Any) -> Any:
        value = get("/~/a")
        if value == 0:
            raise ZeroDivisionError("zero")
        return 1 / value

    bus.reactive("/~/inv", fragile)
    rec = Recorder()
    bus.observe("/~/inv", rec)
    assert bus.save("/~/a", 0).value == 0
    assert rec.changes[-1].exists is False
    bus.save("/~/a", 4)
    assert rec.changes[-1].value == 0.25


def test_remote_clock_cannot_run_away() -> None:
    bus = local_bus()
    op = remote_ops(1)[0]
    with pytest.raises(InvalidOp):
        bus.apply(dataclasses.replace(op, clock=2**40, version="far"))
    assert bus.fetch_or_none(f"/{OTHER}/doc") is None
    assert bus.apply(dataclasses.replace(op, clock=2**31, version="near")) is not None


def test_observer_writing_during_its_backlog_still_sees_changes_in_order() -> None:
    bus = local_bus()
    for i in range(3):
        bus.save(f"/~/app/k{i}", i)
    seqs: list[int] = []

    def writer(change: Change) -> None:
        seqs.append(change.seq)
        if change.kind == "op" and change.value == 0:
            bus.save("/~/app/k9", "written from a callback")

    bus.observe("/~/app/", writer, since=0)
    bus.save("/~/app/k1", "after")
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) == 5


def test_resume_across_an_unflushed_compaction_is_history_compacted() -> None:
    bus = local_bus(keep_ops=1)
    first = bus.save(K, 0)
    for i in range(1, 4):
        bus.save(K, i)
    stored, _ = bus.take_outbox()
    bus.storage.append(stored)
    bus.mark_durable(stored[-1].seq)
    assert bus.compact(K) is not None  # folded in memory, snapshot not stored yet
    with pytest.raises(HistoryCompacted):
        bus.changes_since(K, first.seq)
    with pytest.raises(HistoryCompacted):
        bus.history(K, first.version)
    assert [c.value for c in bus.changes_since(K, bus.seq - 1)] == [3]
    bus.flush()
    assert local_bus(bus.storage).fetch(K).value == 3
