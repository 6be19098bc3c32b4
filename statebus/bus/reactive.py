"""Reactive keys: statebus's reactive functions.

``bus.reactive(pattern, fn)`` makes every key matching ``pattern`` a derived key whose value is
``fn(key, get)``. ``get(other_key)`` reads another key (None if it does not exist) and records
it as an input. When any input changes, the value is recomputed; if it differs, subscribers of the
derived key get a ``derived`` change. Derived keys may read other derived keys; a cycle is cut
at ``MAX_DEPTH`` and reported as an error value. Values are computed on first read and kept
while the node runs; they are not stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from statebus.bus.changes import Change
from statebus.errors import ReactiveTooDeep, StatebusError
from statebus.keys import key_matches
from statebus.types import Key


class KeyReader(Protocol):
    """What reactive keys read of the bus (a Protocol, so this module does not import the bus)."""

    def parse(self, key: str, *, allow_subtree: bool = True) -> Key: ...

    def fetch_or_none(self, key: str, *, durable: bool = False) -> Change | None: ...


Getter = Callable[[str], Any]
ReactiveFn = Callable[[Key, Getter], Any]
MAX_DEPTH = 16


@dataclass(slots=True)
class Computed:
    value: Any
    exists: bool
    generation: int
    deps: set[Key] = field(default_factory=set)


class Reactive:
    def __init__(self, bus: KeyReader) -> None:
        self._bus = bus
        self._fns: list[tuple[str, ReactiveFn]] = []
        self._computed: dict[Key, Computed] = {}
        self._dependents: dict[Key, set[Key]] = {}
        self._generation = 0
        self._depth = 0

    def add(self, pattern: str, fn: ReactiveFn) -> None:
        self._fns.append((pattern, fn))

    def fn_for(self, key: Key) -> ReactiveFn | None:
        for pattern, fn in self._fns:
            if key_matches(pattern, key):
                return fn
        return None

    def get(self, key: Key) -> Computed | None:
        """The derived value of ``key``, computing it on first use; None if no function covers it."""
        if not self._fns:
            return None
        found = self._computed.get(key)
        if found is not None:
            return found
        fn = self.fn_for(key)
        if fn is None:
            return None
        return self._compute(key, fn)

    def _compute(self, key: Key, fn: ReactiveFn) -> Computed:
        deps: set[Key] = set()

        def get(other: str) -> Any:
            k = self._bus.parse(other, allow_subtree=False)
            deps.add(k)
            snap = self._bus.fetch_or_none(k)
            return None if snap is None else snap.value

        old = self._computed.get(key)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ReactiveTooDeep("reactive functions nest too deep (a cycle?)")
            value, exists = fn(key, get), True
        except StatebusError as exc:
            value, exists = {"error": exc.code, "detail": exc.detail}, False
        except Exception as exc:  # a broken function must not break the write that triggered it
            value, exists = {"error": "reactive_failed", "detail": type(exc).__name__}, False
        finally:
            self._depth -= 1
        if old is not None:
            for d in old.deps - deps:
                self._dependents.get(d, set()).discard(key)
        for d in deps:
            self._dependents.setdefault(d, set()).add(key)
        self._generation += 1
        computed = Computed(value, exists and value is not None, self._generation, deps)
        self._computed[key] = computed
        return computed

    def invalidated_by(self, key: Key) -> list[tuple[Key, Computed]]:
        """Recompute the derived keys that read ``key``; return those whose value changed."""
        out: list[tuple[Key, Computed]] = []
        for dependent in sorted(self._dependents.get(key, ())):
            fn = self.fn_for(dependent)
            old = self._computed.get(dependent)
            if fn is None or old is None:
                continue
            new = self._compute(dependent, fn)
            if new.value != old.value or new.exists != old.exists:
                out.append((dependent, new))
        return out
