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
   in step), then reconnect without growing the backoff;
7. a server whose peer stream slots are full sheds us (503, :class:`~statebus.errors.Shed`) with its
   signed relay list: check the signature against the key of the node we asked (the owner's own key
   when we asked the owner; ``statebus.federation.relays.verify``), then follow the pattern at one
   of the relays it names (``relays.choose``: the least lagging, at random), a relay that sheds us
   in turn leading one list deeper (bounded by ``relays.MAX_DEPTH``). We **stay** on that relay
   while it serves us (coming back to the origin each time a slot might be free would make it
   refuse as many requests as it saves streams); when it fails we start over from the last server,
   then the located addresses (the origin, which lists the relays current then). A relay we were
   shed to that sends a forged op, or lacks an op its origin held when it named the relay (the
   list's ``head``, still missing :data:`STALE_GRACE` seconds after we connected and caught up), is
   dropped (:class:`~statebus.errors.RelayDropped`) and not picked again for :data:`DROP_SECONDS`.
   A list that does not verify, or a relay's list no deeper than the list that named the relay, is
   refused: nothing it names is contacted, and we wait its ``Retry-After``. One connect tries at
   most :data:`MAX_SHED_TRIES` servers.

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
    InvalidValue,
    PeerUnavailable,
    QuotaExceeded,
    RateLimited,
    RelayDropped,
    Shed,
    StatebusError,
    StorageFailed,
)
from statebus.federation.blobs import BlobFetcher
from statebus.federation.client import StreamItem
from statebus.federation.ingest import Ingest, IngestResult
from statebus.federation.opset import op_set
from statebus.federation.policy import SHARES, Follow
from statebus.federation.relays import RelayList, choose, verify
from statebus.federation.snapshots import Installed, SnapshotClient, SnapshotKeeper, install_snapshot
from statebus.federation.sync import SyncSession
from statebus.identity.delegation import keys_prefix
from statebus.runtime import Node
from statebus.types import JSON, Key, PubKey, Seq, Version

log = logging.getLogger("statebus.federation")

IngestHook = Callable[["Follower", int], Awaitable[None]]
"""Awaited after each batch a follower took: ``hook(follower, applied)``."""

STATE_SEGMENT = ".federation/follows"
PERSIST_INTERVAL = 1.0
MAX_LISTED = 100
"""Incomplete keys a follow's state lists (the first, by name)."""
STALE_GRACE = 2.0
"""Seconds a relay we were shed to has, from our connecting, to bring the op its origin named as head."""
MAX_SHED_TRIES = 8
"""Servers one connect tries at most, relays named by relay lists included (a hostile relay's lists
cannot walk us through a network of addresses)."""
DROP_SECONDS = 300.0
"""How long a relay that lied (a forged op) or was stale is not picked again."""


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
    own_urls: tuple[str, ...] = ()
    """This node's own addresses: never a relay to follow."""
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
        self.depth = 1
        """Hops between this node and the owner: 1 on the owner (or a ``via``), more on a relay."""
        self.shed_by: PubKey | None = None
        """The node whose relay list sent us to the server we follow now (None: not shed)."""
        self.shed = 0
        """How many times a server shed us (503 ``shed``)."""
        self.dropped: dict[str, float] = {}
        """Relays we left for lying or being stale: URL → monotonic time until which they are skipped."""
        self._listed: RelayList | None = None
        self._relay_url: str | None = None
        self._relay_list: RelayList | None = None
        self._head: tuple[Key, Version] | None = None
        self._connected_at = 0.0
        self._tried: set[str] = set()

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
        depth = value.get("depth")
        shed_by = value.get("shed_by")
        if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 1 and isinstance(shed_by, str):
            self.depth, self.shed_by, self._relay_url = depth, shed_by, self.url  # on a relay when it stopped

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
            "depth": self.depth,
            "shed_by": self.shed_by,
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
        now = time.monotonic()
        self.dropped = {u: t for u, t in self.dropped.items() if t > now}
        self._tried = set()
        first = [self.url] if self.url is not None and self.url not in self.dropped else []
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

    async def _try(self, url: str, errors: list[StatebusError], listed: RelayList | None = None) -> bool:
        """One session with ``url`` (a relay ``listed`` named, or None): True once it ended
        normally, False (the error kept) if it failed."""
        self._tried.add(url)
        head = listed.head if listed is not None else None
        self._head = head if head is not None and head[0].startswith(self.follow.pattern) else None
        if listed is not None:  # shed here now
            self.depth, self.shed_by = listed.depth + 2, listed.node
            self._relay_url, self._relay_list = url, listed
        elif url == self._relay_url:  # back to the relay we were shed to (a reconnect, a restart)
            listed = self._relay_list
        else:
            self.depth, self.shed_by = 1, None
            self._relay_url = self._relay_list = None
        self._listed = listed
        try:
            await self._session(url)
            return True
        except Shed as exc:
            self.shed += 1
            errors.append(exc)
            log.info("follow %s: %s sheds us: %s", self.follow.pattern, url, exc.detail)
            return await self._shed(url, exc, errors)
        except RelayDropped as exc:
            self.dropped[url] = time.monotonic() + DROP_SECONDS
            self.last_rejection = f"left relay {url}: {exc.detail}"
            errors.append(exc)
            log.warning("follow %s: left relay %s: %s", self.follow.pattern, url, exc.detail)
            return False
        except (QuotaExceeded, asyncio.CancelledError):
            raise
        except StatebusError as exc:
            errors.append(exc)
            log.info("follow %s via %s: %s", self.follow.pattern, url, exc.detail)
            return False

    async def _shed(self, url: str, exc: Shed, errors: list[StatebusError]) -> bool:
        """Follow at one of the relays the server at ``url`` listed when it shed us (rule 7)."""
        asked, parent = self.server, self._listed
        try:
            if asked is None:
                raise StatebusError("the server did not say who it is")
            listed = verify(exc.relays, asked, self.follow.owner)
            if parent is not None and listed.depth <= parent.depth:
                raise InvalidValue(
                    f"a relay's list (depth {listed.depth}) is not below the list that named it"
                )
        except StatebusError as bad:
            self.last_rejection = f"refused the relay list of {url}: {bad.code}: {bad.detail}"
            log.warning("follow %s: %s", self.follow.pattern, self.last_rejection)
            errors[-1] = Shed(
                f"{exc.detail}; its relay list was refused: {bad.detail}", retry_after=exc.retry_after
            )
            return False
        skip = {*self.dropped, *self._tried, *self.ctx.own_urls}
        for relay in choose(listed, self.follow.pattern, skip=skip):
            if len(self._tried) >= MAX_SHED_TRIES:
                break
            if await self._try(relay.url, errors, listed):
                return True
        return False

    async def _session(self, url: str) -> None:
        client = self.ctx.client
        self.url = url
        self._connected_at = time.monotonic()
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
                if self._head is not None and items:
                    self._check_head(url)
                await self.persist()
                if self._stop.is_set():
                    break
        return False

    def _check_head(self, url: str) -> None:
        """Forget the list's head once we hold it; raise RelayDropped if the relay has not brought it
        :data:`STALE_GRACE` seconds after we connected and caught up."""
        assert self._head is not None
        key, version = self._head
        if self.ctx.node.knows(key, version):
            self._head = None
        elif self.status == "live" and time.monotonic() - self._connected_at > STALE_GRACE:
            raise RelayDropped(
                f"relay {url} is stale: it has not brought {key} version {version}, which its origin "
                "held when it named the relay"
            )

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
            forged = next((r for r in result.rejected if r.startswith("bad_signature")), None)
            if self._listed is not None and forged is not None:  # a relay we were shed to lies
                raise RelayDropped(f"relay {self.url} sent a forged op: {forged}")
        for hook in self.ctx.on_ingest:
            await hook(self, result.applied)
        return result.keys
