"""The seam every merge type fills.

Rules:

1. A merge state is a pure function of the set of ops applied to it since its base snapshot:
   any order of the same ops gives the same ``value``/``exists``/``content_type``.
2. ``check`` raises (InvalidRange, InvalidOp, InvalidValue) when a *local* write could not apply
   to the current value, so the writer gets a 4xx and nothing is stored; ``apply`` never raises
   for an op that passed validation (an external op that no longer applies is a no-op).
3. ``compact(ops)`` folds a prefix of the ops into the base and ``encode`` returns the base as
   bytes; ``MergeState`` types never see storage or the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from statebus.oplog.events import Op


class MergeState(Protocol):
    name: str

    @property
    def exists(self) -> bool: ...

    @property
    def value(self) -> Any:
        """The current value: JSON, or bytes when ``content_type`` is set."""

    @property
    def content_type(self) -> str | None: ...

    def check(self, op: Op) -> None:
        """Raise if the local op ``op`` cannot apply on top of the current value."""

    def apply(self, op: Op) -> bool:
        """Fold ``op`` in; return whether it was applied on top of every op before it (in order)."""

    def compact(self, ops: Sequence[Op]) -> None:
        """Fold ``ops`` (already applied) into the base; they will be dropped from the log."""

    def encode(self) -> dict[str, Any]:
        """The base snapshot as canonical-JSON-able data."""
