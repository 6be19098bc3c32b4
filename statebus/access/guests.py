"""Guest writes: ops that *other* keys write into this node's own namespace, where a rule lets them
(an inbox such as chirp's ``/<me>/chirp/inbox/``, open with ``{"write": "signed"}``).

    guests = GuestLimits(node, settings)
    guests.hit(author, address)          # before the op is verified: 429 over either rate
    charged = guests.charge(author, n)   # after it is admitted: 413 over the key's quota
    guests.release(author, charged)      # it was not stored after all

Rules:

1. A guest write is an op whose key is in the local namespace and whose author is neither the
   node's key, nor a live delegate of it, nor named by the rule that governs the key (its key or an
   ``@list`` holding it): a guest is one that a ``"signed"`` (or ``"public"``) rule admits. The
   owner, delegates and the collaborators a rule names pay nothing here and may change what others
   wrote, as the rule says.
2. Rates: ``guest_write_rate`` per author key and ``guest_write_rate_per_ip`` per remote address
   (many fresh keys from one address share one budget), on top of the node's request rates. Over
   either: :class:`~statebus.errors.RateLimited` (429 with ``Retry-After``), before any signature
   is checked, so a flood costs no crypto.
3. Quota: the bytes of one author's stored ops in the local namespace, at most
   ``guest_quota_bytes`` (413). Counted from storage on the first guest write after start (one scan
   of the local namespace, decoding each op's author), then kept in memory; deleting a notice does
   not free its bytes until the next start (the op stays in the log until compaction).
4. The rules (``.acl``) and the deny-list decide first; apps' validators decide after (chirp's
   block list and notice shape); nothing here widens what a rule admits.
5. A guest changes only what it wrote: a guest write of a key whose current version (any head of
   it) was written by another key, the owner's included, is refused with 403 before any signature
   is checked (:meth:`GuestLimits.check_own`). So a sender may overwrite or delete (retract) its
   own notice, and no other guest's, whatever the rule admits.
"""

from __future__ import annotations

import threading

from statebus.access.limits import QuotaTracker, RateLimiter
from statebus.config import Settings
from statebus.errors import Forbidden, QuotaExceeded
from statebus.oplog import decode_op
from statebus.runtime import Node
from statebus.types import Key, PubKey

SCAN_BATCH = 10_000


class GuestLimits:
    """Rates and quota of guest writes on one node (see the module rules)."""

    def __init__(self, node: Node, settings: Settings) -> None:
        self.node = node
        self.rates = RateLimiter(settings.guest_write_rate, settings.guest_write_rate_per_ip)
        self.quota = QuotaTracker(settings.guest_quota_bytes, self._measure)
        self._usage: dict[PubKey, int] | None = None
        self._lock = threading.Lock()

    def hit(self, author: PubKey, address: str | None) -> None:
        """Count one guest write of ``author`` from ``address`` (rule 2). Raises RateLimited."""
        self.rates.hit(author, address)

    def charge(self, author: PubKey, nbytes: int) -> int:
        """Count ``nbytes`` more for ``author`` (rule 3); raises :class:`QuotaExceeded` counting nothing."""
        try:
            self.quota.charge(author, nbytes)
        except QuotaExceeded:
            raise QuotaExceeded(
                f"{author} would use more than {self.quota.limit} bytes of guest writes in this "
                f"node's namespace (its inbox quota)"
            ) from None
        return nbytes

    def release(self, author: PubKey, nbytes: int) -> None:
        if nbytes:
            self.quota.release(author, nbytes)

    def check_own(self, author: PubKey, key: Key) -> None:
        """Refuse ``author``'s guest write of ``key`` when another key wrote its current state (rule 5)."""
        current = self.node.fetch_or_none(key, durable=True)
        if current is None:
            return
        heads = set(current.version)
        writers: dict[str, str] = {}
        after = 0
        while heads - writers.keys():
            page = self.node.history_page(key, after, 200)
            writers.update((v.version, v.author) for v in page.versions)
            if not page.more or not page.versions:
                break
            after = page.versions[-1].seq
        for head in sorted(heads):
            writer = writers.get(head)
            if writer != author:
                by = "another key" if writer is None else writer
                raise Forbidden(f"{key} was written by {by}: a guest changes only what it wrote")

    def used(self, author: PubKey) -> int:
        return self.quota.used(author)

    def _measure(self, author: PubKey) -> int:
        with self._lock:
            if self._usage is None:
                self._usage = self._scan()
            return self._usage.get(author, 0)

    def _scan(self) -> dict[PubKey, int]:
        local = self.node.local
        usage: dict[PubKey, int] = {}
        after = 0
        while True:
            batch = self.node.scan(f"/{local}/", after, SCAN_BATCH)
            for stored in batch:
                author = decode_op(stored.data).author
                if author != local:
                    usage[author] = usage.get(author, 0) + len(stored.data)
            if len(batch) < SCAN_BATCH:
                return usage
            after = batch[-1].seq
