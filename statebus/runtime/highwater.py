"""The store's high-water mark: the highest sequence number this node ever committed, kept next to
its identity (``<data>/identity/store_highwater``), so a store that was deleted, or replaced by an
older copy, is noticed at start instead of silently starting over.

Rules:

1. The mark only grows, and only names committed ops: it is written after the commit that reached
   it (from the committer's ``on_durable``), at most every ``INTERVAL`` seconds, and at close. So
   an intact store's ``max_seq()`` is never below it (power loss can only leave the mark lower).
2. At start, a store whose ``max_seq()`` is below the mark is *behind*: the node serves what it has
   and applies remote ops (``statebus restore`` works through them), but refuses every local write
   with :class:`StoreBehind`: a new op would restart the keys' clocks and lose for ever to the older
   copies its followers hold. ``accept_store_loss`` (``--accept-store-loss``) lowers the mark to
   the store and lifts the refusal; a successful ``statebus restore`` does the same.
3. A missing mark (a node from before this file, or a new one) is written from the store, never
   guessed; an unreadable one is reported and rewritten (it errs towards serving, not refusing).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

from statebus.identity.keystore import identity_dir
from statebus.runtime.node import Node
from statebus.types import Seq

HIGHWATER_FILE = "store_highwater"
INTERVAL = 5.0
"""Seconds between two writes of the mark while commits go on (it is also written at close)."""

log = logging.getLogger("statebus.store")


class HighWater:
    """The mark file of one data folder."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = identity_dir(data_dir) / HIGHWATER_FILE
        self.seq: Seq | None = self.read()
        self._written_at = float("-inf")

    def read(self) -> Seq | None:
        """The recorded mark, or None when there is none (or it cannot be read)."""
        try:
            text = self.path.read_text("ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read %s (%s); writing it again", self.path, type(exc).__name__)
            return None
        if not text.isdigit():
            log.warning("%s does not hold a sequence number; writing it again", self.path)
            return None
        return int(text)

    def write(self, seq: Seq) -> None:
        """Replace the mark by ``seq`` (atomically; no fsync, see rule 1)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(f"{seq}\n", "ascii")
        os.replace(tmp, self.path)
        self.seq = seq
        self._written_at = time.monotonic()

    def try_write(self, seq: Seq) -> None:
        """:meth:`write`, but a failure (a full disk) is logged, not raised: the mark is advice."""
        try:
            self.write(seq)
        except OSError as exc:
            log.warning("cannot record the store's high-water mark (%s)", type(exc).__name__)

    def committed(self, seq: Seq, *, force: bool = False) -> None:
        """A commit reached ``seq``: raise the mark (throttled to one write per ``INTERVAL``)."""
        if self.seq is not None and seq <= self.seq:
            return
        if force or time.monotonic() - self._written_at >= INTERVAL:
            self.try_write(seq)


def behind_message(path: Path, have: Seq, had: Seq) -> str:
    return (
        f"the store holds ops up to {have}, but this node had committed up to {had} (recorded in {path}): "
        "it was deleted or replaced by an older copy, and a local write now would lose to the older "
        "copies followers hold. Stop the node and take the data back with `statebus restore --from URL`, "
        "or start with --accept-store-loss to start over"
    )


def guard(node: Node, data_dir: str | os.PathLike[str], *, accept_loss: bool = False) -> HighWater:
    """Compare the store with the mark (rule 2), then keep the mark up to date (rule 1)."""
    mark = HighWater(data_dir)
    have = node.bus.storage.max_seq()
    if mark.seq is None:
        mark.try_write(have)
    elif have < mark.seq:
        if accept_loss:
            log.warning("store behind its high-water mark (%d < %d): accepted, starting over", have, mark.seq)
            mark.try_write(have)
        else:
            node.bus.local_refused = behind_message(mark.path, have, mark.seq)
            log.error("%s", node.bus.local_refused)
    node.committer.on_durable.append(mark.committed)
    node.on_close.append(lambda: mark.committed(node.bus.storage.max_seq(), force=True))
    return mark


def accept(node: Node, data_dir: str | os.PathLike[str]) -> None:
    """The owner restored the store (or chose to start over): the mark becomes the store's, and
    local writes are allowed again."""
    HighWater(data_dir).write(node.bus.storage.max_seq())
    node.bus.local_refused = None
