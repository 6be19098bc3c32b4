"""The Node: the bus plus durability and async streams, as the transports use it.

Rules:

1. The node is the only door: transports, access control and federation call its methods, never its
   bus, committer or storage (``tests/runtime/test_node_facade.py`` greps for it). What they need of
   those, the node offers under its own name.
2. Every write method returns only once the write is durable (group commit); every stream is
   bounded. All bus calls happen on the event loop's thread; storage writes happen in the
   committer's writer thread.
3. Reads of the sync tier (``fetch_or_none``, ``walk``, ``observe``) are the bus's own, with its
   defaults (they see a write before its commit unless ``durable=True``); :meth:`Node.fetch` and
   :meth:`Node.children` read what is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from statebus.blobs import BLOB_TYPE, BlobInfo, BlobPointer, BlobStore
from statebus.bus import Bus, Change, Subscription
from statebus.bus.bus import MAX_RESUME_OPS, BatchSigner
from statebus.bus.handlers import Handler
from statebus.bus.history import HistoryPage
from statebus.bus.reactive import ReactiveFn
from statebus.errors import Incomplete, ShuttingDown, StatebusError, StorageFailed
from statebus.keys import namespace_of
from statebus.keys.memo import KeyMemo
from statebus.oplog.codec import decode_op
from statebus.oplog.events import Op, Patch
from statebus.runtime.committer import GroupCommitter
from statebus.runtime.snapshots import SnapshotPages
from statebus.runtime.streams import EventStream
from statebus.storage.base import Snapshot, StoredOp
from statebus.types import Key, Seq, Version

PACE_STALL = 0.1
"""Seconds :meth:`Node.paced` waits for a stream that drains nothing before it stops waiting for it."""


@dataclass(frozen=True, slots=True)
class CommitStats:
    """The group committer's counters since start (for metrics and health)."""

    batches: int
    """Transactions written."""
    ops_written: int
    failures: int
    """Commits that failed (each rolled back)."""
    ops_rolled_back: int
    healthy: bool
    """False from a failed commit until a probe or a commit succeeds."""
    backoff: float
    """Seconds of the current refusal of writes after a failure (0: healthy)."""


class WriteCheck(Protocol):
    """A check of a local write before it is made, awaited off the bus (hosted apps' validators:
    statebus.apps.handlers). ``covers`` must be cheap; ``check`` raises a StatebusError to refuse."""

    def covers(self, key: Key) -> bool: ...

    async def check(self, key: Key, kind: str, body: Any, author: str) -> None: ...


class Node:
    def __init__(
        self,
        bus: Bus,
        *,
        batch_signer: BatchSigner | None = None,
        max_buffer: int = 1000,
        blobs: BlobStore | None = None,
    ) -> None:
        self.bus = bus
        self.blobs = blobs
        """The node's blob store (``<data>/blobs``), where values stored as blobs keep their bytes;
        None: values are never stored as blobs (a node in memory)."""
        self.blob_roots: list[Callable[[], Iterable[str]]] = []
        """More blob hashes that are live though no op points to them (installed apps' bundles):
        :meth:`blob_refs` adds what each returns."""
        self.committer = GroupCommitter(bus, batch_signer=batch_signer)
        self.max_buffer = max_buffer
        self._streams: set[EventStream] = set()
        self._forget = self._streams.discard  # one bound method for every stream's on_close
        self.closing = False
        self.on_close: list[Callable[[], None]] = []
        """Called once everything is written, before storage closes."""
        self.on_aclose: list[Callable[[], Awaitable[None]]] = []
        """Awaited first when the node closes, before its streams and writes: what runs tasks on the
        node's loop (the app host) cancels them and waits for them here, so none outlives the loop."""
        self.committer.on_rollback.append(self._cut_unstored)
        self.write_checks: list[WriteCheck] = []
        """Awaited before every local write whose key one of them covers (``save``, ``patch``,
        ``crdt_update``, ``delete``); ops from outside pass the op gate's checks instead."""

    @property
    def local(self) -> str:
        return self.bus.local

    @property
    def seq(self) -> Seq:
        """The cursor of the newest change (durable or not)."""
        return self.bus.seq

    @property
    def durable_seq(self) -> Seq:
        """The cursor up to which every change is on disk."""
        return self.committer.durable_seq

    @property
    def pending(self) -> int:
        """Ops (and snapshots) waiting for the next commit."""
        return self.bus.pending

    @property
    def local_refused(self) -> str | None:
        """Why local writes are refused (the store is behind what this node committed), or None."""
        return self.bus.local_refused

    @property
    def storage_refused(self) -> str | None:
        """Why storage takes no writes now (a failed commit's backoff), or None."""
        return self.bus.storage_refused

    @property
    def healthy(self) -> bool:
        """False while storage refuses writes (from a failed commit until a probe or commit succeeds)."""
        return self.committer.healthy

    def commit_stats(self) -> CommitStats:
        c = self.committer
        return CommitStats(c.batches, c.ops_written, c.failures, c.ops_rolled_back, c.healthy, c.backoff)

    @property
    def on_durable(self) -> list[Callable[[Seq], None]]:
        """Called with the durable cursor after each commit (append to listen, remove to stop)."""
        return self.committer.on_durable

    @property
    def storage_path(self) -> Path | None:
        """The file of the store (None: a store in memory)."""
        path = getattr(self.bus.storage, "path", None)
        return path if isinstance(path, Path) else None

    # ------------------------------------------------------------------ reads

    def fetch(self, key: str, rng: str | None = None) -> Change:
        """The state of ``key`` on disk: a write still being committed is not served before its
        commit succeeds, and never if it fails (bus rule 5)."""
        return self.bus.fetch(key, rng, durable=True)

    def fetch_version(self, key: str, versions: Sequence[Version]) -> Change:
        """The state of ``key`` at a past version frontier while its history holds it (the current
        state, as on disk, when ``versions`` is its frontier). Raises NotFound, or HistoryCompacted
        (410) naming the horizon when that state was folded away."""
        return self.bus.fetch_version(key, versions, durable=True)

    def yjs_update(self, key: str, versions: Sequence[Version], *, durable: bool = True) -> bytes:
        """The Yjs document of ``key`` at the frontier ``versions`` (as :meth:`fetch` or
        :meth:`fetch_version` name it, or a stream's snapshot: ``durable=False``) as one Yjs
        update. Raises NotAcceptable (not a Yjs key), NotFound, or HistoryCompacted (410, with the
        horizon)."""
        return self.bus.yjs_update(key, versions, durable=durable)

    def yjs_updates_after(self, key: str, parents: Sequence[Version]) -> bytes:
        """The Yjs updates of ``key`` on disk after the versions ``parents``, merged into one (an
        empty update when there are none). Raises as :meth:`yjs_update`."""
        return self.bus.yjs_updates_after(key, parents, durable=True)

    def history_page(self, key: str, after: Seq = 0, limit: int = 100) -> HistoryPage:
        """A page of the versions of ``key`` after cursor ``after`` (oldest first), and its horizon,
        as on disk (see :meth:`fetch`)."""
        return self.bus.history_page(key, after, limit, durable=True)

    def children(self, prefix: str, after: str = "", limit: int = 100) -> list[str]:
        """The names under ``prefix`` as on disk (see :meth:`fetch`)."""
        return self.bus.children(prefix, after, limit, durable=True)

    @property
    def keys(self) -> KeyMemo:
        """The node's one memo of parsed keys (the bus's): transports parse request paths with it."""
        return self.bus.keys

    def parse(self, key: str, *, allow_subtree: bool = True) -> Key:
        """``key`` in normal form (``/~/`` is this node's namespace). Raises InvalidKey."""
        return self.bus.parse(key, allow_subtree=allow_subtree)

    def fetch_or_none(self, key: str, *, durable: bool = False) -> Change | None:
        """The state of ``key``, None if it never existed (the bus's read: rule 3)."""
        return self.bus.fetch_or_none(key, durable=durable)

    def incomplete(self, key: str) -> str | None:
        """Why this replica cannot claim the state of another node's ``key`` (its owner compacted
        history this replica never had), or None. A node's own keys are never incomplete."""
        k = self.bus.parse(key, allow_subtree=False)
        return None if namespace_of(k) == self.local else self.bus.gap(k)

    def knows(self, key: str, version: Version) -> bool:
        """Whether this replica holds ``version`` of ``key`` (kept in its log, or folded)."""
        return self.bus.knows(key, version)

    def check_complete(self, key: str) -> None:
        """Raise :class:`~statebus.errors.Incomplete` (503, with the reason) if this replica cannot
        rebuild ``key`` (:meth:`incomplete`): it then serves no value and claims no version."""
        why = self.incomplete(key)
        if why is not None:
            raise Incomplete(why)

    def walk(self, prefix: Key, limit: int) -> list[Key]:
        """Up to ``limit`` keys under ``prefix`` (the bus's read: rule 3)."""
        return self.bus.walk(prefix, limit)

    def observe(self, pattern: str, callback: Callable[[Change], None], **kw: Any) -> Subscription:
        """The synchronous tier of subscriptions (``Bus.observe``): ``callback`` runs inside the write."""
        return self.bus.observe(pattern, callback, **kw)

    def handle(self, pattern: str, **hooks: Any) -> Handler:
        """Hook into reads and writes of keys matching ``pattern`` (``Bus.handle``)."""
        return self.bus.handle(pattern, **hooks)

    def unhandle(self, handler: Handler) -> None:
        """Remove a handler :meth:`handle` added."""
        self.bus.handlers.remove(handler)

    def reactive(self, pattern: str, fn: ReactiveFn) -> None:
        """Make the keys matching ``pattern`` derived: their value is ``fn(key, get)`` (``Bus.reactive``).
        Defined in Python only, by the program that embeds the node (docs/python-api.md)."""
        self.bus.reactive(pattern, fn)

    def unreactive(self, pattern: str) -> None:
        """Undo :meth:`reactive` for ``pattern`` (``Bus.unreactive``)."""
        self.bus.unreactive(pattern)

    def refresh_derived(self, key: str) -> None:
        """Compute derived ``key`` again and tell its subscribers if it changed (``Bus.refresh_derived``)."""
        self.bus.refresh_derived(key)

    def derived_inputs(self, key: Key) -> frozenset[Key] | None:
        """The keys derived ``key`` read, or None if it is not derived (``Bus.derived_inputs``)."""
        return self.bus.derived_inputs(key)

    def check_parents(self, key: Key, parents: Sequence[Version], version: Version | None = None) -> None:
        """Raise unless this node holds every version of ``parents`` for ``key`` (``Bus.check_parents``)."""
        self.bus.check_parents(key, parents, version)

    def scan(self, pattern: str, after: Seq, limit: int) -> list[StoredOp]:
        """The stored ops under ``pattern`` after cursor ``after``, oldest first (at most ``limit``)."""
        return self.bus.storage.scan(pattern, after, limit)

    def blob_refs(self) -> set[str]:
        """Every blob hash a stored op, or a key's current value, points to (what blob GC keeps).
        Reads the whole store: for an occasional collection, not a request."""
        refs: set[str] = set()
        marker = BLOB_TYPE.encode()
        after: Seq = 0
        while True:
            batch = self.bus.storage.scan("", after, 5000)
            for stored in batch:
                if marker in stored.data:
                    op = decode_op(stored.data)
                    if op.content_type == BLOB_TYPE and isinstance(op.body, bytes):
                        with contextlib.suppress(StatebusError):
                            refs.add(BlobPointer.decode(op.body).hash)
            if len(batch) < 5000:
                break
            after = batch[-1].seq
        namespaces: list[str] = []
        while names := self.bus.storage.children("/", namespaces[-1] if namespaces else "", 500):
            namespaces.extend(names)
        for ns in namespaces:  # values whose ops were folded into a snapshot
            for key in self.bus.walk("/" + ns, 10**9):
                change = self.bus.fetch_or_none(key)
                if change is not None and change.content_type == BLOB_TYPE:
                    with contextlib.suppress(StatebusError):
                        refs.add(BlobPointer.decode(bytes(change.value)).hash)
        for roots in self.blob_roots:
            refs.update(roots())
        return refs

    def collect_blobs(self, grace: float = 60.0) -> list[BlobInfo]:
        """Remove the blobs nothing points to (:meth:`blob_refs`) that are older than ``grace``
        seconds (a blob stored for a write still being committed is younger); return them."""
        if self.blobs is None:
            return []
        return self.blobs.gc(self.blob_refs(), grace=grace)

    def horizon(self, pattern: str) -> Seq:
        """The cursor below which the history under ``pattern`` was compacted away."""
        return self.bus.storage.horizon(pattern)

    async def stored_bases(self, pattern: str, limit: int) -> list[Snapshot]:
        """The compaction snapshots on disk of up to ``limit`` keys under the subtree ``pattern``, by
        key (what a signed subtree snapshot carries: ``statebus.federation.snapshots``); read off
        the event loop."""
        keys = self.bus.walk(self.bus.parse(pattern), limit)
        storage = self.bus.storage

        def read() -> list[Snapshot]:
            out: list[Snapshot] = []
            for key in keys:
                record = storage.load(key)
                if record is not None and record.snapshot is not None:
                    out.append(record.snapshot)
            return out

        return await asyncio.to_thread(read)

    async def install_bases(self, bases: Sequence[tuple[Key, bytes]]) -> list[Key]:
        """Put the owner's signed bases in place of what this replica holds of each key
        (``Bus.install``, history rule 5) and return once they are on disk; the keys installed.
        Ops a base did not fold stay on top of it, unless they interleave with ones it folded: then
        they are dropped too, and the caller fetches them again (anti-entropy). Raises BadSnapshot
        (a base that does not load: the bases before it are installed) or StorageFailed."""
        await self.flush()
        failures = self.committer.failures
        done: list[Key] = []
        try:
            for key, data in bases:
                self.bus.install(key, data)
                done.append(self.bus.parse(key, allow_subtree=False))
        finally:
            while self.bus.pending and self.committer.failures == failures and not self.closing:
                self.committer.kick()
                await asyncio.sleep(0.002)
        if self.committer.failures != failures:
            raise StorageFailed("the installed bases could not be stored; nothing of them was kept")
        return done

    async def adopt_snapshots(self, snaps: Sequence[tuple[Key, bytes, Version | None]]) -> list[Key]:
        """Restore only (``statebus restore --from-mirror``, a node that takes no other write): put
        back the compaction snapshots the owner took, ``(key, snapshot bytes, version of the key's
        first op after it or None)``. The key's restored ops before that op are the ones the
        snapshot folded: they are replaced by it, as compaction did on the owner's node, and the key
        is reloaded from disk. Returns the keys that hold no restored op (nothing to put it on)."""
        await self.flush()
        storage = self.bus.storage
        adopted: list[Key] = []
        missing: list[Key] = []
        for key, data, first in snaps:
            record = storage.load(key)
            if record is None or not record.ops:
                missing.append(key)
                continue
            at = next((i for i, op in enumerate(record.ops) if op.version == first), len(record.ops))
            cut = record.ops[at - 1].seq if at else record.ops[0].seq - 1
            raw = json.loads(data)
            raw["log"]["seq"] = cut  # the base is at this store's numbering, not the old node's
            data = json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()
            await asyncio.to_thread(storage.compact, Snapshot(key=key, seq=cut, data=data))
            adopted.append(key)
        self.bus.rollback(adopted)  # nothing is pending: this only drops their cached entries
        return missing

    # ------------------------------------------------------------------ durable writes

    # Each awaits the committer itself (no shared helper coroutine: one frame less per write).

    async def save(self, key: str, value: Any, **kw: Any) -> Change:
        if self.write_checks:
            await self._check_write(key, "set", value, kw)
        change = self.bus.save(key, value, **kw)
        await self.committer.durable(change.seq)
        return change

    async def patch(self, key: str, patches: Iterable[Patch], **kw: Any) -> Change:
        if self.write_checks:
            await self._check_write(key, "patch", patches, kw)
        change = self.bus.patch(key, patches, **kw)
        await self.committer.durable(change.seq)
        return change

    async def crdt_update(self, key: str, update: bytes, **kw: Any) -> Change:
        if self.write_checks:
            await self._check_write(key, "crdt", update, kw)
        change = self.bus.crdt_update(key, update, **kw)
        await self.committer.durable(change.seq)
        return change

    async def delete(self, key: str, **kw: Any) -> Change:
        if self.write_checks:
            await self._check_write(key, "delete", None, kw)
        change = self.bus.delete(key, **kw)
        await self.committer.durable(change.seq)
        return change

    async def _check_write(self, key: str, kind: str, body: Any, kw: dict[str, Any]) -> None:
        k = self.bus.parse(key, allow_subtree=False)
        author = kw.get("author") or self.local
        for check in list(self.write_checks):
            if check.covers(k):
                await check.check(k, kind, body, author)

    async def apply(self, op: Op, *, peer: str | None = None, encoded: bytes | None = None) -> Change | None:
        change = self.bus.apply(op, peer=peer, encoded=encoded)
        if change is not None:
            await self.committer.durable(change.seq)
        return change

    async def apply_many(
        self, ops: Iterable[tuple[Op, bytes | None]], *, peer: str | None = None
    ) -> list[Change | StatebusError | None]:
        """Apply remote ops (each with its canonical bytes, or None) in order; return once every
        applied one is durable. Each result is the change, None for an op already held, or the
        error that refused that op alone (the others still apply).

        Raises:
            StorageFailed: storage refused the ops (nothing unstored is kept; the results are lost).
        """
        results: list[Change | StatebusError | None] = []
        last: Seq = 0
        try:
            for op, encoded in ops:
                try:
                    change = self.bus.apply(op, peer=peer, encoded=encoded)
                except StorageFailed:
                    raise
                except StatebusError as exc:
                    results.append(exc)
                    continue
                results.append(change)
                if change is not None:
                    last = change.seq
        finally:
            if last:
                await self.committer.durable(last)
        return results

    async def durable(self, seq: Seq) -> None:
        """Return once every change up to ``seq`` is on disk. Raises StorageFailed if it was rolled back."""
        await self.committer.durable(seq)

    async def flush(self) -> None:
        await self.committer.durable(self.bus.seq)

    # ------------------------------------------------------------------ streams

    def events(
        self,
        patterns: str | Sequence[str],
        *,
        since: Seq | None = None,
        parents: Sequence[Version] | None = None,
        snapshot: bool = True,
        max_buffer: int | None = None,
        paged: bool = False,
        max_resume: int | None = None,
        filter: Callable[[Change], bool] | None = None,
    ) -> EventStream:
        """An async stream of the changes to one or more keys/subtrees (see ``Bus.observe``).

        With several patterns, the initial snapshots or backlogs of all come first, then live
        changes in node order. Raises HistoryCompacted when a resume point is gone.

        ``paged``: the current state (when there is no resume point) is read lazily, a page at a
        time as the stream is drained (see :mod:`statebus.runtime.snapshots`), instead of being
        buffered whole. ``max_resume``: more changes missing after ``since`` than this (per
        pattern) raise HistoryCompacted (the default is the bus's). ``filter``: only the changes it
        returns True for reach the stream (starting state, backlog and live changes alike; access
        control passes the keys a client may read).

        A change of another node's key that this replica cannot rebuild (:meth:`incomplete`) never
        reaches a stream: no value, no version, no event, until an op rebuilds the key (its change
        then carries the whole value). Streams of this node's own keys skip the check.
        """
        if self.closing:
            raise ShuttingDown("node is shutting down")
        stream = EventStream(self.committer, self._forget, max_buffer or self.max_buffer)
        pats = [patterns] if isinstance(patterns, str) else list(patterns)
        lazy = paged and snapshot and since is None and parents is None
        own = f"/{self.local}/"
        if any(not self.bus.parse(p).startswith(own) for p in pats):  # another namespace may be in it
            filter = self._claimable if filter is None else _both(self._claimable, filter)
        push = stream._push if filter is None else _filtered(stream._push, filter)
        try:
            for p in pats:
                stream.attach(
                    self.bus.observe(
                        p,
                        push,
                        since=since,
                        parents=parents,
                        snapshot=snapshot and not lazy,
                        max_resume=MAX_RESUME_OPS if max_resume is None else max_resume,
                    )
                )
            if lazy:
                stream.pages = SnapshotPages(self.bus, [self.bus.parse(p) for p in pats], self.bus.seq)
                stream.pages.keep = filter
        except BaseException:
            stream.close()
            raise
        self._streams.add(stream)
        return stream

    def _claimable(self, change: Change) -> bool:
        """False for a change of another node's key this replica cannot rebuild (streams skip it)."""
        key = change.key
        if key.startswith(f"/{self.local}/"):
            return True
        return self.bus.gap(key) is None

    def _cut_unstored(self, low: Seq, high: Seq) -> None:
        """Storage refused a batch: cut every stream holding a change that was rolled back (seq in
        ``low < seq <= high``; its reader resumes from its last cursor, which names stored
        history), after dropping those changes, so nobody sees them."""
        for stream in list(self._streams):
            if stream.drop_range(low, high):
                stream.cut(StorageFailed("storage failed; resume from your last cursor"))

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def stream_backlog(self) -> tuple[int, int]:
        """Changes committed but not yet taken by their streams: (the sum, the largest one stream
        holds). Read at scrape time (``/metrics``: the fan-out lag), never on the write path."""
        sizes = [len(stream) for stream in list(self._streams)]
        return sum(sizes), max(sizes, default=0)

    async def paced(self, room: int, stall: float = PACE_STALL) -> None:
        """Wait until every stream someone reads has room for ``room`` more changes, as long as
        those streams keep draining (a reader that takes nothing for ``stall`` seconds is not waited
        for: its own buffer bound deals with it). A bulk apply (a federation catch-up) calls this
        between batches, so the node's own subscribers are paced, not cut off."""
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        behind: int | None = None
        while True:
            lagging = [s for s in self._streams if s.reading and s.room < room]
            if not lagging:
                return
            now = loop.time()
            total = sum(s.max_buffer - s.room for s in lagging)
            if behind is None or total < behind:
                last_progress = now
            elif now - last_progress > stall:
                return
            behind = total
            await asyncio.sleep(0.001)

    # ------------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        """Close every stream, write everything acknowledged-to-be, close storage."""
        self.closing = True
        for closer in self.on_aclose:
            await closer()
        for stream in list(self._streams):
            stream.close()
        await self.committer.aclose()
        try:
            for callback in self.on_close:
                callback()
        finally:
            self.bus.storage.close()


def _both(first: Callable[[Change], bool], then: Callable[[Change], bool]) -> Callable[[Change], bool]:
    def ok(change: Change) -> bool:
        return first(change) and then(change)

    return ok


def _filtered(callback: Callable[[Change], None], ok: Callable[[Change], bool]) -> Callable[[Change], None]:
    def deliver(change: Change) -> None:
        if ok(change):
            callback(change)

    return deliver
