"""What subscribers receive: one :class:`Change` per op applied, or per snapshot sent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from statebus.oplog.events import Op
from statebus.types import Key, Seq, Version


@dataclass(frozen=True, slots=True)
class Change:
    key: Key
    seq: Seq
    """The node cursor after this change; subscribers resume from it."""
    kind: str
    """``op`` (an op was applied), ``snapshot`` (the current state, sent on subscribe or resync),
    ``derived`` (a reactive key recomputed), or ``revert`` (the durable state of a key again after
    storage refused its newer ops: for in-process caches; event streams ignore it, since they never
    delivered what was dropped)."""
    exists: bool
    value: Any
    """The merged value after the change (JSON, or bytes when ``content_type`` is set)."""
    content_type: str | None
    version: tuple[Version, ...]
    """The key's frontier after the change."""
    parents: tuple[Version, ...]
    """The frontier before the change (empty for snapshots)."""
    merge: str = "lww"
    op: Op | None = None
    linear: bool = False
    """True when ``op`` was applied directly on top of the previous frontier, so forwarding the op
    alone (a patch) reproduces ``value``; otherwise send the value."""
    peer: str | None = None
    """The client that caused it, so a transport can skip echoing it back."""
    last: bool = True
    """False on every snapshot of a batch but the last (only the last one moves a cursor)."""
