"""What subscribers receive: one :class:`Change` per op applied, or per snapshot sent."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, cast

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


_new = object.__new__
_FIELDS = tuple(f.name for f in fields(Change))
_ChangeSlots: type = type("_ChangeSlots", (), {"__slots__": _FIELDS})
"""The slots of :class:`Change`, in its order, writable (:func:`op_change`); made with ``type()`` so
it stays a plain Python class wherever this module is compiled."""


def _swaps() -> bool:
    """Whether an object of ``_ChangeSlots`` can become a Change (not when Change is compiled, whose
    own constructor is fast anyway)."""
    try:
        probe: Any = _new(_ChangeSlots)
        for name in _FIELDS:
            setattr(probe, name, None)
        probe.__class__ = Change
    except (TypeError, AttributeError):
        return False
    return type(probe) is Change


_SWAPS = _swaps()


def op_change(
    key: Key,
    seq: Seq,
    exists: bool,
    value: Any,
    content_type: str | None,
    version: tuple[Version, ...],
    parents: tuple[Version, ...],
    merge: str,
    op: Op,
    linear: bool,
    peer: str | None,
) -> Change:
    """``Change(key, seq, "op", …, last=True)``, the change of one op applied, made ~4× cheaper: an
    object with the same slots filled by plain stores, then made a :class:`Change` (a frozen
    dataclass sets each field through ``object.__setattr__``; oplog.events.fresh_op does the same)."""
    if not _SWAPS:
        return Change(key, seq, "op", exists, value, content_type, version, parents, merge, op, linear, peer)
    change: Any = _new(_ChangeSlots)
    change.key = key
    change.seq = seq
    change.kind = "op"
    change.exists = exists
    change.value = value
    change.content_type = content_type
    change.version = version
    change.parents = parents
    change.merge = merge
    change.op = op
    change.linear = linear
    change.peer = peer
    change.last = True
    change.__class__ = Change
    return cast(Change, change)
