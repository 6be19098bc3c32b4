"""The one gate remote ops pass through: consent, signature, delegation, quota, then ``node.apply``.

Rules:

1. Consent: an op is taken only for a namespace this node follows, or one allowed by
   :meth:`Ingest.allow_namespace` (an invite). Anything else is ``Forbidden`` and changes nothing.
   This node's own namespace is never taken from peers, except by an ``Ingest(own=True)`` that
   :mod:`statebus.federation.restore` makes for the owner's explicit ``statebus restore``.
2. Every op is checked with :func:`statebus.identity.verify_op` against the namespace owner's key and
   its delegations. The delegation records (``/<owner>/.keys/…``) are replicated ops themselves, only
   the owner may write them, and they are applied first in every batch; the keyring is fed the merged
   value of each record key after it changes. Whoever relayed the op is never trusted.
   The owner's read rules (``/<owner>/.acl/…`` and ``/<owner>/.shares/…``) replicate the same way,
   and only ops the owner itself signed are taken there (a delegate never writes rules): a relay
   applies them to every reader of the namespace (``statebus.federation.policy.PeerView``,
   ``statebus.access``).
3. Quota: the bytes of stored ops per remote namespace never exceed
   ``quota_bytes_per_remote_namespace``; an op that would is refused with ``QuotaExceeded`` (413).
4. A bad op is refused alone: the ops before it stay applied (each is valid on its own), the caller
   learns the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from statebus.access.acl import acl_prefix
from statebus.bus import Change
from statebus.errors import Forbidden, QuotaExceeded, StatebusError, StorageFailed
from statebus.federation.opset import scan_all
from statebus.federation.policy import SHARES
from statebus.identity import Keyring, verify_op
from statebus.identity.delegation import keys_prefix
from statebus.keys import namespace_of
from statebus.oplog import Op, decode_op, encode_op
from statebus.runtime import Node
from statebus.types import PubKey, Seq

log = logging.getLogger("statebus.federation")

Consent = Callable[[PubKey], bool]


@dataclass
class IngestResult:
    applied: int = 0
    duplicates: int = 0
    rejected: list[str] = field(default_factory=list)
    """The reasons of refused ops (first few)."""
    last_seq: Seq = 0


class Ingest:
    """Verifies and applies remote ops for one node.

    Args:
        node: the node the ops go into.
        quota_bytes: the most bytes of stored ops one remote namespace may use here.
        consent: says whether a namespace is followed (checked on every op).
        own: take ops of this node's own namespace too (a restore: they are verified against our
            own key and delegations like any others, and count against no quota).
        clock_leeway: seconds an owner's clock may run ahead of ours when a delegation starts
            (``Settings.max_clock_skew``).
    """

    def __init__(
        self,
        node: Node,
        quota_bytes: int,
        consent: Consent | None = None,
        *,
        own: bool = False,
        clock_leeway: float = 0.0,
    ) -> None:
        self.node = node
        self.clock_leeway = clock_leeway
        self.quota_bytes = quota_bytes
        self.consent = consent
        self.own = own
        self._allowed: set[PubKey] = set()
        self._keyrings: dict[PubKey, Keyring] = {}
        self._usage: dict[PubKey, int] = {}

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
        """Bytes of stored ops of ``ns`` on this node (counted once from storage, then kept)."""
        if ns not in self._usage:
            self._usage[ns] = sum(len(s.data) for s in scan_all(self.node, f"/{ns}/"))
        return self._usage[ns]

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

    # ------------------------------------------------------------------ taking ops

    def check(self, op: Op) -> int:
        """Check one op without applying it; return its encoded size. Raises the reason."""
        if not isinstance(op.key, str) or not op.key.startswith("/"):
            raise Forbidden("an op's key is /<pubkey>/…")
        ns = namespace_of(op.key)
        if not self.accepts(ns):
            raise Forbidden(f"this node does not follow {ns} and was not invited to it")
        verify_op(op, self.keyring(ns))
        if op.author != ns and op.key.startswith((acl_prefix(ns), f"/{ns}/{SHARES}/")):
            raise Forbidden(f"only the owner of {ns} writes its read rules (.acl, .shares), not {op.author}")
        size = len(encode_op(op))
        if ns != self.node.local and self.usage(ns) + size > self.quota_bytes:
            raise QuotaExceeded(
                f"namespace {ns} would use more than its quota of {self.quota_bytes} bytes on this node"
            )
        return size

    async def take(self, ops: Iterable[Op | bytes], *, peer: str | None = None) -> IngestResult:
        """Verify and apply ``ops`` (delegation records first); wait until they are durable.

        Raises:
            QuotaExceeded: a namespace reached its quota (the ops before it are applied).
            StorageFailed: storage could not take them (disk full); nothing unstored is kept, and
                the caller retries from where it was.
        """
        result = IngestResult()
        decoded: list[Op] = []
        for item in ops:
            try:
                decoded.append(decode_op(item) if isinstance(item, bytes) else item)
            except StatebusError as exc:
                result.rejected.append(f"{exc.code}: {exc.detail}")
        records: list[Op] = []
        rest: list[Op] = []
        for op in decoded:
            is_record = isinstance(op.key, str) and op.key.startswith(keys_prefix(namespace_of(op.key)))
            (records if is_record else rest).append(op)
        rest.sort(key=lambda op: op.clock)
        size = 0  # of the op being taken, as its check measured it

        def check(op: Op) -> None:
            nonlocal size
            size = self.check(op)

        def refused(op: Op, exc: StatebusError) -> None:
            if isinstance(exc, QuotaExceeded | StorageFailed):
                raise exc  # not the op's fault: it must not be counted as refused (and skipped) by a follow
            if len(result.rejected) < 20:
                result.rejected.append(f"{exc.code}: {exc.detail}")
            log.info("refused a remote op for %s: %s", op.key, exc.detail)

        def applied(op: Op, change: Change | None) -> None:
            self._applied(op, change, size, result)

        await self.node.apply_many(records + rest, peer=peer, check=check, refused=refused, applied=applied)
        return result

    def _applied(self, op: Op, change: Change | None, size: int, result: IngestResult) -> None:
        if change is None:
            result.duplicates += 1
            return
        ns = namespace_of(op.key)
        result.applied += 1
        result.last_seq = change.seq
        self._usage[ns] = self.usage(ns) + size
        if op.key.startswith(keys_prefix(ns)):
            self._feed(self.keyring(ns), op.key)
