"""Last-writer-wins, op by op.

Ops are totally ordered by ``Op.order`` = (Lamport clock, author, version), the same on every
replica. The value is the fold of the base snapshot and every op since, in that order: ``set``
replaces, ``patch`` applies its range patches to the value so far, ``delete`` removes the key.
So concurrent patches to different fields both survive, and concurrent sets resolve to the
greatest order. A patch that does not apply to the value it lands on (its field vanished in a
concurrent write) is skipped on every replica alike.

An op that sorts at or below the base's horizon (it arrived after compaction folded ops that
order after it) cannot be placed in the fold any more: the bus ignores it (it is not stored and
does not enter the frontier). So replicas converge whatever the arrival order as long as no op
reaches a replica after that replica compacted past it (see docs/merge.md).
"""

from __future__ import annotations

import base64
from bisect import insort
from collections.abc import Sequence
from typing import Any

from statebus.errors import InvalidOp, StatebusError
from statebus.merge.base import Order
from statebus.oplog.events import Op
from statebus.values import apply_patches, parse_range


def _fold(exists: bool, value: Any, ctype: str | None, op: Op) -> tuple[bool, Any, str | None]:
    if op.kind == "set":
        return True, op.body, op.content_type
    if op.kind == "delete":
        return False, None, None
    if op.kind == "patch":
        if not exists or ctype is not None:
            raise InvalidOp("a patch needs an existing JSON value")
        return True, apply_patches(value, op.body), None
    raise InvalidOp(f"lww keys take set, patch and delete ops, not {op.kind!r}")


class LwwState:
    name = "lww"
    remembers_folded = False  # an op folded away sorts at or below the horizon
    rebases = frozenset({"set", "delete"})

    def __init__(self, base: dict[str, Any] | None = None) -> None:
        self._base_exists = False
        self._base_value: Any = None
        self._base_ctype: str | None = None
        self._horizon: Order | None = None
        if base:
            self._base_exists = bool(base["exists"])
            self._base_ctype = base.get("ct")
            if "bb" in base:
                self._base_value = base64.b64decode(base["bb"])
            else:
                self._base_value = base.get("value")
            if base.get("horizon") is not None:
                c, a, v = base["horizon"]
                self._horizon = (int(c), str(a), str(v))
        self._ops: list[tuple[Order, Op]] = []
        self._exists, self._value, self._ctype = self._base_exists, self._base_value, self._base_ctype

    @property
    def exists(self) -> bool:
        return self._exists

    @property
    def horizon(self) -> Order | None:
        """The order of the last op folded into the base: ops at or below it no longer apply."""
        return self._horizon

    @property
    def value(self) -> Any:
        return self._value

    @property
    def content_type(self) -> str | None:
        return self._ctype

    def check(self, op: Op) -> None:
        _fold(self._exists, self._value, self._ctype, op)

    def check_size(self, op: Op, limit: int) -> None:
        pass  # lww values are capped where they enter (max_value_bytes); lww keys take no crdt ops

    def check_remote(self, op: Op) -> None:
        # only the op itself: a concurrent patch that does not apply here is skipped on every replica
        if op.kind not in ("set", "patch", "delete"):
            raise InvalidOp(f"lww keys take set, patch and delete ops, not {op.kind!r}")
        if op.kind == "patch":
            for p in op.body:
                parse_range(p.range)

    def apply(self, op: Op) -> bool:
        order = op.order
        if self._horizon is not None and order <= self._horizon:
            return False
        if not self._ops or order > self._ops[-1][0]:
            self._ops.append((order, op))
            self._exists, self._value, self._ctype = self._step(self._exists, self._value, self._ctype, op)
            return True
        insort(self._ops, (order, op), key=lambda item: item[0])
        self._replay()
        return False

    @staticmethod
    def _step(exists: bool, value: Any, ctype: str | None, op: Op) -> tuple[bool, Any, str | None]:
        try:
            return _fold(exists, value, ctype, op)
        except StatebusError:
            return exists, value, ctype

    def _replay(self) -> None:
        state = (self._base_exists, self._base_value, self._base_ctype)
        for _, op in self._ops:
            state = self._step(*state, op)
        self._exists, self._value, self._ctype = state

    def foldable(self, ops_by_seq: Sequence[Op], keep: int) -> int:
        """How many of the oldest ops (by seq) can fold into the base while keeping at least
        ``keep``: the longest seq-prefix that is also an order-prefix."""
        n = len(ops_by_seq) - keep
        if n <= 0:
            return 0
        suffix_min: list[Order | None] = [None] * (len(ops_by_seq) + 1)
        for i in range(len(ops_by_seq) - 1, -1, -1):
            o = ops_by_seq[i].order
            nxt = suffix_min[i + 1]
            suffix_min[i] = o if nxt is None or o < nxt else nxt
        best = 0
        prefix_max: Order | None = None
        for i in range(n):
            o = ops_by_seq[i].order
            prefix_max = o if prefix_max is None or o > prefix_max else prefix_max
            nxt = suffix_min[i + 1]
            if nxt is None or prefix_max < nxt:
                best = i + 1
        return best

    def compact(self, ops: Sequence[Op]) -> None:
        if not ops:
            return
        folded = {op.version for op in ops}
        state = (self._base_exists, self._base_value, self._base_ctype)
        keep: list[tuple[Order, Op]] = []
        for order, op in self._ops:
            if op.version in folded:
                state = self._step(*state, op)
                self._horizon = order
            else:
                keep.append((order, op))
        self._base_exists, self._base_value, self._base_ctype = state
        self._ops = keep

    def encode(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "exists": self._base_exists,
            "horizon": list(self._horizon) if self._horizon else None,
        }
        if self._base_ctype is not None:
            d["ct"] = self._base_ctype
        if isinstance(self._base_value, bytes | bytearray):
            d["bb"] = base64.b64encode(self._base_value).decode("ascii")
        else:
            d["value"] = self._base_value
        return d
