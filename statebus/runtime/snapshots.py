"""The starting state of a stream, read lazily from the store one page at a time.

A stream that starts from the current state (no resume point) subscribes to live changes first, at
cursor ``seq``, and then reads its keys page by page (:meth:`SnapshotPages.next_page`), only when the
transport asks for the next one: a client that does not read makes the node read nothing more, so
a subtree of any size costs one page of memory per stream (plus the next key, read one ahead, and a
chunk of listed names per level), not the whole subtree.

Rules (they keep "no gap, no duplicate" while the pages are read later than ``seq``):

1. Keys of a subtree come in the order of their full paths (depth first, names sorted), each once;
   a key that an earlier pattern of the same stream matches is left to that pattern.
2. Each key is read as it is *now*; its change carries the cursor ``seq`` (as a snapshot taken at
   ``seq`` would) and :attr:`SnapshotPages.reflected` records which live changes the page already
   holds (the key's last cursor), so the stream drops those from its queue: a live change queued
   for a key before the key's page was read is never delivered twice.
3. Live changes to keys read earlier, and creations and deletions of keys not read, stay queued and
   are delivered after the last page, so resuming from ``seq`` (the cursor sent with the last page)
   loses nothing.
4. A subtree is read up to :data:`MAX_SNAPSHOT_KEYS` keys (as ``Bus.observe`` does), then its
   closing snapshot (``exists=False`` on the subtree's own key).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

from statebus.bus import Bus, Change
from statebus.keys import is_subtree, key_matches
from statebus.types import Key, Seq

PAGE_KEYS = 64
"""Most keys read into one page."""
PAGE_BYTES = 64 * 1024
"""A page ends once the values read into it reach about this many bytes (at least one key a page)."""
MAX_SNAPSHOT_KEYS = 10_000
"""Most keys of one subtree in a stream's starting state (as ``Bus.observe``)."""
_LIST_CHUNK = 256


def approx_size(change: Change) -> int:
    """A cheap estimate of the bytes an encoded change takes (its value's size)."""
    value = change.value
    if isinstance(value, bytes | str):
        return len(value) + 64
    if isinstance(value, dict | list):
        return len(repr(value)) + 64
    return 64


class SnapshotPages:
    """The current state of ``patterns`` (keys and subtrees), produced a page at a time.

    Args:
        bus: the bus to read from.
        patterns: the stream's keys and subtrees, in order.
        seq: the cursor at which the stream's live subscriptions started (every page's cursor).
    """

    __slots__ = ("_ahead", "_bus", "_changes", "_patterns", "done", "keep", "reflected", "seq")

    def __init__(self, bus: Bus, patterns: Sequence[Key], seq: Seq) -> None:
        self._bus = bus
        self._patterns = list(patterns)
        self.seq = seq
        self.keep: Callable[[Change], bool] | None = None
        """Set by access control: changes it returns False for are left out (keys the client may not read)."""
        self.reflected: dict[Key, Seq] = {}
        """Of the page last produced: each key's last cursor (its live changes up to it are in the page)."""
        self._changes: Iterator[tuple[Change, Seq | None]] = self._all()
        self._ahead: tuple[Change, Seq | None] | None = None
        self.done = False

    def _take(self) -> tuple[Change, Seq | None] | None:
        """The next change and the cursor of the state read (None: a missing key or an end marker),
        one ahead, so that the last change is known when it is taken."""
        item = self._ahead if self._ahead is not None else next(self._changes, None)
        self._ahead = None if item is None else next(self._changes, None)
        return item

    def _all(self) -> Iterator[tuple[Change, Seq | None]]:
        """Every change of the starting state, read from the bus as it is taken."""
        for i, pattern in enumerate(self._patterns):
            earlier = self._patterns[:i]
            if not is_subtree(pattern):
                if any(key_matches(p, pattern) for p in earlier):
                    continue
                change = self._bus.fetch_or_none(pattern)
                if change is None:
                    yield Change(pattern, self.seq, "snapshot", False, None, None, (), (), last=False), None
                else:
                    yield dataclasses.replace(change, seq=self.seq, last=False), change.seq
                continue
            for key in self._walk(pattern):
                if any(key_matches(p, key) for p in earlier):
                    continue
                change = self._bus.fetch_or_none(key)
                if change is None or not change.exists:
                    continue
                out = dataclasses.replace(change, seq=self.seq, last=False)
                if self.keep is None or self.keep(out):
                    yield out, change.seq
            yield Change(pattern, self.seq, "snapshot", False, None, None, (), (), last=False), None

    def _walk(self, prefix: Key) -> Iterator[Key]:
        """The existing keys under ``prefix`` in path order (depth first, names sorted), listed a
        chunk at a time, at most :data:`MAX_SNAPSHOT_KEYS`."""
        left = MAX_SNAPSHOT_KEYS
        frames: list[tuple[str, list[str]]] = [(prefix, [])]
        after: list[str] = [""]
        while frames and left > 0:
            base, names = frames[-1]
            if not names:
                names.extend(reversed(self._bus.children(base, after[-1], _LIST_CHUNK)))
                if not names:
                    frames.pop()
                    after.pop()
                    continue
            name = names.pop()
            after[-1] = name
            if name.endswith("/"):
                frames.append((base + name, []))
                after.append("")
                continue
            left -= 1
            yield base + name

    def next_page(self, max_keys: int = PAGE_KEYS, max_bytes: int = PAGE_BYTES) -> list[Change]:
        """The next changes of the starting state (at least one unless :attr:`done`); sets
        :attr:`done` with the last page, whose last change has ``last=True`` (it carries the cursor).
        """
        page: list[Change] = []
        self.reflected = {}
        size = 0
        while not self.done and len(page) < max_keys and size < max_bytes:
            item = self._take()
            if item is None:
                self.done = True
                break
            change, seq = item
            if seq is not None:
                self.reflected[change.key] = seq
            if self._ahead is None:
                self.done = True
                change = dataclasses.replace(change, last=True)
            page.append(change)
            size += approx_size(change)
        return page
