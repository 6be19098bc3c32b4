"""Group commit: many writes, one transaction, one fsync.

Rules:

1. A write is acknowledged (its ``durable(seq)`` returns) only after the storage transaction that
   holds it has committed.
2. While one batch is being written (in a single writer thread, so SQLite never blocks the event
   loop), new writes pile up in the bus's outbox and go out together in the next batch: the batch
   grows with the load, and an idle node writes each op at once.
3. If storage fails, every waiter of that batch gets the error and the committer stops: the node
   must not acknowledge anything after a failed write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from statebus.bus import Bus
from statebus.bus.bus import BatchSigner
from statebus.errors import StatebusError
from statebus.storage.base import Snapshot, StoredOp
from statebus.types import Seq

log = logging.getLogger("statebus.commit")


def _call_all(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()


class StorageFailed(StatebusError):
    status_hint = 503


class GroupCommitter:
    def __init__(self, bus: Bus, *, batch_signer: BatchSigner | None = None) -> None:
        self.bus = bus
        self.batch_signer = batch_signer
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="statebus-writer")
        self._waiters: list[tuple[Seq, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None
        self._durable_event = asyncio.Event()
        self.batches = 0
        self.ops_written = 0
        self.on_durable: list[Callable[[Seq], None]] = []
        self._once: list[Callable[[], None]] = []

    @property
    def durable_seq(self) -> Seq:
        return self.bus._durable

    async def durable(self, seq: Seq) -> None:
        """Return once every op up to ``seq`` is on disk."""
        if self._failed is not None:
            raise StorageFailed("storage failed; this node acknowledges no more writes")
        if seq <= self.bus._durable:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, fut))
        self.kick()
        await fut

    def kick(self) -> None:
        """Start a flush if one is not running and there is something to write."""
        if self._task is None and self.bus.pending and self._failed is None:
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
                    stored, snaps = self.bus.take_outbox(self.batch_signer)
                    last = self.bus._taken
                    await loop.run_in_executor(self._executor, self._write, stored, snaps)
                except BaseException as exc:
                    self._failed = exc
                    log.error("storage write failed: %s", type(exc).__name__)
                    for _, fut in self._waiters:
                        if not fut.done():
                            fut.set_exception(StorageFailed("the write could not be stored"))
                    self._waiters.clear()
                    return
                self.batches += 1
                self.ops_written += len(stored)
                self.bus.mark_durable(last)
                self._release(last)
        finally:
            self._task = None

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
        while self._task is not None or (self.bus.pending and self._failed is None):
            if self._task is None:
                self.kick()
            task = self._task
            if task is not None:
                await task
        self._executor.shutdown(wait=True)
