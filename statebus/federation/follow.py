"""Following: keep a local replica of another node's subtree, live, verified, resumable.

One :class:`Follower` per ``/~/.follows/<id>`` record. Its loop:

1. connect to the last server this follow used (kept across restarts) while locating the owner
   alongside: DHT record first, then the follow's ``via`` addresses (an invite, a relay), then the
   addresses the node was told about; re-located on every (re)connect, so when the last server
   fails a moved owner is found;
2. on each connection, run anti-entropy on ``/<owner>/.keys/``, then on the owner's read rules
   (``/<owner>/.acl/``, as much as the server lets us have, and ``/<owner>/.shares/``), then on the
   pattern (only the ops we lack move), so nothing missed while away is lost even if the cursor is
   stale or from another relay;
3. stream the signed ops after the cursor this node holds *for that server* (cursors are per server
   node: a relay's sequence numbers are not the owner's);
4. hand every op to :class:`~statebus.federation.ingest.Ingest`, the federation's door to the node's
   op gate (consent, signature, delegation, quota) — the server is never trusted;
5. after anti-entropy, check every key it brought (and every key still incomplete after a batch):
   a key whose owner compacted history this node never had cannot be rebuilt from the ops given
   (``Node.incomplete``); the follow lists it under ``incomplete`` and, while any is, reports the
   status ``incomplete`` with the reason (the node serves such a key as 503 ``incomplete``, with no
   version); the key leaves the list when later ops rebuild it, or when the owner's signed subtree
   snapshot (``statebus.federation.snapshots``: fetched once a session while keys of the pattern are
   incomplete, checked, its bases installed) and a second anti-entropy round on the pattern rebuild
   it; a snapshot that does not check is refused whole (``last_rejection`` says why). A new
   follower (nothing held under the pattern) takes the snapshot before its first round, so only
   the ops after the bases move;
6. on any failure reconnect with exponential backoff and jitter; on ``QuotaExceeded`` stop for good
   with the reason. A server that throttles us (429, :class:`~statebus.errors.RateLimited`) is not a
   failure: wait its ``Retry-After`` (plus up to a quarter more, so throttled followers do not return
   in step), then reconnect without growing the backoff.

The follower's state (cursors, status, last reason, counters, the last server's URL) is kept at
``/~/.federation/follows/<id>`` so the owner's web page and ``statebus peers`` can show it, and so a
restarted node resumes: its counters go on from the stored ones, its status is ``syncing`` (stored at
once, so the pre-crash ``live`` never shows) until the first exchange succeeds, and it reconnects to
the last server's URL first while the DHT lookup runs alongside (issue 19).

A follower sees the rest of the node only through its :class:`FollowContext` (the node, a
:class:`FollowClient`, the ingest, ``locate`` and the backoff), so it runs in process against a fake
client as well as against :class:`~statebus.federation.client.PeerClient`
(``tests/federation/test_follower.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from statebus.access.acl import acl_prefix
from statebus.errors import (
    BadSnapshot,
    PeerUnavailable,
    QuotaExceeded,
    RateLimited,
    StatebusError,
    StorageFailed,
)
from statebus.federation.blobs import BlobFetcher
from statebus.federation.client import StreamItem
from statebus.federation.ingest import Ingest, IngestResult
from statebus.federation.opset import op_set
from statebus.federation.policy import SHARES, Follow
from statebus.federation.snapshots import Installed, SnapshotClient, SnapshotKeeper, install_snapshot
from statebus.federation.sync import SyncSession
from statebus.identity.delegation import keys_prefix
from statebus.runtime import Node
from statebus.types import JSON, PubKey, Seq

log = logging.getLogger("statebus.federation")

IngestHook = Callable[["Follower", int], Awaitable[None]]
"""Awaited after each batch a follower took: ``hook(follower, applied)``."""

STATE_SEGMENT = ".federation/follows"
PERSIST_INTERVAL = 1.0
MAX_LISTED = 100
"""Incomplete keys a follow's state lists (the first, by name)."""


def state_key(local: PubKey, fid: str) -> str:
    return f"/{local}/{STATE_SEGMENT}/{fid}"


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark a background lookup's outcome as seen (its result may not be needed)."""
    if not task.cancelled():
        task.exception()


def backoff(attempt: int, base: float, cap: float, rnd: Callable[[], float] = random.random) -> float:
    """Exponential backoff with "equal jitter": half the step fixed, half random, capped."""
    step = min(cap, base * (2 ** min(attempt, 30)))
    return float(step / 2 + step / 2 * rnd())


def throttled_delay(retry_after: float, base: float, rnd: Callable[[], float] = random.random) -> float:
    """How long to wait after a 429: at least ``retry_after`` (and ``base``), plus up to a quarter
    more at random so followers throttled together do not come back together."""
    wait = max(retry_after, base, 0.0)
    return float(wait + wait / 4 * rnd())


class FollowClient(Protocol):
    """What a follower asks of another node (:class:`~statebus.federation.client.PeerClient`, or a
    fake in tests, as httpx's ``MockTransport`` stands in for the network)."""

    async def node_info(self, base: str) -> PubKey:
        """The public key the node at ``base`` says it has."""
        ...

    def ops(
        self, base: str, patterns: Sequence[str], since: Seq, *, live: bool = True
    ) -> AsyncGenerator[list[StreamItem], None]:
        """The signed ops stream of ``patterns`` after cursor ``since``, in batches of lines."""
        ...

    async def sync(
        self, base: str, session: SyncSession, on_page: Callable[[list[bytes]], Awaitable[None]] | None = None
    ) -> SyncSession:
        """A whole anti-entropy exchange; each page of the ops we lacked goes to ``on_page`` as it
        arrives (without it, ``session.received`` holds them all at the end)."""
        ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays in seconds: exponential from ``base`` up to ``cap``, with jitter."""

    base: float = 0.25
    cap: float = 30.0
    rnd: Callable[[], float] = random.random

    def delay(self, attempt: int) -> float:
        return backoff(attempt, self.base, self.cap, self.rnd)

    def throttled(self, retry_after: float) -> float:
        return throttled_delay(retry_after, self.base, self.rnd)


@dataclass(eq=False)
class FollowContext:
    """Everything a :class:`Follower` uses of its node and the network.

    Args:
        node: the node (the follower's state is stored on it).
        client: how to call other nodes.
        ingest: where received ops go (the federation's door to the node's op gate).
        locate: where to fetch a follow from, best first.
        backoff: reconnect delays.
        on_ingest: awaited after each batch taken: ``hook(follower, applied)``.
        blobs: fetches the bytes of the blob pointers taken, apart from the ops.
    """

    node: Node
    client: FollowClient
    ingest: Ingest
    locate: Callable[[Follow], Awaitable[list[str]]]
    backoff: Backoff = field(default_factory=Backoff)
    on_ingest: list[IngestHook] = field(default_factory=list)
    blobs: BlobFetcher | None = None
    """Where the pointers of blob values go to have their bytes fetched (None: never fetched)."""
    snapshots: SnapshotKeeper | None = None
    """Keeps the signed subtree snapshots installed (a relay serves them on); None keeps none."""


class Follower:
    """Follows one pattern, in a :class:`FollowContext`."""

    def __init__(self, ctx: FollowContext, follow: Follow) -> None:
        self.ctx = ctx
        self.follow = follow
        self.status = "syncing"
        self.reason = "starting: no exchange with a server yet"
        self.server: PubKey | None = None
        self.url: str | None = None
        self.cursors: dict[PubKey, Seq] = {}
        self.applied = 0
        self.rejected = 0
        self.last_rejection = ""
        self.synced_ops = 0
        self.sync_bytes = 0
        self.streamed_ops = 0
        self.connections = 0
        self.throttled = 0
        """How many times a server answered 429 (we waited its Retry-After)."""
        self.incomplete: dict[str, str] = {}
        """Keys this node cannot rebuild from the ops it was given, with the reason."""
        self.snapshot: Installed | None = None
        """The last signed subtree snapshot this follower installed."""
        self.snapshot_bytes = 0
        self.snapshot_keys = 0
        """Keys whose base came from signed snapshots (since start)."""
        self.live = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._persisted = 0.0
        self._load_state()

    # ------------------------------------------------------------------ state

    @property
    def rules(self) -> tuple[str, str]:
        """The owner's read-rule subtrees: ``/<owner>/.acl/`` and ``/<owner>/.shares/``."""
        owner = self.follow.owner
        return acl_prefix(owner), f"/{owner}/{SHARES}/"

    @property
    def patterns(self) -> list[str]:
        """Delegation records first, then the owner's read rules (a relay applies them to whoever
        asks it for this data: ``.acl`` as far as the server lets us have them, and ``.shares``),
        then the pattern."""
        return [keys_prefix(self.follow.owner), *self.rules, self.follow.pattern]

    def _load_state(self) -> None:
        change = self.ctx.node.fetch_or_none(state_key(self.ctx.node.local, self.follow.id))
        value: Any = change.value if change is not None and change.exists else None
        if isinstance(value, dict) and isinstance(value.get("cursors"), dict):
            self.cursors = {
                k: v for k, v in value["cursors"].items() if isinstance(v, int) and not isinstance(v, bool)
            }
        if isinstance(value, dict) and isinstance(value.get("incomplete"), list):
            self._recheck(k for k in value["incomplete"] if isinstance(k, str))
        if not isinstance(value, dict):
            return
        for counter in ("applied", "rejected"):
            n = value.get(counter)
            if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
                setattr(self, counter, n)
        if isinstance(value.get("last_rejection"), str):
            self.last_rejection = value["last_rejection"]
        url = value.get("url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            self.url = url

    def _recheck(self, keys: Iterable[str]) -> None:
        """Whether each of ``keys`` can be rebuilt here now (``Node.incomplete``)."""
        for key in keys:
            try:
                why = self.ctx.node.incomplete(key)
            except StatebusError:
                why = None
            if why is None:
                self.incomplete.pop(key, None)
            else:
                self.incomplete[key] = why

    def state(self) -> dict[str, JSON]:
        status, reason = self.status, self.reason
        if self.incomplete and status == "live":
            status = "incomplete"
            first = min(self.incomplete)
            reason = (
                f"{len(self.incomplete)} key(s) cannot be rebuilt from the ops the server has (their "
                "owner compacted history this node never had); served as 503 incomplete: "
                + self.incomplete[first]
            )
        listed: list[JSON] = [*sorted(self.incomplete)[:MAX_LISTED]]
        blobs = self.ctx.blobs
        pending = blobs.pending_under(self.follow.pattern) if blobs is not None else 0
        failed: list[JSON] = [*blobs.failures_under(self.follow.pattern)[-5:]] if blobs is not None else []
        return {
            "pattern": self.follow.pattern,
            "status": status,
            "reason": reason,
            "incomplete": listed,
            "blobs_pending": pending,
            "snapshot": None
            if self.snapshot is None
            else {
                "seq": self.snapshot.seq,
                "bytes": self.snapshot.size,
                "keys": len(self.snapshot.keys),
                "via": self.snapshot.via,
            },
            "blob_failures": failed,
            "server": self.server,
            "url": self.url,
            "cursors": dict(self.cursors),
            "applied": self.applied,
            "rejected": self.rejected,
            "last_rejection": self.last_rejection,
            "updated": round(time.time(), 3),
        }

    async def persist(self, *, force: bool = False) -> None:
        """Store the state (at most once a second unless ``force``)."""
        now = time.monotonic()
        if not force and now - self._persisted < PERSIST_INTERVAL:
            return
        if self.ctx.node.closing:
            return
        self._persisted = now
        try:
            await self.ctx.node.save(state_key(self.ctx.node.local, self.follow.id), self.state())
        except StatebusError as exc:  # pragma: no cover - the node is going away
            log.warning("could not store follow state: %s", exc.detail)

    async def _set(self, status: str, reason: str = "") -> None:
        changed = (status, reason) != (self.status, self.reason)
        self.status, self.reason = status, reason
        if status == "live":
            self.live.set()
        else:
            self.live.clear()
        if changed:
            await self.persist(force=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name=f"follow {self.follow.pattern}")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.status != "stopped":
            self.status = "stopped"
            self.reason = self.reason or "unfollowed or node stopping"
        await self.persist(force=True)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run(self) -> None:
        await self.persist(force=True)  # a restarted node's stored state said what it was before
        attempt = 0
        while not self._stop.is_set():
            try:
                await self._connect_any()
                attempt = 0
                reason = "server closed the stream"
            except QuotaExceeded as exc:
                await self._set("stopped", f"quota_exceeded: {exc.detail}")
                log.warning("stopped following %s: %s", self.follow.pattern, exc.detail)
                return
            except RateLimited as exc:  # the server asks us to slow down: not a failure
                self.throttled += 1
                await self._set("retrying", f"{exc.code}: {exc.detail}")
                await self._sleep(self.ctx.backoff.throttled(exc.retry_after))
                continue
            except StatebusError as exc:
                reason = f"{exc.code}: {exc.detail}"
            delay = self.ctx.backoff.delay(attempt)
            attempt += 1
            await self._set("retrying", reason)
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    # ------------------------------------------------------------------ one connection

    async def _connect_any(self) -> None:
        """Connect to the last server first (a restart, a reconnect) while ``locate`` runs alongside,
        then to the addresses ``locate`` found."""
        locating = asyncio.ensure_future(self.ctx.locate(self.follow))
        locating.add_done_callback(_retrieved)
        errors: list[StatebusError] = []
        first = [self.url] if self.url is not None else []
        try:
            for url in first:
                if await self._try(url, errors):
                    return
            urls = [u for u in await locating if u not in first]
            if not urls and not errors:
                raise PeerUnavailable(f"no address known for {self.follow.owner} (not in the DHT, no 'via')")
            for url in urls:
                if await self._try(url, errors):
                    return
        finally:
            locating.cancel()
        throttled = [e for e in errors if isinstance(e, RateLimited)]
        if throttled:  # a throttled server asked us to wait
            raise max(throttled, key=lambda e: e.retry_after)
        raise errors[-1]

    async def _try(self, url: str, errors: list[StatebusError]) -> bool:
        """One session with ``url``: True once it ended normally, False (the error kept) if it failed."""
        try:
            await self._session(url)
            return True
        except (QuotaExceeded, asyncio.CancelledError):
            raise
        except StatebusError as exc:
            errors.append(exc)
            log.info("follow %s via %s: %s", self.follow.pattern, url, exc.detail)
            return False

    async def _session(self, url: str) -> None:
        client = self.ctx.client
        self.url = url
        self.server = await client.node_info(url)
        while not self._stop.is_set():
            await self._set("syncing")
            synced_to: Seq | None = None
            unsure = False  # an exchange that could not bring everything claims no cursor
            patterns = self.patterns
            for pattern in list(patterns):  # delegation records first
                if pattern == self.follow.pattern and self._new():
                    await self._rebase(url, new=True)  # the bases first: then only the op tail moves
                try:
                    seq, partial = await self._sync(url, pattern)
                except StatebusError as exc:
                    if pattern not in self.rules or exc.status_hint != 403:
                        raise
                    # a server that keeps the owner's rules to itself (an older node): follow the data
                    # without them; this node then serves others only public/ of it (no rules: closed)
                    log.info("follow %s: %s refuses %s: %s", self.follow.pattern, url, pattern, exc.detail)
                    patterns.remove(pattern)
                    continue
                if pattern == self.follow.pattern and await self._rebase(url):
                    seq, again = await self._sync(url, pattern)  # the op tail after the bases
                    partial = partial or again
                unsure = unsure or partial
                if seq is not None:
                    synced_to = seq if synced_to is None else min(synced_to, seq)
            self.connections += 1
            if self.ctx.blobs is not None:
                self.ctx.blobs.rescan(self.follow.pattern, url)
            cursor = max(self.cursors.get(self.server, 0), 0 if unsure else synced_to or 0)
            self.cursors[self.server] = cursor
            if not await self._stream(url, cursor, patterns):
                return

    async def _sync(self, url: str, pattern: str) -> tuple[Seq | None, bool]:
        """One anti-entropy exchange on ``pattern``: the server's cursor it names (or None), and
        whether it could not bring everything."""
        local = op_set(self.ctx.node, pattern)
        taken: set[str] = set()

        async def page(ops: list[bytes]) -> None:
            taken.update(await self._ingest(ops))  # kept page by page: a broken exchange resumes
            self.synced_ops += len(ops)

        session = await self.ctx.client.sync(url, SyncSession(pattern, local.index), page)
        await page(session.take())  # a client that ignored on_page
        self._recheck(taken)
        self.sync_bytes += session.bytes_sent + session.bytes_received
        return session.server_seq, session.partial

    def _new(self) -> bool:
        """This node holds nothing under the pattern yet (no op, no base)."""
        node, pattern = self.ctx.node, self.follow.pattern
        return not node.scan(pattern, 0, 1) and node.horizon(pattern) == 0

    async def _rebase(self, url: str, *, new: bool = False) -> bool:
        """While keys of the pattern are incomplete (or, ``new``, before the first exchange of a node
        that holds nothing under it), install the bases the server's newest signed snapshot holds
        for them (rule 5); True when it installed any (the caller syncs again)."""
        pattern = self.follow.pattern
        keys: list[str] | None = None if new else [k for k in self.incomplete if k.startswith(pattern)]
        client = self.ctx.client
        if keys == [] or not isinstance(client, SnapshotClient):
            return False
        try:
            swarm = self.ctx.blobs.swarm if self.ctx.blobs is not None else None
            done = await install_snapshot(
                self.ctx.node, self.ctx.ingest, client, url, pattern, keys, self.ctx.snapshots, swarm
            )
        except BadSnapshot as exc:
            self.rejected += 1
            self.last_rejection = f"refused a snapshot of {pattern} from {url}: {exc.detail}"
            log.warning("follow %s: %s", pattern, self.last_rejection)
            await self.persist(force=True)
            return False
        except StorageFailed:
            raise
        except StatebusError as exc:  # none there, too large, unreachable: the keys stay incomplete
            log.info("follow %s: no snapshot from %s: %s: %s", pattern, url, exc.code, exc.detail)
            return False
        self.snapshot = done
        self.snapshot_bytes += done.size
        self.snapshot_keys += len(done.keys)
        self._recheck(done.keys)
        log.info("follow %s: installed %d bases from the snapshot at %d", pattern, len(done.keys), done.seq)
        return bool(done.keys)

    async def _stream(self, url: str, cursor: Seq, patterns: list[str]) -> bool:
        """Apply the ops stream from ``cursor``; True when the server asked for a new anti-entropy
        round (its history after our cursor was compacted), False when the stream ended."""
        assert self.server is not None
        async with contextlib.aclosing(self.ctx.client.ops(url, patterns, cursor)) as stream:
            async for items in stream:
                ops = [item.op for item in items if item.kind == "op"]
                if ops:
                    self.streamed_ops += len(ops)
                    await self._ingest(ops)
                if items and items[-1].kind != "reset":
                    self.cursors[self.server] = cursor = items[-1].seq
                for item in items:
                    if item.kind == "reset":
                        log.info(
                            "follow %s: %s resets our cursor (%s)", self.follow.pattern, url, item.reason
                        )
                        self.cursors[self.server] = item.seq if item.reason == "compacted" else 0
                        await self.persist(force=True)
                        return True
                    if item.kind == "live" and self.status != "live":
                        await self._set("live")
                await self.persist()
                if self._stop.is_set():
                    break
        return False

    async def _ingest(self, ops: list[bytes]) -> set[str]:
        """Take ``ops``; the keys they wrote."""
        if not ops:
            return set()
        result: IngestResult = await self.ctx.ingest.take(ops, peer=self.server)
        if self.incomplete:  # later ops (a whole new value) may have rebuilt one
            before = len(self.incomplete)
            self._recheck([k for k in result.keys if k in self.incomplete])
            if len(self.incomplete) != before:
                await self.persist(force=True)
        self.applied += result.applied
        if self.ctx.blobs is not None:
            for key, pointer in result.blobs:  # fetched apart: the ops behind never wait for bytes
                self.ctx.blobs.want(key, pointer, self.url)
        if result.rejected:
            self.rejected += len(result.rejected)
            self.last_rejection = (
                f"refused {len(result.rejected)} op(s) from {self.url}: {result.rejected[0]}"
            )
            log.warning("follow %s: %s", self.follow.pattern, self.last_rejection)
            await self.persist(force=True)
        for hook in self.ctx.on_ingest:
            await hook(self, result.applied)
        return result.keys
