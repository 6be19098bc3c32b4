"""The Node: the bus plus durability and async streams, as the transports use it.

Every write method returns only once the write is durable (group commit); every stream is
bounded. All bus calls happen on the event loop's thread; storage writes happen in the
committer's writer thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from statebus.bus import Bus, Change
from statebus.bus.bus import MAX_RESUME_OPS, BatchSigner
from statebus.errors import ShuttingDown, StatebusError, StorageFailed
from statebus.oplog.events import Op, Patch
from statebus.runtime.committer import GroupCommitter
from statebus.runtime.snapshots import SnapshotPages
from statebus.runtime.streams import EventStream
from statebus.types import Seq, Version


class Node:
    def __init__(self, bus: Bus, *, batch_signer: BatchSigner | None = None, max_buffer: int = 1000) -> None:
        self.bus = bus
        self.committer = GroupCommitter(bus, batch_signer=batch_signer)
        self.max_buffer = max_buffer
        self._streams: set[EventStream] = set()
        self.closing = False
        self.on_close: list[Callable[[], None]] = []
        """Called once everything is written, before storage closes."""
        self.committer.on_rollback.append(self._cut_unstored)

    @property
    def local(self) -> str:
        return self.bus.local

    # ------------------------------------------------------------------ reads

    def fetch(self, key: str, rng: str | None = None) -> Change:
        """The state of ``key`` on disk: a write still being committed is not served before its
        commit succeeds, and never if it fails (bus rule 5)."""
        return self.bus.fetch(key, rng, durable=True)

    def children(self, prefix: str, after: str = "", limit: int = 100) -> list[str]:
        """The names under ``prefix`` as on disk (see :meth:`fetch`)."""
        return self.bus.children(prefix, after, limit, durable=True)

    # ------------------------------------------------------------------ durable writes

    # Each awaits the committer itself (no shared helper coroutine: one frame less per write).

    async def save(self, key: str, value: Any, **kw: Any) -> Change:
        change = self.bus.save(key, value, **kw)
        await self.committer.durable(change.seq)
        return change

    async def patch(self, key: str, patches: Iterable[Patch], **kw: Any) -> Change:
        change = self.bus.patch(key, patches, **kw)
        await self.committer.durable(change.seq)
        return change

    async def crdt_update(self, key: str, update: bytes, **kw: Any) -> Change:
        change = self.bus.crdt_update(key, update, **kw)
        await self.committer.durable(change.seq)
        return change

    async def delete(self, key: str, **kw: Any) -> Change:
        change = self.bus.delete(key, **kw)
        await self.committer.durable(change.seq)
        return change

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
    ) -> EventStream:
        """An async stream of the changes to one or more keys/subtrees (see ``Bus.observe``).

        With several patterns, the initial snapshots or backlogs of all come first, then live
        changes in node order. Raises HistoryCompacted when a resume point is gone.

        ``paged``: the current state (when there is no resume point) is read lazily, a page at a
        time as the stream is drained (see :mod:`statebus.runtime.snapshots`), instead of being
        buffered whole. ``max_resume``: more changes missing after ``since`` than this (per
        pattern) raise HistoryCompacted (the default is the bus's).
        """
        if self.closing:
            raise ShuttingDown("node is shutting down")
        stream = EventStream(self, max_buffer or self.max_buffer)
        pats = [patterns] if isinstance(patterns, str) else list(patterns)
        lazy = paged and snapshot and since is None and parents is None
        try:
            for p in pats:
                stream._subs.append(
                    self.bus.observe(
                        p,
                        stream._push,
                        since=since,
                        parents=parents,
                        snapshot=snapshot and not lazy,
                        max_resume=MAX_RESUME_OPS if max_resume is None else max_resume,
                    )
                )
            if lazy:
                stream.pages = SnapshotPages(self.bus, [self.bus.parse(p) for p in pats], self.bus.seq)
        except BaseException:
            stream.close()
            raise
        self._streams.add(stream)
        return stream

    def _cut_unstored(self, low: Seq, high: Seq) -> None:
        """Storage refused a batch: cut every stream holding a change that was rolled back (seq in
        ``low < seq <= high``; its reader resumes from its last cursor, which names stored
        history), after dropping those changes, so nobody sees them."""
        for stream in list(self._streams):
            kept = [c for c in stream._q if not low < c.seq <= high or c.kind == "derived"]
            if len(kept) < len(stream._q):
                stream._q[:] = kept
                stream.cut(StorageFailed("storage failed; resume from your last cursor"))

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    # ------------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        """Close every stream, write everything acknowledged-to-be, close storage."""
        self.closing = True
        for stream in list(self._streams):
            stream.close()
        await self.committer.aclose()
        try:
            for callback in self.on_close:
                callback()
        finally:
            self.bus.storage.close()
