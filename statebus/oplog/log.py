"""The op log of one key: which versions it holds, its frontier, and what a resume needs.

Rules:

1. The log holds the ops since the key's base snapshot, in the order this replica stored them
   (node sequence number). The snapshot keeps ``base_frontier``: the frontier of the folded ops.
2. The frontier is the set of versions no known op names as a parent.
3. ``since(parents)`` answers "what does a replica that has ``parents`` lack?": every op that is not
   an ancestor of ``parents``. If ``parents`` reach below the base (into compacted history), and are
   not exactly the base frontier, it raises :class:`HistoryCompacted`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from statebus.errors import HistoryCompacted
from statebus.oplog.events import Op
from statebus.types import Seq, Version


class OpLog:
    __slots__ = ("_ops", "_referenced", "base_frontier", "base_seq", "clock", "frontier")

    def __init__(self, base: dict[str, Any] | None = None) -> None:
        self._ops: dict[Version, tuple[Seq, Op]] = {}
        self._referenced: set[Version] = set()
        self.base_frontier: tuple[Version, ...] = ()
        self.base_seq: Seq = 0
        self.clock = 0
        if base:
            self.base_frontier = tuple(base.get("frontier", ()))
            self.base_seq = int(base.get("seq", 0))
            self.clock = int(base.get("clock", 0))
        self.frontier: set[Version] = set(self.base_frontier)

    def __len__(self) -> int:
        return len(self._ops)

    def __contains__(self, version: object) -> bool:
        return version in self._ops

    def get(self, version: Version) -> tuple[Seq, Op] | None:
        return self._ops.get(version)

    def ops(self) -> list[tuple[Seq, Op]]:
        """Every op since the base, in sequence order."""
        return sorted(self._ops.values(), key=lambda item: item[0])

    def add(self, op: Op, seq: Seq) -> None:
        self._ops[op.version] = (seq, op)
        for p in op.parents:
            self._referenced.add(p)
            self.frontier.discard(p)
        if op.version not in self._referenced:
            self.frontier.add(op.version)
        if op.clock > self.clock:
            self.clock = op.clock

    def sorted_frontier(self) -> tuple[Version, ...]:
        return tuple(sorted(self.frontier))

    def ancestors(self, versions: Iterable[Version]) -> set[Version] | None:
        """Every version reachable from ``versions`` inside the log, or None if one of them (or an
        ancestor) is unknown and not part of the base frontier."""
        seen: set[Version] = set()
        stack = list(versions)
        base = set(self.base_frontier)
        while stack:
            v = stack.pop()
            if v in seen:
                continue
            seen.add(v)
            item = self._ops.get(v)
            if item is None:
                if v in base:
                    continue
                return None
            stack.extend(item[1].parents)
        return seen

    def since(self, parents: Iterable[Version]) -> list[tuple[Seq, Op]]:
        parents = tuple(parents)
        known = self.ancestors(parents)
        if known is None:
            raise HistoryCompacted(
                "the versions given as parents are not in this key's history (unknown or compacted)"
            )
        if self.base_frontier and not set(self.base_frontier) <= known:
            # the client's state is older than our base snapshot
            raise HistoryCompacted("the history after those parents was compacted")
        return [item for item in self.ops() if item[1].version not in known]

    def drop(self, versions: set[Version], frontier: tuple[Version, ...], seq: Seq) -> None:
        """Forget folded ops: they now live in the base snapshot."""
        for v in versions:
            self._ops.pop(v, None)
        self.base_frontier = frontier
        self.base_seq = seq
        self._referenced = {p for _, op in self._ops.values() for p in op.parents}

    def frontier_of(self, ops: Iterable[Op]) -> tuple[Version, ...]:
        """The frontier of the base plus ``ops`` (what the base will hold after folding them)."""
        ops = list(ops)
        refs = {p for op in ops for p in op.parents}
        front = {v for v in self.base_frontier if v not in refs}
        front |= {op.version for op in ops if op.version not in refs}
        return tuple(sorted(front))

    def encode(self) -> dict[str, Any]:
        return {"frontier": list(self.base_frontier), "seq": self.base_seq, "clock": self.clock}
