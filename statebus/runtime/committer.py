"""Group commit: many writes, one transaction, one fsync.

Rules:

1. A write is acknowledged (its ``durable(seq)`` returns) only after the storage transaction that
   holds it has committed.
2. While one batch is being written (in a single writer thread, so SQLite never blocks the event
   loop), new writes pile up in the bus's outbox and go out together in the next batch: the batch
   grows with the load, and an idle node writes each op at once.
3. If storage fails (disk full, I/O error), nothing that was not committed stays visible: every
   waiter of that batch, and of every write still in the outbox, gets :class:`StorageFailed`; the
   bus rolls back everything not durable (bus rule 5); the ``on_rollback`` callbacks run (the node
   cuts the streams that held such changes). Writes are then refused (503 ``storage_failed``,
   nothing changes) for a backoff that starts at ``RETRY_FIRST`` and doubles up to ``RETRY_MAX``.
   After it, a storage with ``probe()`` (SQLite: one small real write) is probed, and writes are
   taken again when the probe succeeds; without a probe the next write tries storage. A failed
   probe or commit doubles the backoff; a successful one makes the node healthy. The process stays
   up and recovers by itself once space returns.
4. A storage in ``"process"`` durability (its ``durability`` attribute; SQLite with
   ``synchronous=NORMAL``) does not fsync per commit. After a commit, its ``sync()`` (an fsync of
   the WAL) runs in the writer thread within ``SYNC_INTERVAL`` seconds, so what was acknowledged
   survives a power cut at most that long after its answer; ``aclose`` syncs once more. A failed
   sync is logged and tried again at the next commit (the process-crash promise does not depend
   on it).
5. Such a store's commits run on the event loop's thread, not the writer thread (rule 2): with
   no fsync a commit is a few SQLite page writes, cheaper than the hand-off to a thread and back
   (measured in docs/performance.md). The store's checkpoints, which do fsync, run only inside
   ``sync()``, in the writer thread, which therefore also starts after ``SYNC_OPS`` ops (the WAL
   stays small); a batch waits for a running sync instead of blocking on the store's lock.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from statebus.bus import Bus
from statebus.bus.bus import BatchSigner
from statebus.errors import StorageFailed
from statebus.storage.base import Snapshot, StoredOp
from statebus.storage.cipher import ERRORS as STORE_ERRORS
from statebus.types import Seq

__all__ = ["RETRY_FIRST", "RETRY_MAX", "GroupCommitter", "StorageFailed"]

log = logging.getLogger("statebus.commit")

RETRY_FIRST = 0.5
"""Seconds writes are refused after the first failed commit; doubled after each failure in a row."""
RETRY_MAX = 30.0
"""Longest wait between two tries of a failing storage."""
SYNC_INTERVAL = 1.0
"""Longest time from a commit to the fsync that makes it survive a power cut, in ``"process"``
durability (rule 4)."""
SYNC_OPS = 256
"""...or sooner, once this many ops were committed since the last sync: each sync checkpoints the
WAL (rule 5), which stays near SQLite's own 1,000-page checkpoint size."""
LOST_RANGES = 64
"""How many rolled-back sequence ranges :meth:`GroupCommitter.durable` remembers."""


def _call_all(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


def failure_reason(exc: BaseException) -> str:
    """A short, secret-free reason for a failed commit (no paths, no values)."""
    text = str(exc).lower()
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "disk full"
    if isinstance(exc, STORE_ERRORS) and ("full" in text or "no space" in text):
        return "disk full"
    if isinstance(exc, (*STORE_ERRORS, OSError)):
        return f"I/O error: {type(exc).__name__}"
    return f"internal error: {type(exc).__name__}"


class GroupCommitter:
    def __init__(self, bus: Bus, *, batch_signer: BatchSigner | None = None) -> None:
        self.bus = bus
        self.batch_signer = batch_signer
        self.durable_seq: Seq = bus.durable_seq
        """The bus's durable cursor, copied after each commit and rollback: a plain attribute, read
        once per change per stream (``EventStream._push`` and ``drain_ready``)."""
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="statebus-writer")
        self._waiters: list[tuple[Seq, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._durable_event = asyncio.Event()
        self.batches = 0
        self.ops_written = 0
        self.failures = 0
        """Commits that failed (each rolled back), since start."""
        self.ops_rolled_back = 0
        self.backoff = 0.0
        """Seconds of the current refusal after a failure; 0 once a commit succeeded."""
        self._retry: asyncio.TimerHandle | None = None
        self._probe: asyncio.Task[None] | None = None
        self._lost: list[tuple[Seq, Seq]] = []
        self.on_durable: list[Callable[[Seq], None]] = []
        self.on_rollback: list[Callable[[Seq, Seq], None]] = []
        """Called after a rollback with ``(low, high)``: the changes with ``low < seq <= high`` were
        dropped (the durable cursor is ``high`` now)."""
        self._once: list[Callable[[], None]] = []
        storage = bus.storage
        self._sync: Callable[[], None] | None = (
            getattr(storage, "sync", None) if getattr(storage, "durability", "power") == "process" else None
        )
        """The storage's fsync when it does not fsync each commit (rule 4), else None."""
        self._inline = self._sync is not None
        """Commit on the event loop's thread (rule 5): a ``"process"`` store's commit does not wait
        for the disk."""
        self._sync_timer: asyncio.TimerHandle | None = None
        self._unsynced = 0
        """Ops committed since the last sync started."""
        self._syncing: asyncio.Task[None] | None = None
        self.syncs = 0
        """Completed ``sync()`` calls (``"process"`` durability), since start."""

    @property
    def healthy(self) -> bool:
        """False from a failed commit until a probe or a commit succeeds."""
        return self.backoff == 0.0

    async def durable(self, seq: Seq) -> None:
        """Return once every op up to ``seq`` is on disk; raise StorageFailed if it was rolled back."""
        for low, high in self._lost:
            if low < seq <= high:
                raise StorageFailed("the write could not be stored; nothing of it was kept")
        if seq <= self.durable_seq:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, fut))
        self.kick()
        await fut

    def kick(self) -> None:
        """Start a flush if one is not running and there is something to write."""
        if self._task is None and self.bus.pending:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def call_on_durable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, after the next batch is on disk (streams waiting for durability)."""
        self._once.append(callback)

    async def wait_durable_change(self) -> None:
        await self._durable_event.wait()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.bus.pending:
                try:
                    # signing and encoding can fail too (a bug, or a value that slipped past
                    # validation): fail the waiters loudly rather than leave them hanging
                    if self._inline and self._syncing is not None:
                        await asyncio.shield(self._syncing)  # it holds the store's write lock
                    stored, snaps = self.bus.take_outbox(self.batch_signer)
                    last = self.bus.taken_seq
                    if self._inline:
                        self._write(stored, snaps)
                    else:
                        await loop.run_in_executor(self._executor, self._write, stored, snaps)
                except BaseException as exc:
                    self._roll_back(exc, stored, snaps)
                    return
                self.batches += 1
                self.ops_written += len(stored)
                if self.backoff:
                    log.warning("storage recovered: commits succeed again")
                    self.backoff = 0.0
                self.bus.mark_durable(last)
                self.durable_seq = self.bus.durable_seq
                if self._sync is not None:
                    self._unsynced += len(stored)
                    if self._unsynced >= SYNC_OPS and self._syncing is None:
                        if self._sync_timer is not None:
                            self._sync_timer.cancel()
                        self._start_sync()
                    elif self._sync_timer is None:
                        self._sync_timer = loop.call_later(SYNC_INTERVAL, self._start_sync)
                self._release(last)
        finally:
            self._task = None

    def _roll_back(self, exc: BaseException, stored: list[StoredOp], snaps: list[Snapshot]) -> None:
        """Storage refused a batch: drop everything not durable, fail its writers, refuse writes
        for a while (rule 3)."""
        bus = self.bus
        reason = failure_reason(exc)
        low, high = bus.durable_seq, bus.seq
        self.failures += 1
        self.ops_rolled_back += high - low
        self._lost = [*self._lost[-(LOST_RANGES - 1) :], (low, high)]
        self._refuse(reason)
        bus.rollback([op.key for op in stored] + [snap.key for snap in snaps])
        self.durable_seq = bus.durable_seq
        log.error(
            "storage write failed (%s): rolled back ops %d..%d, refusing writes for %g s",
            reason,
            low + 1,
            high,
            self.backoff,
        )
        error = f"the write could not be stored ({reason}); nothing of it was kept"
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(StorageFailed(error))
        self._waiters.clear()
        for callback in self.on_rollback:
            callback(low, high)

    def _refuse(self, reason: str) -> None:
        """Refuse writes for the next backoff (doubled), then try storage again."""
        self.backoff = min(RETRY_MAX, self.backoff * 2 or RETRY_FIRST)
        self.bus.storage_refused = (
            f"storage is failing ({reason}); writes are refused and tried again in {self.backoff:g} s"
        )
        if self._retry is not None:
            self._retry.cancel()
        self._retry = asyncio.get_running_loop().call_later(self.backoff, self._try_again)

    def _try_again(self) -> None:
        """The backoff is over. A storage with a ``probe()`` (one small real write) is probed: on
        success the node is healthy again without waiting for a client's write, on failure the
        backoff doubles. Otherwise the next write tries storage (its commit decides the health)."""
        self._retry = None
        probe: Callable[[], None] | None = getattr(self.bus.storage, "probe", None)
        if probe is None:
            self.bus.storage_refused = None
        else:
            self._probe = asyncio.get_running_loop().create_task(self._run_probe(probe))

    async def _run_probe(self, probe: Callable[[], None]) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, probe)
        except Exception as exc:
            self._refuse(failure_reason(exc))
            log.info("storage still failing (%s); next try in %g s", failure_reason(exc), self.backoff)
            return
        finally:
            self._probe = None
        self.bus.storage_refused = None
        self.backoff = 0.0
        log.warning("storage recovered: a probe write succeeded, writes are taken again")

    def _start_sync(self) -> None:
        loop = asyncio.get_running_loop()
        if self._syncing is None:
            self._sync_timer = None
            self._syncing = loop.create_task(self._run_sync())
        else:  # the last sync still runs and may have started before the newest commit
            self._sync_timer = loop.call_later(SYNC_INTERVAL / 100, self._start_sync)

    async def _run_sync(self) -> None:
        """fsync what was committed (rule 4), in the writer thread: between two batches."""
        sync = self._sync
        self._unsynced = 0
        try:
            if sync is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, sync)
                self.syncs += 1
        except Exception as exc:
            log.error("storage sync failed (%s); tried again after the next commit", failure_reason(exc))
        finally:
            self._syncing = None

    def _write(self, stored: list[StoredOp], snaps: list[Snapshot]) -> None:
        storage = self.bus.storage
        if stored:
            storage.append(stored)
        for snap in snaps:
            storage.compact(snap)

    def _release(self, upto: Seq) -> None:
        keep: list[tuple[Seq, asyncio.Future[None]]] = []
        for seq, fut in self._waiters:
            if seq <= upto:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((seq, fut))
        self._waiters = keep
        event, self._durable_event = self._durable_event, asyncio.Event()
        event.set()
        once, self._once = self._once, []
        if once:
            # After the writers' acknowledgements (already scheduled above): a fan-out to many
            # streams must not delay the answer to the write that caused it.
            asyncio.get_running_loop().call_soon(_call_all, once)
        for cb in self.on_durable:
            cb(upto)

    async def aclose(self) -> None:
        """Write everything pending, then stop the writer thread."""
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._probe is not None:
            await asyncio.gather(self._probe, return_exceptions=True)
        while self._task is not None or self.bus.pending:
            if self._task is None:
                self.kick()
            task = self._task
            if task is not None:
                await task
        if self._sync_timer is not None or self._syncing is not None:
            if self._sync_timer is not None:
                self._sync_timer.cancel()
                self._sync_timer = None
            if self._syncing is not None:
                await self._syncing
            self._syncing = asyncio.get_running_loop().create_task(self._run_sync())
            await self._syncing
        self._executor.shutdown(wait=True)
