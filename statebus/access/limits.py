"""Speed bumps: request rates, open subscriptions, and storage quotas per remote namespace.

Each raises a typed statebus error *before* anything changes, which the transports answer with:

* :class:`RateLimiter` → :class:`RateLimited` (429 + ``Retry-After``): a moving window per client
  key (``settings.rate_limit_per_client``) and per remote IP (``settings.rate_limit_per_ip``),
  counted with the ``limits`` package in memory;
* :class:`SubscriptionCounter` → :class:`RateLimited` (429 + ``Retry-After``) when a client already
  holds ``settings.max_subscriptions_per_client`` open streams;
* :class:`QuotaTracker` → :class:`QuotaExceeded` (413) when a write would take a remote namespace
  over ``settings.quota_bytes_per_remote_namespace``. The node has one, held by its op gate
  (:mod:`statebus.access.op_gate`): the ops federation stores for followed namespaces and the
  ops hosted clients send over HTTP count against the same tracker.

Body size, value size and key length/depth are checked where the bytes are read (HTTP layer and
``statebus.keys``); the owner of the node is exempt from rates and subscription counts.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from statebus.errors import InvalidValue, QuotaExceeded, RateLimited
from statebus.types import PubKey


def parse_rate(text: str) -> RateLimitItem:
    """``"100/second"`` or ``"10 per minute"`` → a ``limits`` item. Raises :class:`InvalidValue`."""
    try:
        return parse(text)
    except ValueError as exc:
        raise InvalidValue(f"not a rate such as 100/second: {exc}") from None


class RateLimiter:
    """Moving-window request rates per client key and per IP address.

    Args:
        per_client: the rate for a client key (a signing pubkey), e.g. ``"100/second"``.
        per_ip: the rate for a remote address (every request, signed or not).
    """

    def __init__(self, per_client: str, per_ip: str) -> None:
        self.per_client = parse_rate(per_client)
        self.per_ip = parse_rate(per_ip)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def _hit(self, item: RateLimitItem, kind: str, ident: str) -> None:
        if self._limiter.hit(item, kind, ident):
            return
        stats = self._limiter.get_window_stats(item, kind, ident)
        wait = max(1.0, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(f"too many requests from this {kind} (limit {item}); retry later", retry_after=wait)

    def hit(self, client: PubKey | None, ip: str | None) -> None:
        """Count one request of ``client`` (None: anonymous) from ``ip`` (None: unknown).

        Raises:
            RateLimited: either rate is used up; ``retry_after`` says when the window frees a slot.
        """
        if ip:
            self._hit(self.per_ip, "address", ip)
        if client is not None:
            self._hit(self.per_client, "client", client)


class SubscriptionCounter:
    """Open subscriptions per client (a pubkey, or ``ip:<address>`` for anonymous clients).

    Streams are held weakly and counted while not ``closed``, so a stream that ends (or is dropped)
    frees its slot without any bookkeeping by the caller.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, weakref.WeakSet[Any]] = {}

    def count(self, client: str) -> int:
        streams = self._open.get(client)
        if streams is None:
            return 0
        for stream in [s for s in streams if getattr(s, "closed", False)]:
            streams.discard(stream)
        if not streams:
            del self._open[client]
            return 0
        return len(streams)

    def check(self, client: str) -> None:
        """Raises :class:`RateLimited` (429) when ``client`` holds ``limit`` open subscriptions."""
        if self.count(client) >= self.limit:
            raise RateLimited(
                f"this client already has {self.limit} open subscriptions (the limit); close one first",
                retry_after=5.0,
            )

    def add(self, client: str, stream: Any) -> None:
        """Count ``stream`` (anything with a ``closed`` attribute) for ``client`` until it closes."""
        self._open.setdefault(client, weakref.WeakSet()).add(stream)


class QuotaTracker:
    """Bytes stored per remote namespace, against one limit. Thread-safe.

    Args:
        limit: the most bytes a namespace may use (0: none at all).
        measure: how many bytes a namespace already uses, asked once per namespace on first use
            (e.g. the sum of its stored ops); None starts every namespace at 0.

    The op gate calls :meth:`charge` before an op of a remote namespace is stored (nothing is
    counted when it raises) and :meth:`release` when it was not stored after all.
    """

    def __init__(self, limit: int, measure: Callable[[PubKey], int] | None = None) -> None:
        self.limit = limit
        self._measure = measure
        self._used: dict[PubKey, int] = {}
        self._lock = threading.Lock()

    def _get(self, namespace: PubKey) -> int:
        used = self._used.get(namespace)
        if used is None:
            used = self._measure(namespace) if self._measure is not None else 0
            self._used[namespace] = used
        return used

    def used(self, namespace: PubKey) -> int:
        """Bytes counted for ``namespace``."""
        with self._lock:
            return self._get(namespace)

    def check(self, namespace: PubKey, nbytes: int) -> None:
        """Raises :class:`QuotaExceeded` if ``nbytes`` more would take ``namespace`` over the limit."""
        with self._lock:
            self._check(namespace, nbytes)

    def _check(self, namespace: PubKey, nbytes: int) -> int:
        used = self._get(namespace)
        if used + nbytes > self.limit:
            raise QuotaExceeded(
                f"namespace {namespace} would use {used + nbytes} bytes on this node; "
                f"its quota is {self.limit}"
            )
        return used

    def charge(self, namespace: PubKey, nbytes: int) -> None:
        """Count ``nbytes`` more for ``namespace``, or raise :class:`QuotaExceeded` counting nothing."""
        if nbytes < 0:
            raise InvalidValue("a charge is a number of bytes (not negative)")
        with self._lock:
            self._used[namespace] = self._check(namespace, nbytes) + nbytes

    def release(self, namespace: PubKey, nbytes: int) -> None:
        """Count ``nbytes`` fewer for ``namespace`` (never below zero)."""
        with self._lock:
            self._used[namespace] = max(0, self._get(namespace) - nbytes)
