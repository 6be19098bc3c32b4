"""Anti-entropy between two in-memory Buses after a partition: only the missing ops move."""

from __future__ import annotations

import json
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statebus.bus import Bus
from statebus.errors import InvalidKey, InvalidValue, StatebusError
from statebus.federation.opset import op_set
from statebus.federation.sync import (
    LEAF,
    OpIndex,
    RangeSummary,
    SyncRequest,
    SyncResponse,
    SyncSession,
    answer,
    diff,
    summarize,
)
from statebus.identity import Identity, sign_op, verify_op
from statebus.oplog import decode_op
from statebus.storage.memory import MemoryStorage

OWNER = Identity.generate()


def _bus() -> Bus:
    return Bus(MemoryStorage(), OWNER.pubkey, signer=lambda op: sign_op(op, OWNER))


def exchange(a: Bus, b: Bus, pattern: str, leaf: int = LEAF) -> tuple[SyncSession, int]:
    """Run a whole exchange, ``a`` opening; apply what each side lacks. Returns the session and the
    bytes on the wire (requests plus responses, ops included)."""
    a_set, b_set = op_set(a.storage, pattern), op_set(b.storage, pattern)
    session = SyncSession(pattern, a_set.index, a_set.ops, leaf)
    wire = 0
    req: SyncRequest | None = session.start()
    while req is not None:
        body = req.encode()
        wire += len(body)
        got = SyncRequest.decode(body)
        for raw in got.ops:  # pushed to b
            op = decode_op(raw)
            verify_op(op)
            b.apply(op)
        resp_bytes = answer(b_set.index, b_set.ops, got, leaf).encode()
        wire += len(resp_bytes)
        req = session.receive(SyncResponse.decode(resp_bytes), len(resp_bytes))
    for raw in session.received:
        op = decode_op(raw)
        verify_op(op)
        a.apply(op)
    a.flush()
    b.flush()
    return session, wire


def _values(bus: Bus, prefix: str) -> dict[str, object]:
    return {k: bus.fetch(k).value for k in bus.walk(bus.parse(prefix), 100_000)}


def _copy_all(src: Bus, dst: Bus, pattern: str) -> None:
    for raw in op_set(src.storage, src.parse(pattern)).ops.values():
        dst.apply(decode_op(raw))
    dst.flush()


def test_partition_heals_with_only_the_missing_ops_moved() -> None:
    a, b = _bus(), _bus()
    rnd = random.Random(7)
    for i in range(1000):
        a.save(f"/~/chirp/{i}", {"text": "x" * rnd.randrange(20, 120), "n": i})
    a.flush()
    _copy_all(a, b, "/~/chirp/")
    pattern = a.parse("/~/chirp/")
    full_before = op_set(a.storage, pattern).total_bytes
    # the partition: each side writes, updates and deletes on its own
    for i in range(10):
        a.save(f"/~/chirp/a{i}", {"text": "from a", "n": i})
    for i in range(5):
        a.save(f"/~/chirp/{i}", {"text": "edited at a"})
    for i in range(100, 103):
        a.delete(f"/~/chirp/{i}")
    for i in range(7):
        b.save(f"/~/chirp/b{i}", {"text": "from b", "n": i})
    for i in range(200, 202):
        b.delete(f"/~/chirp/{i}")
    a.flush()
    b.flush()
    a_only = set(op_set(a.storage, pattern).ops) - set(op_set(b.storage, pattern).ops)
    b_only = set(op_set(b.storage, pattern).ops) - set(op_set(a.storage, pattern).ops)
    assert (len(a_only), len(b_only)) == (18, 9)

    session, wire = exchange(a, b, pattern)

    assert op_set(a.storage, pattern).ops == op_set(b.storage, pattern).ops
    assert _values(a, "/~/chirp/") == _values(b, "/~/chirp/")
    assert "/~/chirp/101" not in {k[-13:] for k in _values(a, "/~/chirp/")}
    assert len(session.received) == len(b_only)
    assert session.pushed == a_only
    healed = op_set(a.storage, pattern).ops
    moved = sum(len(healed[i]) for i in a_only | b_only)
    full = full_before + moved  # a full resend: both sides send everything they hold
    assert wire < full / 5, (wire, full)
    assert wire > moved  # the ops themselves cross, plus the summaries
    print(
        f"\nsync 1000 ops, 27 differ: wire={wire} B moved_ops={moved} B full={full} B rounds={session.rounds}"
    )


def test_equal_sets_settle_in_one_round_trip() -> None:
    a, b = _bus(), _bus()
    for i in range(300):
        a.save(f"/~/x/{i}", i)
    a.flush()
    _copy_all(a, b, "/~/x/")
    session, wire = exchange(a, b, a.parse("/~/x/"))
    assert session.rounds == 1
    assert session.received == [] and session.pushed == set()
    assert wire < 300


def test_one_side_empty() -> None:
    a, b = _bus(), _bus()
    for i in range(50):
        b.save(f"/~/x/{i}", i)
    b.flush()
    session, _ = exchange(a, b, a.parse("/~/x/"))
    assert len(session.received) == 50
    assert _values(a, "/~/x/") == _values(b, "/~/x/")


@settings(max_examples=60, deadline=None)
@given(
    common=st.sets(st.binary(min_size=32, max_size=32), max_size=200),
    only_a=st.sets(st.binary(min_size=32, max_size=32), max_size=40),
    only_b=st.sets(st.binary(min_size=32, max_size=32), max_size=40),
    leaf=st.integers(min_value=0, max_value=20),
)
def test_reconciliation_finds_exactly_the_difference(
    common: set[bytes], only_a: set[bytes], only_b: set[bytes], leaf: int
) -> None:
    a_ids, b_ids = common | only_a, common | only_b
    a, b = OpIndex(a_ids), OpIndex(b_ids)
    a_need: set[bytes] = set()
    b_need: set[bytes] = set()
    ranges: list[RangeSummary] = list(summarize(a, leaf=leaf))
    turn = [b, a]
    needs = [b_need, a_need]
    rounds = 0
    while ranges:
        rounds += 1
        assert rounds < 70
        side = rounds % 2 == 1
        idx, need, other_need = (turn[0], needs[0], needs[1]) if side else (turn[1], needs[1], needs[0])
        d = diff(idx, ranges, leaf)
        need |= d.need
        other_need |= d.offer
        ranges = list(d.reply)
    assert a_need == b_ids - a_ids
    assert b_need == a_ids - b_ids


def test_messages_round_trip_and_reject_garbage() -> None:
    ids = tuple(sorted(os.urandom(32) for _ in range(3)))
    prefix = ""
    rs = RangeSummary(prefix, 3, os.urandom(16), ids)
    req = SyncRequest("/" + OWNER.pubkey + "/x/", (rs,), want=ids[:1])
    assert SyncRequest.decode(req.encode()) == req
    resp = SyncResponse((rs,), (), ids[1:])
    assert SyncResponse.decode(resp.encode()) == resp
    bad = [
        b"[]",
        b'{"v":2,"ranges":[]}',
        b'{"v":1,"pattern":"/x/","ranges":[]}',
        b'{"v":1,"pattern":"/' + OWNER.pubkey.encode() + b'/x","ranges":[]}',
        b'{"v":1,"pattern":"/'
        + OWNER.pubkey.encode()
        + b'/x/","ranges":[["zz",1,"AAAAAAAAAAAAAAAAAAAAAA"]]}',
        b'{"v":1,"pattern":"/'
        + OWNER.pubkey.encode()
        + b'/x/","ranges":[["a",2,"AAAAAAAAAAAAAAAAAAAAAA",[]]]}',
        b'{"v":1,"pattern":"/' + OWNER.pubkey.encode() + b'/x/","ranges":[],"want":["short"]}',
        b'{"v":1,"pattern":"/' + OWNER.pubkey.encode() + b'/x/","ranges":[],"extra":1}',
        b"not json",
    ]
    for data in bad:
        with pytest.raises((InvalidValue, InvalidKey)):
            SyncRequest.decode(data)
    with pytest.raises(StatebusError):
        SyncResponse.decode(b'{"v":1,"ranges":[],"ops":[1]}')


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"v": st.just(1), "pattern": st.just("/" + OWNER.pubkey + "/x/"), "ranges": json_values}
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_hostile_messages_raise_only_statebus_errors(data: bytes) -> None:
    for decode in (SyncRequest.decode, SyncResponse.decode):
        try:
            decode(data)
        except StatebusError:
            pass


def test_answers_are_paged_so_no_total_is_too_large() -> None:
    """However much the opener lacks, each answer carries at most one page of ops (at least one op),
    names the rest in ``later``, and the exchange ends with every op moved."""
    a, b = _bus(), _bus()
    pattern = f"/{OWNER.pubkey}/big/"
    for i in range(40):
        b.save(f"{pattern}{i}", {"blob": "x" * 30_000})
    b.flush()
    b_set = op_set(b.storage, pattern)
    session = SyncSession(pattern, op_set(a.storage, pattern).index)
    req: SyncRequest | None = session.start()
    pages: list[int] = []
    got: list[bytes] = []
    while req is not None:
        resp = answer(b_set.index, b_set.ops, SyncRequest.decode(req.encode()), page_bytes=100_000)
        wire = resp.encode()
        pages.append(sum(len(o) for o in resp.ops))
        req = session.receive(SyncResponse.decode(wire), len(wire))
        got.extend(session.take())
    assert sorted(got) == sorted(b_set.ops.values()) and session.received == []
    assert len(pages) >= 12 and max(pages) <= 100_000 + 31_000  # ~3 ops a page
    assert session.pages >= 10 and session.settling_rounds <= 3 and not session.partial
    assert session.server_seq is None  # this bare answer named no cursor


def test_an_answer_that_cannot_list_every_id_claims_no_cursor() -> None:
    index = OpIndex([])
    session = SyncSession(f"/{OWNER.pubkey}/x/", index)
    session.start()
    op = json.dumps({"k": 1}).encode()
    nxt = session.receive(SyncResponse((), (op,), seq=7, later=(os.urandom(32),), more=True))
    assert nxt is not None and len(nxt.want) == 1
    assert session.partial and session.server_seq is None
    session.receive(SyncResponse((), (op,), seq=9))
    assert session.server_seq is None  # a partial exchange never claims a cursor
    with pytest.raises(InvalidValue):  # ids for later but no op: no progress, a misbehaving peer
        SyncSession(f"/{OWNER.pubkey}/x/", index).receive(SyncResponse((), (), later=(os.urandom(32),)))
    round_trip = SyncResponse.decode(SyncResponse((), (op,), later=(b"\1" * 32,), more=True).encode())
    assert round_trip.later == (b"\1" * 32,) and round_trip.more
    with pytest.raises(InvalidValue):
        SyncResponse.decode(b'{"v":1,"ranges":[],"ops":[],"want":[],"more":"yes"}')


def test_the_ops_stream_and_anti_entropy_share_one_per_op_cap() -> None:
    from statebus.federation.client import MAX_LINE
    from statebus.federation.sync import MAX_OP_BYTES
    from statebus.http.peers import MAX_OP_BYTES as STREAM_MAX_OP_BYTES

    assert STREAM_MAX_OP_BYTES == MAX_OP_BYTES and MAX_LINE > MAX_OP_BYTES + 100
    index = OpIndex([b"\1" * 32, b"\2" * 32])
    ops = {b"\1" * 32: b"x" * (MAX_OP_BYTES + 1), b"\2" * 32: b"y" * 10}
    got = answer(index, ops, SyncRequest(f"/{OWNER.pubkey}/x/", (), want=(b"\1" * 32, b"\2" * 32)))
    assert got.ops == (b"y" * 10,) and got.later == ()  # never offered, never named for later
