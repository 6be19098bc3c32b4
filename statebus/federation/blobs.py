"""Fetching the bytes of blob pointers a follower took: apart from the ops, verified, in the background.

A pointer op (``statebus.blobs``) replicates like any op, so the ops behind it are never held up by
its bytes. For each pointer a follower applies, :meth:`BlobFetcher.want` queues a fetch from the node
that sent the op (the owner or a relay); the workers stream the bytes into the node's blob store.

Rules:

1. The bytes are checked against the signed pointer: the store keeps them only if their sha256 and
   size are the pointer's (``BlobStore.put(expect=…, size=…)``). A peer that serves anything else is
   refused (``bad_blob``): nothing is kept, the failure is recorded with the peer's address, and the
   fetch is tried again later (perhaps from another server), at most :data:`MAX_ATTEMPTS` times; a
   server that answers ``blob_pending`` (a relay still fetching it) is asked again, ever more
   slowly (up to :data:`MAX_DELAY`), without giving up.
2. A blob over ``max_blob_bytes`` (by its pointer's size) is never fetched; its key answers 503
   ``blob_pending`` for good, and the reason is recorded.
3. A fetch is skipped when the key no longer points to that blob (a newer write replaced it), or
   when the store already holds it; the bytes count against the namespace's quota
   (``quota_bytes_per_remote_namespace``), and a fetch that would pass it is refused, recorded.
4. With a swarm (``swarm``, setting ``swarm``), a blob of ``swarm_min_bytes`` or more is first
   fetched over it (``statebus.federation.swarm``: the same sha256 check); any failure there falls
   back to the HTTP fetch, except a refusal by size or quota, which is final as on HTTP. A smaller
   blob is asked for over HTTP with our swarm address; a server that answers ``blob_swarmed`` (the
   blob is hot there) sends it down the swarm path at once, whose HTTP fallback then asks without it.
5. At most ``concurrency`` fetches run at a time; each is a task of its own, so stopping the
   federation cancels them (a cancelled fetch keeps nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from statebus.blobs import BLOB_TYPE, BlobInfo, BlobPointer
from statebus.errors import BadBlob, NotFound, QuotaExceeded, RemoteError, StatebusError, TooLarge
from statebus.federation.swarm import OfferClient, SwarmPlane
from statebus.keys import namespace_of
from statebus.runtime import Node
from statebus.swarm.session import Progress

log = logging.getLogger("statebus.federation")

MAX_ATTEMPTS = 5
RETRY_BASE = 0.5
"""Seconds before the first retry of a failed fetch (doubling each attempt)."""
MAX_DELAY = 30.0
MAX_FAILURES = 100
"""Failure reasons kept (the newest)."""


class BlobClient(Protocol):
    """What the fetcher asks of another node (``PeerClient.blob``)."""

    def blob(self, base: str, key: str, digest: str, seeder: str = "") -> AsyncGenerator[bytes, None]: ...


@dataclass
class Want:
    key: str
    pointer: BlobPointer
    url: str
    attempts: int = 0
    waits: int = 0
    """Times the server said it is still fetching the blob itself (``blob_pending``)."""
    hot: bool = False
    """The server said the blob is hot (``blob_swarmed``): fetch it over the swarm, small as it is."""


class BlobFetcher:
    """The blob fetches of one node's federation.

    Args:
        node: the node (its ``blobs`` store receives the bytes).
        client: how to call other nodes.
        concurrency: fetches at a time.
    """

    def __init__(
        self, node: Node, client: BlobClient, *, concurrency: int = 2, swarm: SwarmPlane | None = None
    ) -> None:
        self.node = node
        self.client = client
        self.swarm = swarm
        self.swarmed = 0
        """Blobs fetched over the swarm (the rest of ``fetched`` came over HTTP)."""
        self.concurrency = concurrency
        self.pending: dict[str, Want] = {}
        """Blobs wanted and not yet stored, by hash."""
        self.failures: dict[str, str] = {}
        """The last failure of each blob that failed, by hash (the newest :data:`MAX_FAILURES`)."""
        self.fetched = 0
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._stopped = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = False
        self._workers = [
            loop.create_task(self._work(), name=f"blob fetch {i}") for i in range(self.concurrency)
        ]

    async def stop(self) -> None:
        self._stopped = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []

    def want(self, key: str, raw_pointer: bytes, url: str | None) -> None:
        """Fetch the blob ``raw_pointer`` (a pointer op's body) names for ``key``, from ``url``."""
        store = self.node.blobs
        if store is None or url is None:
            return
        try:
            pointer = BlobPointer.decode(raw_pointer)
        except BadBlob as exc:
            self._fail(key, "?", f"{key}: {exc.detail}")
            return
        if store.has(pointer.hash):
            return
        if pointer.size > store.max_bytes:
            self._fail(
                key,
                pointer.hash,
                f"{key}: blob of {pointer.size} bytes is over max_blob_bytes ({store.max_bytes})",
            )
            return
        current = self.pending.get(pointer.hash)
        if current is not None:
            current.key, current.url = key, url
            return
        self.pending[pointer.hash] = Want(key, pointer, url)
        self._queue.put_nowait(pointer.hash)

    def rescan(self, prefix: str, url: str | None, limit: int = 10_000) -> None:
        """Want every blob a key under ``prefix`` points to that the store lacks (after a restart,
        the pointers applied before it are not queued any more)."""
        if self.node.blobs is None:
            return
        for key in self.node.walk(prefix, limit):
            change = self.node.fetch_or_none(key)
            if change is not None and change.exists and change.content_type == BLOB_TYPE:
                self.want(key, bytes(change.value), url)

    def pending_under(self, prefix: str) -> int:
        return sum(1 for w in self.pending.values() if w.key.startswith(prefix))

    def failures_under(self, prefix: str) -> list[str]:
        return [why for why in self.failures.values() if why.startswith(prefix)]

    def _fail(self, key: str, digest: str, why: str) -> None:
        self.failures.pop(digest, None)
        self.failures[digest] = why
        while len(self.failures) > MAX_FAILURES:
            self.failures.pop(next(iter(self.failures)))
        log.warning("blob fetch: %s", why)

    async def _work(self) -> None:
        while not self._stopped:
            digest = await self._queue.get()
            want = self.pending.get(digest)
            if want is None:
                continue
            try:
                await self._fetch(want)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a worker never dies of one fetch
                log.exception("blob fetch of %s failed", digest)
                self._retry(want, f"{type(exc).__name__}")

    def _points_to(self, key: str, digest: str) -> bool:
        change = self.node.fetch_or_none(key)
        if change is None or not change.exists or change.content_type != BLOB_TYPE:
            return False
        try:
            return BlobPointer.decode(change.value).hash == digest
        except BadBlob:
            return False

    async def _fetch(self, want: Want) -> None:
        store = self.node.blobs
        digest = want.pointer.hash
        if store is None or store.has(digest) or not self._points_to(want.key, digest):
            self.pending.pop(digest, None)
            return
        want.attempts += 1
        ns = namespace_of(want.key)
        started = time.monotonic()
        offers = self.client if isinstance(self.client, OfferClient) else None
        swarm = self.swarm if offers is not None else None
        tried = swarm is not None and (swarm.wants(want.pointer) or want.hot)
        if swarm is not None and offers is not None and tried:
            try:
                await swarm.fetch(
                    offers,
                    want.url,
                    want.key,
                    want.pointer,
                    None if ns == self.node.local else ns,
                )
            except (TooLarge, QuotaExceeded) as exc:
                self.pending.pop(digest, None)
                self._fail(want.key, digest, f"{want.key}: {exc.code}: {exc.detail}")
                return
            except StatebusError as exc:
                log.info(
                    "swarm fetch of %s failed (%s: %s); fetching over HTTP", digest, exc.code, exc.detail
                )
            else:
                self.pending.pop(digest, None)
                self.failures.pop(digest, None)
                self.fetched += 1
                self.swarmed += 1
                log.info(
                    "fetched blob %s for %s over the swarm in %.1f s",
                    digest,
                    want.key,
                    time.monotonic() - started,
                )
                return
        try:
            seeder = swarm.address if swarm is not None and not tried else ""
            await store.put(
                self.client.blob(want.url, want.key, digest, seeder),
                size=want.pointer.size,
                expect=digest,
                namespace=None if ns == self.node.local else ns,
            )
        except (TooLarge, QuotaExceeded) as exc:
            self.pending.pop(digest, None)
            self._fail(want.key, digest, f"{want.key}: {exc.code}: {exc.detail}")
            return
        except BadBlob as exc:
            self._retry(want, f"bad_blob from {want.url}: {exc.detail}")
            return
        except RemoteError as exc:
            if exc.remote_code == "blob_swarmed" and swarm is not None:  # hot there: the swarm, now
                want.hot = True
                want.attempts -= 1
                self._queue.put_nowait(digest)
                return
            if exc.remote_code == "blob_pending":  # a relay still fetching it: wait, never give up
                want.attempts = min(want.attempts, MAX_ATTEMPTS - 1)
                want.waits += 1
            self._retry(want, f"{exc.remote_code or exc.code} from {want.url}: {exc.detail}")
            return
        except StatebusError as exc:
            self._retry(want, f"{exc.code} from {want.url}: {exc.detail}")
            return
        self.pending.pop(digest, None)
        self.failures.pop(digest, None)
        self.fetched += 1
        log.info("fetched blob %s for %s in %.1f s", digest, want.key, time.monotonic() - started)
        if swarm is not None:  # it serves what it fetched over HTTP too (and says so on the DHT)
            try:
                await swarm.serve_fetched(want.pointer)
            except StatebusError as exc:
                log.info("not seeding blob %s: %s", digest, exc.detail)

    async def fetch_now(
        self, key: str, pointer: BlobPointer, url: str | None, progress: Progress | None = None
    ) -> tuple[BlobInfo, str]:
        """Fetch one blob now, for the owner (``statebus blob fetch``): over the swarm first (the offer
        of ``url``, the node that sent the pointer, and the DHT's seeders), then over HTTP from
        ``url``, each checked against the pointer; ``progress(done, total, peers)`` as bytes arrive.
        With ``key`` empty (a fetch by sha256 alone) only the DHT's seeders are asked.

        Returns:
            The blob and how it came: ``local`` (held already), ``swarm`` or ``http``.

        Raises:
            NotFound: no seeder and no node to ask; TooLarge, QuotaExceeded, BadBlob: refused as in
            the background fetches; the HTTP fallback's errors when the swarm failed too.
        """
        store = self.node.blobs
        if store is None:
            raise NotFound("this node stores no blobs")
        if store.has(pointer.hash):
            return BlobInfo(pointer.hash, store.path(pointer.hash).stat().st_size), "local"
        ns = namespace_of(key) if key else self.node.local
        owner = None if ns == self.node.local else ns
        swarm = self.swarm
        failed: StatebusError | None = None
        if swarm is not None:
            try:
                if key and url is not None and isinstance(self.client, OfferClient):
                    info = await swarm.fetch(self.client, url, key, pointer, owner, progress)
                else:
                    info = await swarm.fetch_from_dht(pointer, owner, progress)
            except (TooLarge, QuotaExceeded):
                raise
            except StatebusError as exc:
                failed = exc
                log.info("swarm fetch of %s failed (%s: %s)", pointer.hash, exc.code, exc.detail)
            else:
                return info, "swarm"
        if not key or url is None:
            raise failed or NotFound(f"no node to fetch blob {pointer.hash} from (and no swarm)")
        done = 0

        async def counted() -> AsyncGenerator[bytes, None]:
            nonlocal done
            async for chunk in self.client.blob(url, key, pointer.hash):
                done += len(chunk)
                if progress is not None:
                    progress(done, pointer.size, 1)
                yield chunk

        info = await store.put(counted(), size=pointer.size, expect=pointer.hash, namespace=owner)
        if swarm is not None:
            with contextlib.suppress(StatebusError):
                await swarm.serve_fetched(pointer)
        return info, "http"

    def _retry(self, want: Want, why: str) -> None:
        digest = want.pointer.hash
        self._fail(want.key, digest, f"{want.key}: {why}")
        if want.attempts >= MAX_ATTEMPTS or self._stopped:
            self.pending.pop(digest, None)
            return
        delay = min(MAX_DELAY, RETRY_BASE * 2 ** (want.attempts + want.waits - 1))

        def again() -> None:
            self._timers.discard(handle)
            if digest in self.pending:
                self._queue.put_nowait(digest)

        handle = asyncio.get_running_loop().call_later(delay, again)
        self._timers.add(handle)
