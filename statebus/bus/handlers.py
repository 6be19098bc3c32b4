"""Key handlers: statebus's ``to_fetch`` / ``to_save`` / ``to_delete`` / ``on_save`` slots.

Later layers (hosted apps, federation) hook into storage through them:

* ``to_fetch(key) -> value | None`` answers a read instead of the store (None: fall through);
* ``to_save(op) -> Op | None`` sees every op (local or remote) before it is applied, and may raise
  a :class:`StatebusError` to reject it or return a replacement op;
* ``to_delete(op) -> Op | None`` the same, for deletes;
* ``on_save(change)`` runs after a change was applied (an exception there is recorded on the
  handler as ``last_error``; it cannot undo the write).

A handler is bound to a pattern: an exact key, a subtree ``/ns/a/``, or a prefix ``/ns/posts/*``.
Handlers run in the order they were added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from statebus.bus.changes import Change
from statebus.keys import key_matches
from statebus.oplog.events import Op
from statebus.types import Key

ToFetch = Callable[[Key], Any]
ToSave = Callable[[Op], "Op | None"]
OnSave = Callable[[Change], None]


@dataclass(eq=False)
class Handler:
    pattern: str
    to_fetch: ToFetch | None = None
    to_save: ToSave | None = None
    to_delete: ToSave | None = None
    on_save: OnSave | None = None
    last_error: str | None = None
    """Why the last ``on_save`` call failed (None if it never did)."""


class Handlers:
    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    def add(self, handler: Handler) -> Handler:
        self._handlers.append(handler)
        return handler

    def remove(self, handler: Handler) -> None:
        if handler in self._handlers:
            self._handlers.remove(handler)

    def __bool__(self) -> bool:
        return bool(self._handlers)

    def fetch(self, key: Key) -> tuple[bool, Any]:
        for h in self._handlers:
            if h.to_fetch is not None and key_matches(h.pattern, key):
                value = h.to_fetch(key)
                if value is not None:
                    return True, value
        return False, None

    def before_save(self, op: Op) -> Op:
        for h in self._handlers:
            slot = h.to_delete if op.kind == "delete" else h.to_save
            if slot is not None and key_matches(h.pattern, op.key):
                replaced = slot(op)
                if replaced is not None:
                    op = replaced
        return op

    def after_save(self, change: Change) -> None:
        """Run the ``on_save`` hooks. The change is already applied, so a hook that raises cannot
        undo it: the error is kept on the handler (``last_error``) and the other hooks still run."""
        for h in self._handlers:
            if h.on_save is not None and key_matches(h.pattern, change.key):
                try:
                    h.on_save(change)
                except Exception as exc:
                    h.last_error = f"{type(exc).__name__}: {exc}"
