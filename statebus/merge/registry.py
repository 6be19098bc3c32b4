"""The merge types a node knows, by name (the ``Merge-Type`` header's value)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from statebus.errors import InvalidOp
from statebus.merge.base import MergeState
from statebus.merge.lww import LwwState
from statebus.merge.yjs import YjsState

MERGE_TYPES: dict[str, Callable[[dict[str, Any] | None], MergeState]] = {
    "lww": LwwState,
    "yjs": YjsState,
}


def default_merge(kind: str) -> str:
    """The merge type a new key gets from its first op when the writer names none: a CRDT update
    makes a ``yjs`` key, anything else an ``lww`` key."""
    return "yjs" if kind == "crdt" else "lww"


def new_state(merge: str) -> MergeState:
    try:
        factory = MERGE_TYPES[merge]
    except KeyError:
        raise InvalidOp(f"unknown merge type {merge!r}; known: {sorted(MERGE_TYPES)}") from None
    return factory(None)


def load_state(merge: str, base: dict[str, Any]) -> MergeState:
    try:
        factory = MERGE_TYPES[merge]
    except KeyError:
        raise InvalidOp(f"unknown merge type {merge!r}") from None
    return factory(base)
