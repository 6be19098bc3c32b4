"""The seam every merge type fills.

Rules:

1. A merge state is a pure function of the set of ops applied to it since its base snapshot:
   any order of the same ops gives the same ``value``/``exists``/``content_type``.
2. ``check`` raises (InvalidRange, InvalidOp, InvalidValue) when a *local* write could not apply
   to the current value, so the writer gets a 4xx and nothing is stored; ``apply`` never raises
   for an op that passed validation (an external op that no longer applies is a no-op).
3. ``compact(ops)`` folds a prefix of the ops into the base and ``encode`` returns the base as
   bytes; ``MergeState`` types never see storage or the network.
4. Everything the bus must know of a merge type it asks the state (``check_remote``, ``horizon``,
   ``foldable``, ``remembers_folded``): the bus never branches on a merge type's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from statebus.oplog.events import Op

Order = tuple[int, str, str]
"""``Op.order``: (Lamport clock, author, version), the same total order on every replica."""


class MergeState(Protocol):
    name: str
    remembers_folded: bool
    """Whether the op log keeps the versions compaction folded, to recognise them when they come
    again (yjs); a state that ignores ops behind its :attr:`horizon` (lww) needs no such set."""
    rebases: frozenset[str]
    """Op kinds whose value does not depend on the ops ordered before them (lww's ``set`` and
    ``delete``): a replica that lacks only older history still has the right value after one."""

    @property
    def exists(self) -> bool: ...

    @property
    def value(self) -> Any:
        """The current value: JSON, or bytes when ``content_type`` is set."""

    @property
    def content_type(self) -> str | None: ...

    @property
    def horizon(self) -> Order | None:
        """The order of the last op folded into the base when the fold follows that order (lww):
        an op at or below it can no longer be placed, so the bus ignores it. None: every op applies."""

    def check(self, op: Op) -> None:
        """Raise if the local op ``op`` cannot apply on top of the current value."""

    def check_size(self, op: Op, limit: int) -> None:
        """Raise TooLarge if the local ``crdt`` op ``op`` would grow the state over ``limit`` bytes
        (a document's cap; ops from outside are never refused for size: replicas must converge)."""

    def check_remote(self, op: Op) -> None:
        """Raise if the op ``op`` from outside is malformed for this merge type. Unlike
        :meth:`check` it need not apply to *this* value: it may be concurrent with it."""

    def foldable(self, ops_by_seq: Sequence[Op], keep: int) -> int:
        """How many of the oldest ``ops_by_seq`` (already applied, in seq order) compaction may fold
        into the base while at least ``keep`` stay in the log (0 or less: none)."""

    def apply(self, op: Op) -> bool:
        """Fold ``op`` in; return whether it was applied on top of every op before it (in order)."""

    def compact(self, ops: Sequence[Op]) -> None:
        """Fold ``ops`` (already applied) into the base; they will be dropped from the log."""

    def encode(self) -> dict[str, Any]:
        """The base snapshot as canonical-JSON-able data."""
