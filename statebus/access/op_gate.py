"""The one gate every op from outside passes before it is applied: a peer's (federation) or a client's
(the signed-op HTTP route).

    gate = OpGate(local, QuotaTracker(settings.quota_bytes_per_remote_namespace, measure))
    admitted = gate.admit(raw_bytes, door)     # raises the reason; nothing changed then
    change = await node.apply(admitted.op, peer=..., encoded=admitted.encoded)
    gate.settle(admitted, applied=change is not None)

Each way in is a :class:`Door`: it says whether it takes the op at all (consent) and whether the
op's author may write its key (delegation, rules). The gate holds what is the same for every door.

Rules:

1. Decode and encode once: an op arrives as bytes (or as an op already decoded), is decoded once, its
   canonical bytes are made once, and both travel on together (:class:`Admitted`) to the bus, which
   then skips its own re-encoding check (``Bus.apply(encoded=…)``).
2. The checks run in this order, and the first that fails refuses the op with its reason, changing
   nothing: the door's :meth:`Door.admits` (consent: cheap, before any crypto), the op's signature
   against its author, the door's :meth:`Door.authorizes` (delegation, rules, hosting), every
   :class:`OpValidator` in :attr:`OpGate.validators`, then (:meth:`OpGate.admit_async` only) every
   :class:`AsyncOpValidator` in :attr:`OpGate.checks` (hosted apps' validators, run off the event
   loop), and last the quota.
3. One quota counter per node: the bytes of stored ops of each remote namespace (never this node's
   own) are charged when an op is admitted and released by :meth:`OpGate.settle` when the op turns
   out a duplicate or was not stored; the count starts from what storage holds.
4. The gate never trusts whoever relayed an op: only the op's own signature and the namespace
   owner's replicated records decide.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from statebus.access.limits import QuotaTracker
from statebus.errors import InvalidOp, StatebusError
from statebus.identity.signing import check_signature
from statebus.keys import namespace_of
from statebus.oplog import Op, decode_op, encode_op
from statebus.storage.base import StoredOp
from statebus.types import PubKey, Seq


class Door(Protocol):
    """One way remote ops come in (federation ingest, the signed-op HTTP route)."""

    def admits(self, op: Op) -> None:
        """Raise unless this door takes ``op`` at all (consent: a followed or hosted namespace, the
        right key). Runs before the signature is checked, so it must be cheap."""

    def authorizes(self, op: Op) -> None:
        """Raise unless ``op``'s author (its signature already checked) may write its key here."""


class OpValidator(Protocol):
    """A check every admitted op passes after its author was authorized (app validators: a hosted
    app's schema for its keys). Raise a :class:`~statebus.errors.StatebusError` to refuse the op."""

    def __call__(self, op: Op) -> None: ...


class AsyncOpValidator(Protocol):
    """An :class:`OpValidator` that must be awaited (a hosted app's handler runs in its sandbox's
    thread): only :meth:`OpGate.admit_async` runs it."""

    def __call__(self, op: Op) -> Awaitable[None]: ...


@dataclass(frozen=True, slots=True)
class Admitted:
    """An op that passed the gate: the decoded op, its canonical bytes, and what quota it holds."""

    op: Op
    encoded: bytes
    namespace: PubKey
    charged: int
    """Bytes charged to :attr:`namespace`'s quota (0 for this node's own namespace)."""


def canonical(op: Op, raw: bytes | None = None) -> bytes:
    """The canonical bytes of ``op`` (decoded from ``raw``, if given), encoding once.

    Raises:
        InvalidOp: an op that would not survive encode → decode unchanged.
    """
    try:
        encoded = encode_op(op)
        # the op was decoded from these very bytes: they decode to it, nothing more to prove
        same = encoded == raw or decode_op(encoded) == op
    except StatebusError as exc:
        raise InvalidOp(f"op is not canonical: {exc.detail}") from None
    if not same:
        raise InvalidOp("op is not canonical: it does not survive encoding (non-JSON body or stray fields)")
    return encoded


class StoredOps(Protocol):
    """What the quota counter reads: a node's namespace and its stored ops (a ``Node``)."""

    @property
    def local(self) -> PubKey: ...

    def scan(self, pattern: str, after: Seq, limit: int) -> Sequence[StoredOp]: ...


def stored_bytes(store: StoredOps, namespace: PubKey) -> int:
    """The bytes of the stored ops of ``namespace`` (what its quota counts)."""
    total, after = 0, 0
    while True:
        batch = store.scan(f"/{namespace}/", after, 10_000)
        total += sum(len(s.data) for s in batch)
        if len(batch) < 10_000:
            return total
        after = batch[-1].seq


class OpGate:
    """The gate of one node.

    Args:
        local: this node's namespace (never charged to a quota).
        quota: the node's one quota counter for remote namespaces.
        validators: checks run on every admitted op (see :class:`OpValidator`).
    """

    def __init__(self, local: PubKey, quota: QuotaTracker, validators: Iterable[OpValidator] = ()) -> None:
        self.local = local
        self.quota = quota
        self.validators: list[OpValidator] = list(validators)
        self.checks: list[AsyncOpValidator] = []
        """Awaited by :meth:`admit_async` after :attr:`validators` (rule 2)."""

    @classmethod
    def for_node(cls, node: StoredOps, quota_bytes: int, validators: Iterable[OpValidator] = ()) -> OpGate:
        """A gate whose quota counts from what ``node``'s storage holds."""
        measure: Callable[[PubKey], int] = lambda ns: stored_bytes(node, ns)  # noqa: E731
        return cls(node.local, QuotaTracker(quota_bytes, measure), validators)

    def __repr__(self) -> str:
        return f"OpGate({self.local!r}, quota={self.quota.limit}, validators={len(self.validators)})"

    def admit(self, item: Op | bytes, door: Door, *, raw: bytes | None = None) -> Admitted:
        """Check ``item`` (rule 2) and charge its quota; the caller applies it and then calls
        :meth:`settle`. ``item`` is the op or its bytes; ``raw``, the bytes an op was decoded from.

        Raises:
            InvalidOp, InvalidKey: a malformed or non-canonical op.
            BadSignature: (401) the signature does not verify for the op's author.
            Forbidden: (403) the door or the author's rights refuse it.
            QuotaExceeded: (413) the namespace would go over its quota.
        """
        op, encoded = self._checked(item, door, raw)
        return self._charged(op, encoded)

    async def admit_async(self, item: Op | bytes, door: Door, *, raw: bytes | None = None) -> Admitted:
        """:meth:`admit`, also awaiting :attr:`checks` before the quota (rule 2); raises the same."""
        op, encoded = self._checked(item, door, raw)
        for check in list(self.checks):
            await check(op)
        return self._charged(op, encoded)

    def _checked(self, item: Op | bytes, door: Door, raw: bytes | None) -> tuple[Op, bytes]:
        if isinstance(item, bytes):
            op, raw = decode_op(item), item
        else:
            op = item
        encoded = canonical(op, raw)
        door.admits(op)
        check_signature(op)
        door.authorizes(op)
        for validate in self.validators:
            validate(op)
        return op, encoded

    def _charged(self, op: Op, encoded: bytes) -> Admitted:
        namespace = namespace_of(op.key)
        charged = 0
        if namespace != self.local:
            charged = len(encoded)
            self.quota.charge(namespace, charged)
        return Admitted(op, encoded, namespace, charged)

    def settle(self, admitted: Admitted, *, applied: bool) -> None:
        """The op was applied (and counts), or not (a duplicate, refused, not stored): release it."""
        if not applied and admitted.charged:
            self.quota.release(admitted.namespace, admitted.charged)

    def used(self, namespace: PubKey) -> int:
        """Bytes counted for ``namespace`` (0 for this node's own)."""
        return 0 if namespace == self.local else self.quota.used(namespace)
