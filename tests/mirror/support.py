"""What the federation tests share: fast follower settings and conditions to wait for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from statebus.server import RunningNode

FAST: dict[str, Any] = {"sse_ping_interval": 0.3, "backoff_base": 0.05, "backoff_cap": 0.4}
"""Settings of the nodes in a test cluster: quick pings, quick reconnects."""


async def wait_until(cond: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``cond`` every 20 ms until it holds; fail after ``timeout`` seconds (generous: CI is slow)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def has(node: RunningNode, key: str, value: object = None) -> bool:
    """``node`` holds ``key`` (with ``value``, if given)."""
    change = node.node.bus.fetch_or_none(key)
    return change is not None and change.exists and (value is None or change.value == value)


def live(node: RunningNode) -> bool:
    """Every follower of ``node`` has caught up (its anti-entropy and backlog are applied)."""
    fs = node.federation.followers.values()
    return bool(fs) and all(f.live.is_set() for f in fs)
