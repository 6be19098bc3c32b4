"""Synchronous observers: the first tier of subscriptions (the async tier lives in runtime/).

Rules:

1. A subscription watches an exact key or a subtree (``/ns/a/`` = every key strictly below it).
2. Callbacks run synchronously, in sequence order, on the thread that applied the change; a
   callback must not block. A callback that raises is closed with the error as its reason, and the
   other subscribers still get the change.
3. Finding the subscribers of a key costs one dict lookup per ancestor of the key (depth ≤ 32),
   whatever the number of subscriptions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from statebus.bus.changes import Change
from statebus.types import Key

Callback = Callable[[Change], None]


class Subscription:
    """A handle on one observer. ``close()`` stops delivery; ``reason`` says why it ended."""

    __slots__ = ("_registry", "callback", "closed", "pattern", "reason")

    def __init__(self, registry: Subscriptions, pattern: Key, callback: Callback) -> None:
        self._registry = registry
        self.pattern = pattern
        self.callback = callback
        self.closed = False
        self.reason: str | None = None

    def close(self, reason: str | None = None) -> None:
        if not self.closed:
            self.closed = True
            self.reason = reason
            self._registry.remove(self)

    def __repr__(self) -> str:
        state = f"closed: {self.reason}" if self.closed else "open"
        return f"Subscription({self.pattern!r}, {state})"


class Subscriptions:
    def __init__(self) -> None:
        self._by_pattern: dict[Key, list[Subscription]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, pattern: Key, callback: Callback) -> Subscription:
        sub = Subscription(self, pattern, callback)
        self._by_pattern.setdefault(pattern, []).append(sub)
        self._count += 1
        return sub

    def remove(self, sub: Subscription) -> None:
        subs = self._by_pattern.get(sub.pattern)
        if subs and sub in subs:
            subs.remove(sub)
            self._count -= 1
            if not subs:
                del self._by_pattern[sub.pattern]

    def matching(self, key: Key) -> Iterator[Subscription]:
        """Subscribers of ``key``: those on the key itself, then on each enclosing subtree."""
        by = self._by_pattern
        if not by:
            return
        subs = by.get(key)
        if subs:
            yield from list(subs)
        i = key.find("/", 1)
        while i != -1 and i < len(key) - 1:
            subs = by.get(key[: i + 1])
            if subs:
                yield from list(subs)
            i = key.find("/", i + 1)

    def has_any(self, key: Key) -> bool:
        return next(self.matching(key), None) is not None

    def deliver(self, change: Change) -> None:
        for sub in self.matching(change.key):
            if sub.closed:
                continue
            try:
                sub.callback(change)
            except Exception as exc:  # a broken observer must not break the writer
                sub.close(f"observer failed: {type(exc).__name__}: {exc}")

    def close_all(self, reason: str) -> None:
        for subs in list(self._by_pattern.values()):
            for sub in list(subs):
                sub.close(reason)
