"""Async event streams: the second tier of subscriptions, built on ``Bus.observe``.

Rules:

1. Each stream has a bounded buffer. When a change arrives and the buffer is full, the stream is
   cut off with a reason (``SubscriberTooSlow``) and its bus subscription closed: a slow reader
   never blocks the writer or other readers, and it resumes later from its last cursor.
2. A stream yields a change only once it is durable (its seq is on disk), so a cursor a client
   holds always names stored history, even across a crash.
3. Iteration ends (StopAsyncIteration) when the stream is closed by its owner, and raises the
   stored error when it was cut off.
4. A stream opened with ``paged=True`` (``Node.events``) reads its starting state lazily
   (:class:`~statebus.runtime.snapshots.SnapshotPages`): :meth:`EventStream.drain_ready` hands out
   one page per call, before any live change, and live changes the page already reflects are
   dropped from the buffer. Only the live changes count against the buffer bound; the pages are
   read when the transport asks, so a reader that stops reading holds one page.
5. A stream knows the group committer only as :class:`Durability` (``durable_seq``,
   ``call_on_durable``, ``kick``) and tells its owner that it closed through ``on_close``: it never
   imports the Node. A ``filter`` (``Node.events(filter=)``) sits in front of the buffer, so a
   change it refuses is never buffered and never counts against the bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from statebus.bus import Change, Subscription
from statebus.errors import StatebusError, SubscriberTooSlow
from statebus.types import Seq, Version

if TYPE_CHECKING:
    from statebus.runtime.snapshots import SnapshotPages


class Durability(Protocol):
    """What a stream needs of the group committer (:class:`~statebus.runtime.committer.GroupCommitter`)."""

    @property
    def durable_seq(self) -> Seq:
        """The cursor up to which every change is on disk."""
        ...

    def call_on_durable(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, after the next commit."""
        ...

    def kick(self) -> None:
        """Start a commit if one is not running and there is something to write."""
        ...


class OpenEvents(Protocol):
    """Opens a stream as :meth:`Node.events <statebus.runtime.node.Node.events>` does (the node's own,
    or access control's for one client: :meth:`~statebus.access.control.AccessControl.opener`)."""

    def __call__(
        self,
        patterns: str | Sequence[str],
        *,
        since: Seq | None = None,
        parents: Sequence[Version] | None = None,
        snapshot: bool = True,
        max_buffer: int | None = None,
        paged: bool = False,
        max_resume: int | None = None,
    ) -> EventStream: ...


class EventStream:
    __slots__ = (
        "__weakref__",
        "_committer",
        "_durable_at",
        "_for_durable",
        "_listening",
        "_on_close",
        "_page",
        "_q",
        "_subs",
        "_waiter",
        "closed",
        "cursor",
        "deliver",
        "error",
        "max_buffer",
        "pages",
    )

    def __init__(
        self,
        committer: Durability,
        on_close: Callable[[EventStream], None] | None = None,
        max_buffer: int = 1000,
    ) -> None:
        self._committer = committer
        self._on_close = on_close
        """Called once when the stream closes (the node forgets it)."""
        self.max_buffer = max_buffer
        self._q: list[Change] = []
        """The changes not taken yet, oldest first: a list, which holds no memory while empty (a
        deque keeps a 624-byte block), emptied by handing it over whole (:meth:`drain_ready`)."""
        self._waiter: asyncio.Future[None] | None = None
        self._for_durable = False
        self.deliver: Callable[[], bool] | None = None
        """Set by a transport that can write without waiting (see :meth:`_wakeup` and :meth:`listen`)."""
        self._listening = False
        self._subs: list[Subscription] = []
        self.error: StatebusError | None = None
        self.closed = False
        self.cursor: int | None = None
        self.pages: SnapshotPages | None = None
        """The starting state still to be read (``paged`` streams), None once it is all handed out."""
        self._durable_at = 0
        self._page: list[Change] | None = None
        """A page read but not handed out yet: it waits for the commit of the state it shows."""

    def attach(self, subscription: Subscription) -> None:
        """Close ``subscription`` (the bus subscription feeding :meth:`_push`) with the stream."""
        self._subs.append(subscription)

    def drop_range(self, low: Seq, high: Seq) -> bool:
        """Drop the buffered changes with ``low < seq <= high`` (storage refused them; derived changes
        stay). Returns whether any was dropped."""
        q = self._q
        kept = [c for c in q if not low < c.seq <= high or c.kind == "derived"]
        if len(kept) == len(q):
            return False
        q[:] = kept
        return True

    def _push(self, change: Change) -> None:
        if self.closed or change.kind == "revert":  # a rollback's news for caches: never delivered
            return
        q = self._q
        if len(q) >= self.max_buffer:
            self.cut(SubscriberTooSlow(f"subscriber fell {self.max_buffer} changes behind and was cut off"))
            return
        q.append(change)
        if (self._waiter is not None or self._listening) and not self._for_durable:
            # The reader waits for a first change: wake it once it can be delivered (durable).
            if change.seq <= self._committer.durable_seq or change.kind == "derived":
                self._wakeup()
            else:
                self._for_durable = True
                self._committer.call_on_durable(self._wakeup)

    def _wakeup(self) -> None:
        """Changes are ready for the sleeping reader. If the transport set :attr:`deliver`, it takes
        them right here (it returns True; the reader sleeps on), so a fan-out to N streams costs N
        writes and no task switch; otherwise, or if ``deliver`` fails, the reader wakes up."""
        if self._listening:
            self._for_durable = False
            if self.deliver is not None:
                self.deliver()
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        deliver = self.deliver
        if deliver is not None and not self.closed:
            try:
                if deliver():
                    # Changes not durable yet stay queued: come back after the next commit.
                    self._for_durable = bool(self._q)
                    if self._for_durable:
                        self._committer.call_on_durable(self._wakeup)
                    return
            except Exception:
                self.deliver = None
        waiter.set_result(None)

    def _wake_reader(self) -> None:
        if self._listening:
            if self.deliver is not None:
                self.deliver()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, *, durable: bool) -> None:
        """Sleep until a change is pushed (``durable`` False) or the next commit (True); one future,
        one wake-up per batch of changes, however many arrive."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._for_durable = durable
        if durable:
            self._committer.call_on_durable(self._wakeup)
        try:
            await waiter
        finally:
            self._waiter = None
            self._for_durable = False

    def listen(self, deliver: Callable[[], bool]) -> None:
        """Hand changes to a transport instead of a reader: ``deliver`` is called whenever durable
        changes are ready (it takes them with :meth:`drain_ready`) and once the stream is closed or
        cut off (then :attr:`closed` is set). Nothing waits: the transport needs no task, and nobody
        may iterate the stream afterwards. A transport that leaves changes buffered that are not
        durable yet calls :meth:`wake_on_durable`."""
        self.deliver = deliver
        self._listening = True

    def wake_on_durable(self) -> None:
        """Call :attr:`deliver` again after the next commit (changes are buffered, not durable yet)."""
        if self._listening and not self._for_durable:
            self._for_durable = True
            committer = self._committer
            committer.kick()
            committer.call_on_durable(self._wakeup)

    def cut(self, error: StatebusError) -> None:
        """End the stream with ``error`` (for the reader to see after the buffered changes)."""
        if self.closed:
            return
        self.error = error
        self.close()

    def close(self) -> None:
        self.closed = True
        self.pages = None  # the starting state not read yet is never read
        self._page = None
        for sub in self._subs:
            sub.close("stream closed")
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)
        self._wake_reader()

    @property
    def room(self) -> int:
        """How many more changes fit in the buffer before the stream is cut off."""
        return self.max_buffer - len(self._q)

    @property
    def reading(self) -> bool:
        """Someone takes the changes: a transport (:meth:`listen`) or a reader waiting for one."""
        return not self.closed and (self._listening or self._waiter is not None)

    def __len__(self) -> int:
        """The changes buffered, plus one while the starting state is not all handed out."""
        return len(self._q) + (self.pages is not None or bool(self._page))

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Change:
        committer = self._committer
        while True:
            if self.pages is not None or self._page:
                page = self._next_page()
                if page:
                    self._q[:0] = page
                    continue
                if self._page:
                    committer.kick()
                    await self._wait(durable=True)
                    continue
            q = self._q
            if q:
                head = q[0]
                if head.seq <= committer.durable_seq or head.kind == "derived":
                    del q[0]
                    if head.last:
                        self.cursor = head.seq
                    return head
                committer.kick()
                await self._wait(durable=True)
                continue
            if self.closed:
                if self.error is not None:
                    raise self.error
                raise StopAsyncIteration
            await self._wait(durable=False)

    def drain_ready(self) -> list[Change]:
        """Take every buffered change that is already durable, without waiting (for batching); while
        the starting state of a ``paged`` stream is being read, its next page instead (rule 4)."""
        if self.pages is not None or self._page:
            page = self._next_page()
            if page or self.pages is not None or self._page:
                return page
        q = self._q
        if not q:
            return []
        durable = self._committer.durable_seq
        n = 0
        for c in q:
            if c.seq > durable and c.kind != "derived":
                break
            if c.last:
                self.cursor = c.seq
            n += 1
        if n == len(q):
            self._q = []
            return q
        out = q[:n]
        del q[:n]
        return out

    def _next_page(self) -> list[Change]:
        """The next page of the starting state once the state it shows is durable (else ``[]``)."""
        page = self._page
        pages = self.pages
        if page is None and pages is not None:
            page = pages.next_page()
            if pages.done:
                self.pages = None
            reflected = pages.reflected
            if reflected and self._q:
                self._q = [c for c in self._q if c.seq > reflected.get(c.key, -1)]
            durable_at = max(reflected.values(), default=pages.seq)
            if page and max(durable_at, pages.seq) > self._committer.durable_seq:
                self._page = page
                self._durable_at = max(durable_at, pages.seq)
                return []
            return page
        if page is not None and self._durable_at <= self._committer.durable_seq:
            self._page = None
            return page
        return []
