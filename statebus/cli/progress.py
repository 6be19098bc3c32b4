"""Progress of a long transfer on stderr (``statebus join``, whether the node is stopped or running)."""

from __future__ import annotations

import sys
import time

PROGRESS_AFTER = 0.3
"""Seconds a transfer runs before its progress is shown."""


class Bar:
    """Progress of a transfer on stderr, shown once it has run :data:`PROGRESS_AFTER` seconds."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.start = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if time.monotonic() - self.start < PROGRESS_AFTER and done < total:
            return
        if not self.shown and done >= total and time.monotonic() - self.start < PROGRESS_AFTER:
            return
        self.shown = True
        pct = 100 * done // total if total else 100
        sys.stderr.write(f"\r{self.what}: {done // 1024} KiB of {total // 1024} KiB ({pct}%)")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


__all__ = ["PROGRESS_AFTER", "Bar"]
