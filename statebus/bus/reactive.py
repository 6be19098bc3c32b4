"""Reactive keys: statebus's reactive functions.

``bus.reactive(pattern, fn)`` makes every key matching ``pattern`` a derived key whose value is
``fn(key, get)``. ``get(other_key)`` reads another key (None if it does not exist) and records
it as an input. When any input changes, the value is recomputed; if it differs, subscribers of the
derived key get a ``derived`` change. Derived keys may read other derived keys; a cycle is cut
at ``MAX_DEPTH`` and reported as an error value. Values are computed on first read and kept
while the node runs; they are not stored.

Rules:

1. A derived key is read-only: :meth:`Reactive.covers` tells the bus to refuse writes to it
   (``DerivedKey``, 405), so nothing is stored under a key whose value is computed.
2. A function that raises leaves its key without a value and with its ``error``
   (``ReactiveFailed``, or ``ReactiveTooDeep``): a read answers that error, never a bare
   ``NotFound``; its detail names the key and the exception's class only (messages may hold secrets).
3. Every computed value remembers its inputs (``deps``): access control lets a reader see a
   derived key only if it may read every input (``docs/access-control.md``).
4. Every computed value remembers the cursor of the change that last changed it (``changed``), so
   a subscriber resuming after that cursor is sent the current value (:meth:`Reactive.changed_since`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from statebus.bus.changes import Change
from statebus.errors import ReactiveFailed, ReactiveTooDeep, StatebusError
from statebus.keys import key_matches
from statebus.types import Key, Seq


class KeyReader(Protocol):
    """What reactive keys read of the bus (a Protocol, so this module does not import the bus)."""

    def parse(self, key: str, *, allow_subtree: bool = True) -> Key: ...

    def fetch_or_none(self, key: str, *, durable: bool = False) -> Change | None: ...

    @property
    def seq(self) -> Seq: ...


Getter = Callable[[str], Any]
ReactiveFn = Callable[[Key, Getter], Any]
MAX_DEPTH = 16


@dataclass(slots=True)
class Computed:
    value: Any
    exists: bool
    generation: int
    deps: set[Key] = field(default_factory=set)
    changed: Seq = 0
    """The bus cursor when this value last changed (or was first computed)."""
    error: StatebusError | None = None
    """Why the function gave no value (it raised), or None."""


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

    def remove(self, pattern: str) -> None:
        """Forget the function of ``pattern`` and the values it computed (the keys are plain again)."""
        self._fns = [(p, f) for p, f in self._fns if p != pattern]
        for key in [k for k in self._computed if key_matches(pattern, k)]:
            for d in self._computed.pop(key).deps:
                self._dependents.get(d, set()).discard(key)

    def refresh(self, key: Key) -> Computed | None:
        """Compute ``key`` again now (its function learnt of new inputs outside the bus); the new
        value if it changed, else None. A key never computed yet stays so (a read computes it)."""
        fn, old = self.fn_for(key), self._computed.get(key)
        if fn is None or old is None:
            return None
        new = self._compute(key, fn)
        return new if (new.value, new.exists) != (old.value, old.exists) else None

    def covers(self, key: Key) -> bool:
        """Whether ``key`` is derived (a function covers it): writes to it are refused."""
        return bool(self._fns) and self.fn_for(key) is not None

    def failure(self, key: Key) -> StatebusError | None:
        """Why the function of ``key`` gave no value (a fresh error to raise), or None."""
        found = self._computed.get(key)
        if found is None or found.error is None:
            return None
        return type(found.error)(found.error.detail)

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
        error: StatebusError | None = None
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ReactiveTooDeep("reactive functions nest too deep (a cycle?)")
            value, exists = fn(key, get), True
        except ReactiveTooDeep as exc:
            error = exc
        except Exception as failure:  # a broken function must not break the write that triggered it
            code = failure.code if isinstance(failure, StatebusError) else type(failure).__name__
            error = ReactiveFailed(f"the function of derived key {key} raised {code}")
        finally:
            self._depth -= 1
        if old is not None:
            for d in old.deps - deps:
                self._dependents.get(d, set()).discard(key)
        for d in deps:
            self._dependents.setdefault(d, set()).add(key)
        if error is not None:
            value, exists = {"error": error.code, "detail": error.detail}, False
        self._generation += 1
        computed = Computed(value, exists and value is not None, self._generation, deps, self._bus.seq, error)
        if old is not None and (old.value, old.exists) == (computed.value, computed.exists):
            computed.changed = old.changed
        self._computed[key] = computed
        return computed

    def changed_since(self, pattern: Key, after: Seq) -> list[tuple[Key, Computed]]:
        """The derived keys matching ``pattern`` (a key or a subtree) whose value changed after
        cursor ``after``, with their current value: what a subscriber resuming from ``after`` has
        not seen (derived changes are not in the op log). A derived key never computed here (this
        process started after ``after`` was handed out) counts as changed."""
        if not self._fns:
            return []
        keys = [k for k in self._computed if key_matches(pattern, k)]
        if pattern not in self._computed and self.fn_for(pattern) is not None:
            keys.append(pattern)
        out: list[tuple[Key, Computed]] = []
        for k in sorted(keys):
            fresh = k not in self._computed
            computed = self.get(k)
            if computed is not None and (fresh or computed.changed > after):
                out.append((k, computed))
        return out

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
