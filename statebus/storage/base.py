"""The storage seam: what the bus needs from a durable store, and nothing more.

Adapters are dumb stores of opaque bytes indexed by key, version and node sequence number; the
bus owns every rule about what the bytes mean. ``statebus.testing.storage_suite`` is the
acceptance suite every adapter passes.

Rules every adapter keeps:

1. ``append`` writes a whole batch in one transaction and returns only once it is durable
   (it survives ``kill -9`` of the process). Group commit happens above: the caller batches.
   An adapter whose ``append`` does not fsync (a ``durability`` attribute of ``"process"``) has a
   ``sync()`` making every returned ``append`` survive a power cut; the committer calls it.
2. Sequence numbers are given by the caller, strictly increasing across batches.
3. ``(key, version)`` is unique; appending a duplicate raises ``VersionConflict``, changing nothing.
4. ``compact`` replaces every op of a key with ``seq <= snapshot.seq`` by the snapshot and frees
   their space; ``load`` then returns the snapshot plus the ops after it. A snapshot of a key never
   written is refused (``NotFound``) unless it says whether the key exists (``Snapshot.exists``: a
   base taken from another replica), which then starts the key with it.
5. Methods are called from more than one thread (reads on the event loop, ``append`` and
   ``compact`` in a writer thread); adapters make that safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

from statebus.types import Key, Seq, Version


@dataclass(frozen=True, slots=True)
class StoredOp:
    seq: Seq
    key: Key
    version: Version
    data: bytes
    """The canonical op bytes (``statebus.oplog.encode_op``)."""
    exists: bool = True
    """Whether the key holds a value after this op (False after a delete): drives listings."""


class _StoredOpSlots:
    """The slots of :class:`StoredOp`, writable (:func:`stored_op`)."""

    __slots__ = ("data", "exists", "key", "seq", "version")
    seq: Seq
    key: Key
    version: Version
    data: bytes
    exists: bool


def stored_op(seq: Seq, key: Key, version: Version, data: bytes, exists: bool) -> StoredOp:
    """``StoredOp(seq, key, version, data, exists)`` made ~4× cheaper (the committer makes one per op):
    plain stores into an object with the same slots, which then becomes a StoredOp, as frozen as any
    (``statebus.oplog.events.fresh_op`` does the same for an op)."""
    op = object.__new__(_StoredOpSlots)
    op.seq = seq
    op.key = key
    op.version = version
    op.data = data
    op.exists = exists
    op.__class__ = StoredOp  # type: ignore[assignment]
    return cast(StoredOp, op)


@dataclass(frozen=True, slots=True)
class Snapshot:
    key: Key
    seq: Seq
    """Every op of ``key`` with a sequence number up to this one is folded into ``data``."""
    data: bytes
    """The merge state, opaque to storage."""
    exists: bool | None = None
    """Whether the key holds a value in it: given only for a base from another replica, which may
    start a key this store never saw (rule 4)."""


@dataclass(slots=True)
class KeyRecord:
    snapshot: Snapshot | None
    ops: list[StoredOp] = field(default_factory=list)
    """The ops after the snapshot, in sequence order."""


class Storage(Protocol):
    def append(self, batch: Sequence[StoredOp]) -> None:
        """Store a batch of ops in one durable transaction."""

    def load(self, key: Key) -> KeyRecord | None:
        """The snapshot and later ops of ``key``; None if the key was never written."""

    def scan(self, pattern: str, after: Seq, limit: int) -> list[StoredOp]:
        """Ops with ``seq > after`` whose key matches ``pattern`` (an exact key, a subtree ending
        in ``/`` meaning every key strictly below it, or ``""`` for all), in sequence order."""

    def children(self, prefix: Key, after: str, limit: int) -> list[str]:
        """The names directly under the subtree ``prefix`` that hold at least one existing key,
        sorted, after ``after``: ``"name"`` for a key, ``"name/"`` for a subtree (a name that is
        both appears twice)."""

    def compact(self, snapshot: Snapshot) -> None:
        """Fold the ops of ``snapshot.key`` up to ``snapshot.seq`` into the snapshot; free them."""

    def horizon(self, pattern: str) -> Seq:
        """The highest ``Snapshot.seq`` among keys matching ``pattern`` (0 if none): a resume from a
        cursor below it would miss compacted ops."""

    def max_seq(self) -> Seq:
        """The highest sequence number stored (0 when empty)."""

    def close(self) -> None: ...
