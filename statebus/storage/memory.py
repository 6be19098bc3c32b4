"""MemoryStorage: the storage interface over plain dicts, for tests and throwaway nodes.

It keeps every rule of :mod:`statebus.storage.base` except durability: nothing survives
``close`` or the process. One lock guards every method, so it is safe from several threads.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

from statebus.errors import NotFound, VersionConflict
from statebus.storage.base import KeyRecord, Snapshot, StoredOp
from statebus.storage.ranges import check_batch, matches, walk_children
from statebus.types import Key, Seq, Version


class MemoryStorage:
    """A non-durable :class:`~statebus.storage.base.Storage` held in memory.

    >>> store = MemoryStorage()
    >>> store.append([StoredOp(seq=1, key="/ns/a", version="1-x", data=b"op")])
    >>> store.children("/ns/", after="", limit=10)
    ['a']
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: dict[Seq, StoredOp] = {}
        """Every stored op by sequence number; insertion order is sequence order."""
        self._by_key: dict[Key, dict[Version, StoredOp]] = {}
        """The stored ops of each key by version, in sequence order."""
        self._snapshots: dict[Key, Snapshot] = {}
        self._exists: dict[Key, bool] = {}
        """Every key ever written, and whether its latest op left it holding a value."""
        self._live: list[Key] = []
        """The keys that currently exist, sorted: serves ``children``."""
        self._max_seq: Seq = 0

    def append(self, batch: Sequence[StoredOp]) -> None:
        """Store a batch of ops; all or nothing.

        Raises:
            VersionConflict: a ``(key, version)`` is already stored or repeats in the batch.
            InvalidOp: sequence numbers do not increase.
        """
        with self._lock:
            check_batch(batch, self._max_seq)
            for op in batch:
                if op.version in self._by_key.get(op.key, {}):
                    raise VersionConflict(f"version {op.version!r} of {op.key!r} is already stored")
            for op in batch:
                self._ops[op.seq] = op
                self._by_key.setdefault(op.key, {})[op.version] = op
                self._set_exists(op.key, op.exists)
                self._max_seq = op.seq

    def load(self, key: Key) -> KeyRecord | None:
        """The snapshot and later ops of ``key``; None if it was never written."""
        with self._lock:
            if key not in self._exists:
                return None
            ops = sorted(self._by_key.get(key, {}).values(), key=lambda op: op.seq)
            return KeyRecord(snapshot=self._snapshots.get(key), ops=ops)

    def scan(self, pattern: str, after: Seq, limit: int) -> list[StoredOp]:
        """Ops with ``seq > after`` whose key matches ``pattern``, in sequence order."""
        if limit <= 0:
            return []
        with self._lock:
            if pattern and not pattern.endswith("/"):
                ops = self._by_key.get(pattern, {}).values()
                return sorted((op for op in ops if op.seq > after), key=lambda op: op.seq)[:limit]
            found: list[StoredOp] = []
            for seq, op in self._ops.items():
                if seq > after and matches(pattern, op.key):
                    found.append(op)
                    if len(found) == limit:
                        break
            return found

    def children(self, prefix: Key, after: str, limit: int) -> list[str]:
        """The names directly under ``prefix`` that hold an existing key (see ``Storage``).

        Raises:
            InvalidKey: ``prefix`` does not end in ``/``.
        """
        with self._lock:
            return walk_children(prefix, after, limit, self._first_live)

    def compact(self, snapshot: Snapshot) -> None:
        """Replace the ops of ``snapshot.key`` up to ``snapshot.seq`` by the snapshot.

        A snapshot older than the one already stored changes nothing; one that says whether its
        key exists starts a key never written.

        Raises:
            NotFound: the key was never written (and the snapshot does not say whether it exists).
        """
        with self._lock:
            if snapshot.key not in self._exists:
                if snapshot.exists is None:
                    raise NotFound(f"cannot compact {snapshot.key!r}: it was never written")
                self._set_exists(snapshot.key, snapshot.exists)
            current = self._snapshots.get(snapshot.key)
            if current is not None and current.seq > snapshot.seq:
                return
            self._snapshots[snapshot.key] = snapshot
            versions = self._by_key.get(snapshot.key, {})
            for version, op in list(versions.items()):
                if op.seq <= snapshot.seq:
                    del versions[version]
                    del self._ops[op.seq]

    def horizon(self, pattern: str) -> Seq:
        """The highest snapshot sequence number among keys matching ``pattern`` (0 if none)."""
        with self._lock:
            if pattern and not pattern.endswith("/"):
                snapshot = self._snapshots.get(pattern)
                return snapshot.seq if snapshot else 0
            return max((s.seq for k, s in self._snapshots.items() if matches(pattern, k)), default=0)

    def max_seq(self) -> Seq:
        """The highest sequence number ever appended (0 when empty)."""
        with self._lock:
            return self._max_seq

    def close(self) -> None:
        """Drop everything: a memory store keeps nothing after close."""
        with self._lock:
            self._ops.clear()
            self._by_key.clear()
            self._snapshots.clear()
            self._exists.clear()
            self._live.clear()

    def _set_exists(self, key: Key, exists: bool) -> None:
        was = self._exists.get(key, False)
        self._exists[key] = exists
        if exists and not was:
            bisect.insort(self._live, key)
        elif was and not exists:
            del self._live[bisect.bisect_left(self._live, key)]

    def _first_live(self, low: str, inclusive: bool, high: str) -> str | None:
        find = bisect.bisect_left if inclusive else bisect.bisect_right
        i = find(self._live, low)
        if i < len(self._live) and self._live[i] < high:
            return self._live[i]
        return None
