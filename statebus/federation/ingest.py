"""Federation's door to the node's gate (:mod:`statebus.access.op_gate`): ops from peers.

Every op a follower streams or syncs, and every op a peer pushes, is taken here: the node's one
:class:`~statebus.access.op_gate.OpGate` checks it (signature, then this door's consent and
delegation, then app validators, then the one quota counter) and ``Node.apply_many`` applies it.

Rules:

1. Consent: an op is taken only for a namespace this node follows, or one allowed by
   :meth:`Ingest.allow_namespace` (an invite). Anything else is ``Forbidden`` and changes nothing.
   This node's own namespace is never taken from peers, except by an ``Ingest(own=True)`` that
   :mod:`statebus.federation.restore` makes for the owner's explicit ``statebus restore``.
2. Every op's signature is checked against its author, and the author must be the namespace owner or
   hold a live delegation from it. The delegation records (``/<owner>/.keys/…``) are replicated ops
   themselves, only the owner may write them, and they are applied first in every batch; the keyring
   is fed the merged value of each record key after it changes. Whoever relayed the op is never trusted.
   The owner's read rules (``/<owner>/.acl/…`` and ``/<owner>/.shares/…``) replicate the same way,
   and only ops the owner itself signed are taken there (a delegate never writes rules): a relay
   applies them to every reader of the namespace (``statebus.federation.policy.PeerView``,
   ``statebus.access``).
3. Quota: the bytes of stored ops per remote namespace never exceed
   ``quota_bytes_per_remote_namespace``; an op that would is refused with ``QuotaExceeded`` (413).
   The gate's counter is the node's only one: the signed-op HTTP route charges the same.
4. A bad op is refused alone: the ops before it stay applied (each is valid on its own), the caller
   learns the reason. Ops storage could not take (``StorageFailed``) are not refused: the error is
   raised, their quota released, and the caller retries from where it was.
5. Each op is decoded once and encoded once (the gate); its canonical bytes go on to the bus.
6. A bulk take (a catch-up of thousands of ops) is applied ``CATCH_UP_CHUNK`` ops at a time; between
   chunks it waits until the node's own subscribers that keep reading have room for the next one
   (``Node.paced``), so a plain ``EventStream`` client of this node is paced, never cut off as
   ``subscriber_too_slow`` by its own node's sync (issue 19).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from statebus.access.acl import acl_prefix
from statebus.access.op_gate import Admitted, OpGate
from statebus.blobs import BLOB_TYPE
from statebus.bus import Change
from statebus.errors import Forbidden, QuotaExceeded, StatebusError, StorageFailed
from statebus.federation.policy import SHARES
from statebus.identity import Keyring
from statebus.identity.delegation import keys_prefix
from statebus.keys import is_pubkey, namespace_of
from statebus.oplog import Op, decode_op
from statebus.runtime import Node
from statebus.types import PubKey, Seq

log = logging.getLogger("statebus.federation")

Consent = Callable[[PubKey], bool]
CATCH_UP_CHUNK = 200
"""Ops applied (and made durable) at once; local subscribers get to drain between chunks (rule 6)."""
MAX_REASONS = 20
"""Refusal reasons an :class:`IngestResult` keeps (the first ones)."""


@dataclass
class IngestResult:
    applied: int = 0
    duplicates: int = 0
    rejected: list[str] = field(default_factory=list)
    """The reasons of refused ops (first few)."""
    last_seq: Seq = 0
    keys: set[str] = field(default_factory=set)
    """The keys the applied ops wrote."""
    blobs: list[tuple[str, bytes]] = field(default_factory=list)
    """``(key, pointer bytes)`` of each applied op whose value is a blob pointer: its bytes are
    fetched apart (``statebus.federation.blobs``)."""

    def refuse(self, exc: StatebusError) -> None:
        if len(self.rejected) < MAX_REASONS:
            self.rejected.append(f"{exc.code}: {exc.detail}")


class Ingest:
    """Verifies and applies remote ops for one node: the federation's :class:`~statebus.access.op_gate.Door`.

    Args:
        node: the node the ops go into.
        gate: the node's op gate (its quota counter is shared with the signed-op HTTP route).
        consent: says whether a namespace is followed (checked on every op).
        own: take ops of this node's own namespace too (a restore: they are verified against our
            own key and delegations like any others, and count against no quota).
        clock_leeway: seconds an owner's clock may run ahead of ours when a delegation starts
            (``Settings.max_clock_skew``).
    """

    def __init__(
        self,
        node: Node,
        gate: OpGate,
        consent: Consent | None = None,
        *,
        own: bool = False,
        clock_leeway: float = 0.0,
    ) -> None:
        self.node = node
        self.gate = gate
        self.clock_leeway = clock_leeway
        self.consent = consent
        self.own = own
        self._allowed: set[PubKey] = set()
        self._keyrings: dict[PubKey, Keyring] = {}

    # ------------------------------------------------------------------ consent

    def allow_namespace(self, ns: PubKey) -> None:
        """Accept ops of ``ns`` even if this node does not follow it (e.g. it was invited)."""
        self._allowed.add(ns)

    def disallow_namespace(self, ns: PubKey) -> None:
        self._allowed.discard(ns)

    def accepts(self, ns: PubKey) -> bool:
        if ns == self.node.local:
            return self.own  # our own namespace is written here, never taken from peers but in a restore
        return ns in self._allowed or (self.consent is not None and self.consent(ns))

    # ------------------------------------------------------------------ quota

    def usage(self, ns: PubKey) -> int:
        """Bytes of stored ops of ``ns`` on this node, as the gate's quota counter has them."""
        return self.gate.used(ns)

    # ------------------------------------------------------------------ keyrings

    def keyring(self, ns: PubKey) -> Keyring:
        """The verified delegations of ``ns`` held here (built from the stored records once)."""
        ring = self._keyrings.get(ns)
        if ring is None:
            ring = Keyring(leeway=self.clock_leeway)
            for key in self.node.walk(keys_prefix(ns), 10_000):
                self._feed(ring, key)
            self._keyrings[ns] = ring
        return ring

    def _feed(self, ring: Keyring, key: str) -> None:
        change = self.node.fetch_or_none(key)
        owner = namespace_of(key)
        delegate = key.rsplit("/", 1)[-1]
        if change is None or not change.exists:
            ring.forget(owner, delegate)
            return
        try:
            ring.add_stored(key, change.value)
        except StatebusError as exc:
            log.warning("ignoring a delegation record at %s: %s", key, exc.detail)

    # ------------------------------------------------------------------ the Door

    def admits(self, op: Op) -> None:
        """Consent (rule 1): a key in a namespace this node follows or was invited to."""
        ns = namespace_of(op.key) if isinstance(op.key, str) and op.key.startswith("/") else ""
        if not is_pubkey(ns) or op.key[1 + len(ns) : 2 + len(ns)] != "/":
            raise Forbidden("an op's key is /<pubkey>/…")
        if not self.accepts(ns):
            raise Forbidden(f"this node does not follow {ns} and was not invited to it")

    def authorizes(self, op: Op) -> None:
        """Delegation and the owner's rules (rule 2); the signature is already checked."""
        ns = namespace_of(op.key)
        reason = self.keyring(ns).why_not(op.author, op.key)
        if reason is not None:
            raise Forbidden(f"{op.author} may not write {op.key}: {reason}")
        if op.author != ns and op.key.startswith((acl_prefix(ns), f"/{ns}/{SHARES}/")):
            raise Forbidden(f"only the owner of {ns} writes its read rules (.acl, .shares), not {op.author}")

    # ------------------------------------------------------------------ taking ops

    def check(self, op: Op) -> Admitted:
        """Pass one op through the gate without applying it (its quota is charged: hand it to
        ``self.gate.settle``). Raises the reason."""
        return self.gate.admit(op, self)

    async def take(
        self, ops: Iterable[Op | bytes | tuple[Op, bytes]], *, peer: str | None = None
    ) -> IngestResult:
        """Verify and apply ``ops`` (delegation records first); wait until they are durable. Each is
        an op, its encoded bytes, or both (an op already decoded from those bytes).

        Raises:
            QuotaExceeded: a namespace reached its quota (the ops before it are applied).
            StorageFailed: storage could not take them (disk full); nothing unstored is kept, and
                the caller retries from where it was.
        """
        result = IngestResult()
        records: list[tuple[Op, bytes | None]] = []
        rest: list[tuple[Op, bytes | None]] = []
        for item in ops:  # decoded once here; the gate then only encodes (and compares the bytes)
            try:
                op, raw = _decoded(item)
            except StatebusError as exc:
                result.refuse(exc)
                continue
            is_record = isinstance(op.key, str) and op.key.startswith(keys_prefix(namespace_of(op.key)))
            (records if is_record else rest).append((op, raw))
        rest.sort(key=lambda pair: pair[0].clock)
        if records:  # the delegations the other ops may need are in place before those are checked
            await self._take(records, result, peer)
        await self._take(rest, result, peer)
        return result

    async def _take(self, ops: list[tuple[Op, bytes | None]], result: IngestResult, peer: str | None) -> None:
        admitted: list[Admitted] = []
        stop: QuotaExceeded | None = None
        for op, raw in ops:
            try:
                admitted.append(await self.gate.admit_async(op, self, raw=raw))
            except QuotaExceeded as exc:  # not the op's fault: not refused (a follow stops on it)
                stop = exc
                break
            except StatebusError as exc:
                result.refuse(exc)
                log.info("refused a remote op for %s: %s", op.key, exc.detail)
        for start in range(0, len(admitted), CATCH_UP_CHUNK):
            if start:
                await self.node.paced(CATCH_UP_CHUNK)
            chunk = admitted[start : start + CATCH_UP_CHUNK]
            try:
                outcomes = await self.node.apply_many([(a.op, a.encoded) for a in chunk], peer=peer)
            except StorageFailed:
                for a in admitted[start:]:  # nothing of this chunk is kept: its bytes are not stored
                    self.gate.settle(a, applied=False)
                raise
            self._settle(chunk, outcomes, result)
        if stop is not None:
            raise stop

    def _settle(
        self, admitted: list[Admitted], outcomes: list[Change | StatebusError | None], result: IngestResult
    ) -> None:
        for a, outcome in zip(admitted, outcomes, strict=True):
            refused = isinstance(outcome, StatebusError)
            self.gate.settle(a, applied=outcome is not None and not refused)
            if isinstance(outcome, StatebusError):
                result.refuse(outcome)
                log.info("refused a remote op for %s: %s", a.op.key, outcome.detail)
            elif outcome is None:
                result.duplicates += 1
            else:
                result.applied += 1
                result.last_seq = outcome.seq
                result.keys.add(a.op.key)
                if a.op.content_type == BLOB_TYPE and isinstance(a.op.body, bytes):
                    result.blobs.append((a.op.key, a.op.body))
                if a.op.key.startswith(keys_prefix(a.namespace)):
                    self._feed(self.keyring(a.namespace), a.op.key)


def _decoded(item: Op | bytes | tuple[Op, bytes]) -> tuple[Op, bytes | None]:
    if isinstance(item, bytes):
        return decode_op(item), item
    if isinstance(item, tuple):
        return item
    return item, None
