"""The per-key op log: frontier, ancestors, since() and compaction."""

from __future__ import annotations

import pytest

from statebus.errors import HistoryCompacted
from statebus.oplog import Op
from statebus.oplog.log import OpLog

KEY = "/" + "a" * 51 + "q/x"


def mk(version: str, *parents: str, clock: int = 1) -> Op:
    return Op(KEY, version, tuple(parents), "a" * 51 + "q", clock, "lww", "set", version)


#   a ─ b ─ d
#    └─ c ─┘ └ e
OPS = [
    mk("a"),
    mk("b", "a", clock=2),
    mk("c", "a", clock=2),
    mk("d", "b", "c", clock=3),
    mk("e", "d", clock=4),
]


def log_of(ops: list[Op]) -> OpLog:
    log = OpLog()
    for i, o in enumerate(ops, 1):
        log.add(o, i)
    return log


def test_frontier_linear_and_concurrent() -> None:
    log = OpLog()
    assert log.sorted_frontier() == ()
    log.add(OPS[0], 1)
    assert log.sorted_frontier() == ("a",)
    log.add(OPS[1], 2)
    log.add(OPS[2], 3)
    assert log.sorted_frontier() == ("b", "c")
    log.add(OPS[3], 4)
    assert log.sorted_frontier() == ("d",)
    assert log.clock == 3
    assert len(log) == 4 and "a" in log and "e" not in log


def test_frontier_does_not_depend_on_arrival_order() -> None:
    import itertools

    fronts = {log_of(list(p)).sorted_frontier() for p in itertools.permutations(OPS)}
    assert fronts == {("e",)}
    fronts = {log_of(list(p)).sorted_frontier() for p in itertools.permutations(OPS[:3])}
    assert fronts == {("b", "c")}


def test_ancestors() -> None:
    log = log_of(OPS)
    assert log.ancestors(["d"]) == {"a", "b", "c", "d"}
    assert log.ancestors(["b"]) == {"a", "b"}
    assert log.ancestors([]) == set()
    assert log.ancestors(["zzz"]) is None
    partial = log_of([OPS[1]])  # b arrived, its parent a did not
    assert partial.ancestors(["b"]) is None


def test_since() -> None:
    log = log_of(OPS)
    assert [o.version for _, o in log.since([])] == ["a", "b", "c", "d", "e"]
    assert [o.version for _, o in log.since(["b"])] == ["c", "d", "e"]
    assert [o.version for _, o in log.since(["b", "c"])] == ["d", "e"]
    assert log.since(["e"]) == []
    assert [s for s, _ in log.since(["a"])] == [2, 3, 4, 5]
    with pytest.raises(HistoryCompacted):
        log.since(["nope"])


def test_since_after_compaction() -> None:
    log = log_of(OPS)
    folded = OPS[:3]
    log.drop({o.version for o in folded}, log.frontier_of(folded), 3)
    assert log.base_frontier == ("b", "c")
    assert log.sorted_frontier() == ("e",)
    assert [o.version for _, o in log.since(["b", "c"])] == ["d", "e"]
    assert [o.version for _, o in log.since(["d"])] == ["e"]
    for old in (["a"], ["b"], [], ["c"]):
        with pytest.raises(HistoryCompacted):
            log.since(old)


def test_base_round_trip_keeps_frontier_and_clock() -> None:
    log = log_of(OPS)
    log.drop({"a", "b", "c"}, log.frontier_of(OPS[:3]), 3)
    again = OpLog(log.encode())
    for i, o in enumerate(OPS[3:], 4):
        again.add(o, i)
    assert again.sorted_frontier() == log.sorted_frontier() == ("e",)
    assert again.clock == 4
    assert again.base_seq == 3


def test_compaction_keeps_references_to_versions_not_seen_yet() -> None:
    # d names b and c as parents; c has not arrived when d is folded away (a yjs-style log that
    # remembers folded versions: late ops still apply there)
    log = log_of([OPS[0], OPS[1], OPS[3]])
    folded = [OPS[0], OPS[1], OPS[3]]
    log.drop({o.version for o in folded}, log.frontier_of(folded), 3, remember=True)
    reloaded = OpLog(log.encode())
    log.add(OPS[2], 4)  # c arrives late
    assert log.sorted_frontier() == ("d",)
    reloaded.add(OPS[2], 4)
    assert reloaded.sorted_frontier() == ("d",)
    replay = OpLog(log.encode())  # what Bus._replay does: the base, then every op again
    replay.add(OPS[2], 4)
    assert replay.sorted_frontier() == ("d",)


def test_compaction_keeps_references_to_versions_still_in_the_log() -> None:
    # c (seq 1) is kept, d (which names c) is folded: c must not come back into the frontier
    ops = [OPS[2], OPS[0], OPS[1], OPS[3]]
    log = OpLog()
    log.add(ops[0], 3)
    for i, o in enumerate(ops[1:], 1):
        log.add(o, i)
    folded = [OPS[0], OPS[1], OPS[3]]
    log.drop({o.version for o in folded}, log.frontier_of(folded), 2)
    assert log.sorted_frontier() == ("d",)
    replay = OpLog(log.encode())
    replay.add(OPS[2], 3)
    assert replay.sorted_frontier() == ("d",)


def test_remembered_folded_versions() -> None:
    log = log_of(OPS)
    log.drop({"a", "b"}, log.frontier_of(OPS[:2]), 2, remember=True)
    assert log.folded("a") and log.folded("b") and not log.folded("c")
    assert OpLog(log.encode()).folded("a")
    plain = log_of(OPS)
    plain.drop({"a"}, plain.frontier_of(OPS[:1]), 1)
    assert not plain.folded("a")


def test_remembered_folded_versions_are_a_bounded_window() -> None:
    """A key compacted forever remembers the newest ``keep_folded`` folded versions, not ~30 bytes
    per op ever written; the window survives a reload in its order (issue 18, defect 1)."""
    log = OpLog()
    chain = [mk(f"v{i}", *([f"v{i - 1}"] if i else []), clock=i + 1) for i in range(200)]
    for i, op in enumerate(chain):
        log.add(op, i + 1)
        if i % 20 == 19:  # fold all but the last op, as compaction does
            folded = [o for o in chain[:i] if o.version in log]
            log.drop({o.version for o in folded}, log.frontier_of(folded), i, remember=True, keep_folded=30)
            assert len(log.encode().get("folded", [])) <= 30
    assert log.folded("v198") and log.folded("v169") and not log.folded("v10")
    assert not log.unseen() and log.knows("v198")  # the parent of the kept op is still known
    reloaded = OpLog(log.encode())
    assert reloaded.encode()["folded"] == log.encode()["folded"] and reloaded.folded("v198")
