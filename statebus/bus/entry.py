"""One key in memory: its merge state, its op log and the base snapshot they grew from.

Also what is computed from an entry alone: its snapshot bytes, and the values after past ops
(what a resume sends); and an entry rebuilt from what storage holds of its key.
"""

from __future__ import annotations

import json
from typing import Any

from statebus.bus.changes import Change
from statebus.merge import MergeState, load_state, new_state
from statebus.oplog.codec import decode_op
from statebus.oplog.log import OpLog
from statebus.storage.base import KeyRecord
from statebus.types import Key, Seq


class Entry:
    """One key in memory: its merge state, its op log and the base they were loaded from."""

    __slots__ = ("base", "gap_at", "gap_reason", "last_seq", "log", "merge", "state")

    def __init__(self, merge: str, state: MergeState, log: OpLog, base: dict[str, Any] | None) -> None:
        self.merge = merge
        self.state = state
        self.log = log
        self.base = base
        self.last_seq: Seq = log.base_seq
        self.gap_at: tuple[Seq, Seq] = (-1, -1)
        """``(last_seq, base_seq)`` when ``gap_reason`` was computed (``history.gap``)."""
        self.gap_reason: str | None = None


def encode_snapshot(entry: Entry) -> bytes:
    """The snapshot bytes storage keeps for a key: merge type, base state and log base."""
    return json.dumps(
        {"merge": entry.merge, "state": entry.state.encode(), "log": entry.log.encode()},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def rebuild(record: KeyRecord) -> Entry | None:
    """The in-memory entry of a key from its stored snapshot and ops (None if it holds neither)."""
    if record.snapshot is not None:
        snap = json.loads(record.snapshot.data)
        merge = snap["merge"]
        base = snap["state"]
        state = load_state(merge, base)
        log = OpLog(snap["log"])
    elif record.ops:
        first = decode_op(record.ops[0].data)
        merge, base, state, log = first.merge, None, new_state(first.merge), OpLog()
    else:
        return None
    entry = Entry(merge, state, log, base)
    for stored in record.ops:
        op = decode_op(stored.data)
        entry.state.apply(op)
        entry.log.add(op, stored.seq)
        entry.last_seq = stored.seq
    return entry


def replay(key: Key, entry: Entry, seqs: list[Seq]) -> list[Change]:
    """Rebuild the value after each of the ops ``seqs`` by folding the log from its base."""
    if not seqs:
        return []
    wanted = set(seqs)
    state = load_state(entry.merge, entry.base) if entry.base else new_state(entry.merge)
    log = OpLog(entry.log.encode())
    out: list[Change] = []
    for seq, op in entry.log.ops():
        before = log.sorted_frontier()
        in_order = state.apply(op)
        log.add(op, seq)
        if seq in wanted:
            out.append(
                Change(
                    key,
                    seq,
                    "op",
                    state.exists,
                    state.value,
                    state.content_type,
                    log.sorted_frontier(),
                    before,
                    entry.merge,
                    op,
                    linear=in_order and op.parents == before,
                )
            )
    return out
