"""A key's past: what a replica that is behind lacks, and compaction that folds old ops away.

Rules:

1. A resume never skips a change: when the changes asked for were folded into a base snapshot
   (or are too many), it raises :class:`HistoryCompacted` and the caller takes a fresh snapshot.
2. Compaction folds only ops already handed to storage (at or before the ``taken`` cursor), and
   only as many as the key's merge state says may fold (:meth:`MergeState.foldable`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from statebus.bus.changes import Change
from statebus.bus.entry import Entry, encode_snapshot, replay
from statebus.errors import HistoryCompacted
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
    entry.state.compact(folded)
    entry.log.drop(
        {op.version for op in folded},
        entry.log.frontier_of(folded),
        seq,
        remember=entry.state.remembers_folded,
    )
    entry.base = entry.state.encode()
    return Snapshot(key, seq, encode_snapshot(entry))
