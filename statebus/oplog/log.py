"""The op log of one key: which versions it holds, its frontier, and what a resume needs.

Rules:

1. The log holds the ops since the key's base snapshot, in the order this replica stored them
   (node sequence number). The snapshot keeps ``base_frontier``: the frontier of the folded ops.
2. The frontier is the set of versions no known op names as a parent.
3. ``since(parents)`` answers "what does a replica that has ``parents`` lack?": every op that is not
   an ancestor of ``parents``. If ``parents`` reach below the base (into compacted history), and are
   not exactly the base frontier, it raises :class:`HistoryCompacted`.
4. Compaction keeps the frontier exact: a version that a folded op named as a parent but that
   this replica has not seen yet stays "referenced" (``pending``), so when it arrives it does not
   reappear in the frontier. When asked (``remember=True``, merge types whose late ops still
   apply, like yjs), the log also remembers the folded versions so a re-sent op is recognised:
   the newest ``keep_folded`` of them, in the order they were folded (bounded: a key compacted
   forever keeps a window, not ~30 bytes per op ever written). The window is what a peer may still
   re-send: the ops its own history still holds (``history.fold`` sizes it from ``keep``).
5. The log knows its horizon: a version is *known* (:meth:`knows`) when it is in the log, in the
   base frontier, folded, or a folded parent of an op still in the log (``below``). A parent that
   is none of these is history this replica never had (compacted at the owner before this replica
   saw it). ``gap`` records that a base was folded from such an incomplete history.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from statebus.errors import HistoryCompacted
from statebus.oplog.events import Op
from statebus.types import Seq, Version

KEEP_FOLDED: Final = 4096
"""How many folded versions a log remembers when ``drop`` is not told (rule 4)."""


class OpLog:
    __slots__ = (
        "_below",
        "_folded",
        "_ops",
        "_pending",
        "_referenced",
        "base_frontier",
        "base_seq",
        "clock",
        "frontier",
        "gap",
    )

    def __init__(self, base: dict[str, Any] | None = None) -> None:
        self._ops: dict[Version, tuple[Seq, Op]] = {}
        self._referenced: set[Version] = set()
        self.base_frontier: tuple[Version, ...] = ()
        self.base_seq: Seq = 0
        self._folded: dict[Version, None] = {}
        """The remembered folded versions, oldest first (an ordered set)."""
        self._pending: set[Version] = set()
        self._below: set[Version] = set()
        self.gap = False
        """Whether the base was folded from a history with a gap (rule 5)."""
        self.clock = 0
        if base:
            self.base_frontier = tuple(base.get("frontier", ()))
            self.base_seq = int(base.get("seq", 0))
            self.clock = int(base.get("clock", 0))
            self._pending = set(base.get("pending", ()))
            self._referenced = set(self._pending)
            self._folded = dict.fromkeys(base.get("folded", ()))
            self._below = set(base.get("below", ()))
            self.gap = bool(base.get("gap", False))
        self.frontier: set[Version] = set(self.base_frontier)

    def __len__(self) -> int:
        return len(self._ops)

    def __contains__(self, version: object) -> bool:
        return version in self._ops

    def folded(self, version: Version) -> bool:
        """Whether ``version`` was folded into the base by a compaction that remembered it."""
        return version in self._folded

    def knows(self, version: Version) -> bool:
        """Whether ``version`` is in this replica's history of the key, kept or folded (rule 5)."""
        return (
            version in self._ops
            or version in self.base_frontier
            or version in self._below
            or version in self._folded
        )

    def unseen(self) -> set[Version]:
        """Versions named as parents of folded ops that this replica has not seen yet."""
        return {v for v in self._pending if not self.knows(v)}

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

    def drop(
        self,
        versions: set[Version],
        frontier: tuple[Version, ...],
        seq: Seq,
        *,
        remember: bool = False,
        keep_folded: int = KEEP_FOLDED,
    ) -> None:
        """Forget folded ops: they now live in the base snapshot.

        Versions named as parents but never seen stay referenced (see rule 4); with ``remember``
        the newest ``keep_folded`` folded versions are kept so :meth:`folded` recognises them later.
        """
        refs = set(self._pending)
        order = sorted(versions, key=lambda v: self._ops[v][0] if v in self._ops else 0)
        for v in versions:
            item = self._ops.pop(v, None)
            if item is not None:
                refs.update(item[1].parents)
        self.base_frontier = frontier
        self.base_seq = seq
        if remember:
            self._folded.update(dict.fromkeys(order))
        # a parent of a folded op that is still in the log, or (when remembering) not seen yet;
        # an unseen parent of a folded lww op sorts below the horizon, so it can never apply
        self._pending = {
            p for p in refs if p not in versions and p not in self._folded and (remember or p in self._ops)
        }
        self._referenced = {p for _, op in self._ops.values() for p in op.parents} | self._pending
        below = self._below | versions
        self._below = {p for p in self._referenced if p in below}
        excess = len(self._folded) - max(0, keep_folded)  # after the sets above used the whole window
        if excess > 0:
            for v in list(self._folded)[:excess]:
                del self._folded[v]

    def frontier_of(self, ops: Iterable[Op]) -> tuple[Version, ...]:
        """The frontier of the base plus ``ops`` (what the base will hold after folding them)."""
        ops = list(ops)
        refs = {p for op in ops for p in op.parents}
        front = {v for v in self.base_frontier if v not in refs}
        # an op that an earlier-folded op names as parent (it arrived late) is not a head either
        front |= {op.version for op in ops if op.version not in refs and op.version not in self._pending}
        return tuple(sorted(front))

    def encode(self) -> dict[str, Any]:
        """The base as JSON-able data (what a snapshot stores)."""
        d: dict[str, Any] = {"frontier": list(self.base_frontier), "seq": self.base_seq, "clock": self.clock}
        if self._pending:
            d["pending"] = sorted(self._pending)
        if self._folded:
            d["folded"] = list(self._folded)  # oldest first: the window survives a reload
        if self._below:
            d["below"] = sorted(self._below)
        if self.gap:
            d["gap"] = True
        return d
