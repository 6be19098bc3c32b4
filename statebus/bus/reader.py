"""What code that follows keys needs of the bus, as a Protocol: :class:`~statebus.bus.Bus` and the
runtime's ``Node`` both have it, so access policies and federation rules read either (tests give a
bare bus; the node's transports give the node, never its bus)."""

from __future__ import annotations

from typing import Protocol

from statebus.bus.changes import Change
from statebus.bus.subscriptions import Callback, Subscription
from statebus.types import Key


class KeyReader(Protocol):
    @property
    def local(self) -> str:
        """This node's namespace (its owner's public key)."""
        ...

    def fetch_or_none(self, key: str, *, durable: bool = False) -> Change | None:
        """The state of ``key``, None if it never existed."""
        ...

    def walk(self, prefix: Key, limit: int) -> list[Key]:
        """Up to ``limit`` keys under ``prefix``."""
        ...

    def observe(self, pattern: str, callback: Callback) -> Subscription:
        """Call ``callback`` with the current state of ``pattern``, then with every change."""
        ...
