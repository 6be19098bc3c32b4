"""The set of stored ops under a pattern, as anti-entropy sees it: op hash → canonical bytes.

Reads only durable ops (``Storage.scan``): what a peer is told we hold is on disk. Ops folded into
a compaction snapshot are no longer in the set (see docs/federation.md, "Limits").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from statebus.federation.sync import OpIndex
from statebus.oplog import decode_op, op_hash
from statebus.storage.base import StoredOp
from statebus.types import Seq

SCAN_CHUNK = 5000


class Scanner(Protocol):
    """Where stored ops are read from: a ``Storage``, or the ``Node`` (its ``scan``)."""

    def scan(self, pattern: str, after: Seq, limit: int) -> list[StoredOp]: ...


def scan_all(store: Scanner, pattern: str, after: Seq = 0) -> list[StoredOp]:
    """Every stored op matching ``pattern`` after cursor ``after``, in sequence order."""
    out: list[StoredOp] = []
    while True:
        chunk = store.scan(pattern, after, SCAN_CHUNK)
        out.extend(chunk)
        if len(chunk) < SCAN_CHUNK:
            return out
        after = chunk[-1].seq


@dataclass(frozen=True, slots=True)
class OpSet:
    """The ops under one pattern: an index for summaries and the bytes to send."""

    index: OpIndex
    ops: dict[bytes, bytes]
    keys: dict[bytes, str]
    """The key of each op (to filter what one peer may receive)."""

    @property
    def total_bytes(self) -> int:
        """What sending every op would cost (the "full resend" baseline)."""
        return sum(len(b) for b in self.ops.values())


def op_set(store: Scanner, pattern: str) -> OpSet:
    """The durable ops of ``store`` under ``pattern`` (a subtree)."""
    ops: dict[bytes, bytes] = {}
    keys: dict[bytes, str] = {}
    for stored in scan_all(store, pattern):
        h = op_hash(decode_op(stored.data))
        ops[h] = stored.data
        keys[h] = stored.key
    return OpSet(OpIndex(ops), ops, keys)


def narrowed(found: OpSet, keep: Callable[[str], bool]) -> OpSet:
    """The ops of ``found`` whose key passes ``keep``."""
    ops = {h: b for h, b in found.ops.items() if keep(found.keys[h])}
    return OpSet(OpIndex(ops), ops, {h: found.keys[h] for h in ops})
