"""A key's past: what a replica that is behind lacks, and compaction that folds old ops away.

Rules:

1. A resume never skips a change: when the changes asked for were folded into a base snapshot
   (or are too many), it raises :class:`HistoryCompacted` and the caller takes a fresh snapshot.
2. Compaction folds only ops already handed to storage (at or before the ``taken`` cursor), and
   only as many as the key's merge state says may fold (:meth:`MergeState.foldable`).
3. A replica never claims a state it cannot rebuild: when an op it holds names a parent it never
   had (the owner compacted that history before this replica saw it), the key has a *gap*
   (:func:`gap`) unless a later op of a kind that rebases the value (:attr:`MergeState.rebases`:
   lww's ``set``/``delete``) orders after every op at the gap. Folding keeps the gap in the base.
4. A past version is rebuilt from the base and the log's ops it descends from, never guessed: a
   version that is not in the log (compacted, or whose history reaches below the base on a
   branch the base folded) raises :class:`HistoryCompacted` with the horizon; one that this key
   never had raises :class:`NotFound`. The current frontier is the current state.
5. A base the owner signed (a subtree snapshot, ``statebus.federation.subtree``) replaces a key's
   base (:func:`rebased`): the ops this replica holds that it folded are dropped, the others stay
   on top of it (or, when the two are interleaved or this replica had compacted the key itself,
   all are dropped and come back through anti-entropy: they are the owner's); later ops the base
   folded are recognised as on the owner (its folded versions, its horizon). A base of another
   merge type is refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from statebus.bus.changes import Change
from statebus.bus.entry import Entry, encode_snapshot, replay
from statebus.errors import BadSnapshot, HistoryCompacted, NotAcceptable, NotFound
from statebus.merge import MergeState, load_state, new_state
from statebus.merge.base import Order
from statebus.merge.yjs import YjsState, merged_updates
from statebus.oplog.events import Op
from statebus.oplog.log import OpLog
from statebus.storage.base import Snapshot, StoredOp
from statebus.types import Key, Seq, Version

EntryOf = Callable[[Key], Entry | None]


def missing_versions(key: Key, entry: Entry | None, parents: Sequence[Version]) -> list[Change]:
    """The changes a replica holding ``parents`` of ``key`` lacks, in order (rule 1)."""
    if entry is None:
        if parents:
            raise HistoryCompacted(f"{key} has no history for those parents")
        return []
    missing = entry.log.since(parents)
    return replay(key, entry, [s for s, _ in missing])


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """One op of a key's history listing."""

    seq: Seq
    version: Version
    parents: tuple[Version, ...]
    author: str
    clock: int
    kind: str


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of a key's history (oldest first) and the horizon below which it was compacted."""

    key: Key
    versions: list[VersionRecord]
    horizon_seq: Seq
    horizon_frontier: tuple[Version, ...]
    more: bool


def _gone(key: Key, entry: Entry, what: str) -> HistoryCompacted:
    front = ", ".join(entry.log.base_frontier) or "none"
    return HistoryCompacted(
        f"{what} of {key} is not in its history: compacted below the horizon "
        f"(seq {entry.log.base_seq}, frontier {front})"
    )


def _rebuilt(
    key: Key, entry: Entry | None, versions: Sequence[Version], upto: Seq | None
) -> tuple[MergeState, Seq]:
    """The merge state of ``key`` at the frontier ``versions`` rebuilt from its base (rule 4), and
    the cursor of the last op it holds."""
    if entry is None:
        raise NotFound(f"no value at {key}")
    wanted = tuple(sorted(set(versions)))
    log = entry.log
    known = log.ancestors(wanted)
    if known is None:  # a version, or an ancestor of one, is not in the log
        if log.base_seq:
            raise _gone(key, entry, "the state at that version")
        raise NotFound(f"{key} has no state at version {', '.join(wanted)} (unknown, or its parents are)")
    if log.base_frontier and not set(log.base_frontier) <= known:
        raise _gone(key, entry, "the state at that version")
    state = load_state(entry.merge, entry.base) if entry.base else new_state(entry.merge)
    seq = log.base_seq
    for s, op in log.ops():
        if op.version in known:
            if upto is not None and s > upto:
                raise NotFound(f"{key} has no stored state at version {', '.join(wanted)} yet")
            state.apply(op)
            seq = s
    if not state.exists:
        raise NotFound(f"no value at {key} at that version")
    return state, seq


def state_at(key: Key, entry: Entry | None, versions: Sequence[Version], upto: Seq | None = None) -> Change:
    """The state of ``key`` at the version frontier ``versions`` (rule 4), from ops stored at or
    before cursor ``upto`` (None: every op in the log).

    Raises:
        NotFound: the key has no history, or never had one of ``versions``.
        HistoryCompacted: that state was folded away (its detail names the horizon).
    """
    state, seq = _rebuilt(key, entry, versions, upto)
    wanted = tuple(sorted(set(versions)))
    assert entry is not None
    return Change(key, seq, "snapshot", True, state.value, state.content_type, wanted, (), entry.merge)


def _yjs(key: Key, entry: Entry | None) -> Entry:
    if entry is None:
        raise NotFound(f"no value at {key}")
    if entry.merge != "yjs":
        raise NotAcceptable(f"{key} is a {entry.merge} key: it has a JSON view, not Yjs updates")
    return entry


def yjs_update_at(
    key: Key, entry: Entry | None, versions: Sequence[Version], upto: Seq | None = None
) -> bytes:
    """The Yjs document of ``key`` at the frontier ``versions`` as one update (rule 4: the current
    state when they are its frontier, else rebuilt from the base and the log).

    Raises:
        NotAcceptable: ``key`` is not a Yjs key.
        NotFound, HistoryCompacted: as :func:`state_at`.
    """
    entry = _yjs(key, entry)
    state = entry.state
    if tuple(sorted(set(versions))) != entry.log.sorted_frontier() or not state.exists:
        state = _rebuilt(key, entry, versions, upto)[0]
    assert isinstance(state, YjsState)
    return state.state_update()


def yjs_updates_after(
    key: Key, entry: Entry | None, parents: Sequence[Version], upto: Seq | None = None
) -> bytes:
    """The Yjs updates of ``key`` a replica holding the versions ``parents`` lacks, merged into one
    (of the ops stored at or before ``upto``); an empty update when it lacks none (rules 1 and 4).

    Raises:
        NotAcceptable: ``key`` is not a Yjs key.
        NotFound: ``parents`` names a version this key never had.
        HistoryCompacted: the ops after ``parents`` were folded away (the detail names the horizon).
    """
    entry = _yjs(key, entry)
    log = entry.log
    known = log.ancestors(parents)
    if known is None:
        if log.base_seq:
            raise _gone(key, entry, "the history after those parents")
        raise NotFound(f"{key} has no version {', '.join(parents)} (unknown, or its parents are)")
    if log.base_frontier and not set(log.base_frontier) <= known:
        raise _gone(key, entry, "the history after those parents")
    updates = [
        bytes(op.body)
        for s, op in log.ops()
        if op.version not in known and op.kind == "crdt" and (upto is None or s <= upto)
    ]
    return merged_updates(updates)


def history_page(
    key: Key, entry: Entry | None, after: Seq, limit: int, upto: Seq | None = None
) -> HistoryPage:
    """The ops of ``key`` after cursor ``after`` (and at or before ``upto``), oldest first, at most
    ``limit``."""
    if entry is None:
        raise NotFound(f"no value at {key}")
    items = [(s, op) for s, op in entry.log.ops() if s > after and (upto is None or s <= upto)]
    records = [
        VersionRecord(s, op.version, op.parents, op.author, op.clock, op.kind) for s, op in items[:limit]
    ]
    log = entry.log
    return HistoryPage(key, records, log.base_seq, log.base_frontier, len(items) > limit)


def missing_changes(found: Iterable[StoredOp], entry_of: EntryOf, after: Seq, limit: int) -> list[Change]:
    """The changes of the stored (or waiting) ops ``found`` after cursor ``after``, in seq order,
    rebuilt from each key's log (rule 1)."""
    by_seq = {s.seq: s for s in found}
    if len(by_seq) > limit:
        raise HistoryCompacted(f"more than {limit} changes since cursor {after}; take a fresh snapshot")
    by_key: dict[Key, list[Seq]] = {}
    for seq in sorted(by_seq):
        by_key.setdefault(by_seq[seq].key, []).append(seq)
    out: list[Change] = []
    for k, seqs in by_key.items():
        entry = entry_of(k)
        if entry is None or seqs[0] <= entry.log.base_seq:
            raise HistoryCompacted(f"changes of {k} after cursor {after} were compacted")
        out.extend(replay(k, entry, seqs))
    out.sort(key=lambda c: c.seq)
    return out


def gap(key: Key, entry: Entry) -> str | None:
    """Why this replica cannot rebuild ``key`` from the ops it holds (rule 3), or None."""
    log = entry.log
    if entry.gap_at == (entry.last_seq, log.base_seq):
        return entry.gap_reason
    rebases = entry.state.rebases
    top: Order | None = None  # the last op that rebases the value
    edge: Order | None = None  # the last op that names a parent this replica never had
    lacking = ""
    for _, op in log.ops():
        order = op.order
        if op.kind in rebases and (top is None or order > top):
            top = order
        for p in op.parents:
            if not log.knows(p):
                lacking = lacking or p
                edge = order if edge is None or order > edge else edge
    reason: str | None = None
    if (log.gap or log.unseen()) and top is None:
        reason = f"{key} was folded here from a history with a gap (older ops were compacted by its owner)"
    elif edge is not None and (top is None or top < edge):
        reason = (
            f"{key}: the history before version {lacking} was compacted by its owner before this "
            "replica saw it, and the ops it was given cannot rebuild the value"
        )
    entry.gap_at, entry.gap_reason = (entry.last_seq, log.base_seq), reason
    return reason


FOLDED_MARGIN = 64
"""Folded versions a log remembers beyond ``2 * keep`` (see ``OpLog.drop``)."""


def fold(key: Key, entry: Entry, taken: Seq, keep: int) -> Snapshot | None:
    """Fold the oldest ops of ``entry`` into its base, keeping ``keep`` recent ones (rule 2); the
    snapshot storage is to keep, or None when nothing may fold."""
    items = [(s, op) for s, op in entry.log.ops() if s <= taken]
    ops = [op for _, op in items]
    recent = len(entry.log) - len(items)
    n = entry.state.foldable(ops, max(0, keep - recent))
    if n <= 0:
        return None
    folded = ops[:n]
    seq = items[n - 1][0]
    incomplete = gap(key, entry) is not None  # folding adds no history: the base keeps the gap
    entry.state.compact(folded)
    entry.log.drop(
        {op.version for op in folded},
        entry.log.frontier_of(folded),
        seq,
        remember=entry.state.remembers_folded,
        keep_folded=2 * keep + FOLDED_MARGIN,  # what a peer with the same history_keep_ops still holds
    )
    entry.log.gap = incomplete
    entry.base = entry.state.encode()
    return Snapshot(key, seq, encode_snapshot(entry))


def rebased(key: Key, entry: Entry, data: bytes) -> Entry:
    """The entry of ``key`` on another replica's base ``data`` (its stored snapshot bytes, as
    ``encode_snapshot`` wrote them), numbered at this replica's cursors (rule 5).

    The ops this replica holds that the base did not fold stay on top of it when they all come
    after the ones it folded (the usual case: the ops a follower was given are the ones its owner
    kept); otherwise, or when this replica compacted the key itself (the ops it folded are not in
    its log: they would come back after the newer ones it kept), every op is dropped and the
    caller fetches the unfolded ones again, in their order.

    Raises:
        BadSnapshot: ``data`` is not a base of this key's merge type, or does not load.
    """
    try:
        raw = json.loads(data)
        merge, base, log = raw["merge"], raw["state"], raw["log"]
        if merge != entry.merge:
            raise BadSnapshot(f"{key} is a {entry.merge} key here, the snapshot's base is {merge!r}")
        if not isinstance(log, dict):
            raise TypeError("its log base is not an object")
        probe, horizon = OpLog(log), load_state(merge, base).horizon
        folded: list[Seq] = []
        fresh: list[tuple[Seq, Op]] = []
        for s, op in entry.log.ops():
            if (
                probe.folded(op.version)
                or op.version in probe.base_frontier
                or (horizon is not None and op.order <= horizon)
            ):
                folded.append(s)
            else:
                fresh.append((s, op))
        if entry.log.base_seq or (folded and fresh and max(folded) > fresh[0][0]):
            # this replica folded ops of its own (they come back, in order, by anti-entropy), or
            # the two are interleaved (one cursor cannot cut them apart): keep none
            fresh = []
        cut = fresh[0][0] - 1 if fresh else entry.last_seq
        new = Entry(merge, load_state(merge, base), OpLog({**log, "seq": cut, "gap": False}), base)
        for s, op in fresh:
            new.state.apply(op)
            new.log.add(op, s)
    except BadSnapshot:
        raise
    except Exception as exc:  # signed bytes from another node; any failure refuses them
        raise BadSnapshot(f"the base of {key} does not load ({type(exc).__name__})") from None
    new.last_seq = entry.last_seq
    return new
