"""A bulk catch-up never cuts the node's own subscribers (issue 19).

Before the fix, a follower applied a whole anti-entropy answer at once: 1,500 changes landed in its
local SSE streams before any was sent, and a plain ``EventSource`` client was cut off with
``subscriber_too_slow: fell 1000 changes behind``.
"""

from __future__ import annotations

import asyncio
import functools
import json

import httpx
import pytest

from statebus.server import Cluster

from .support import has, live, wait_until

pytestmark = pytest.mark.anyio

OPS = 1500


async def test_a_1500_op_catch_up_paces_a_plain_sse_client(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    await a.share("/~/chirp/")
    for i in range(OPS):
        a.node.bus.save(f"/~/chirp/{i}", {"text": f"post {i}"})
    await a.node.flush()
    chirp = f"/{a.pubkey}/chirp/"
    seen: set[str] = set()
    text: list[str] = []
    opened = asyncio.Event()

    async def subscribe() -> None:
        """A plain SSE client of b (its owner), reading everything under a's chirp/ as it comes."""
        headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {b.token}"}
        async with (
            httpx.AsyncClient(base_url=b.url, timeout=60) as http,
            http.stream("GET", chirp, headers=headers) as r,
        ):
            assert r.status_code == 200
            opened.set()
            async for line in r.aiter_lines():
                text.append(line)
                if line.startswith("data:"):
                    event = json.loads(line[5:])
                    if isinstance(event, dict) and isinstance(event.get("key"), str):
                        seen.add(event["key"])
                if len(seen) == OPS:
                    return

    reader = asyncio.create_task(subscribe())
    try:
        await asyncio.wait_for(opened.wait(), 30)
        await b.follow(chirp)
        await wait_until(functools.partial(has, b, f"{chirp}{OPS - 1}"), what="the catch-up")
        await wait_until(functools.partial(live, b), what="live")
        await asyncio.wait_for(asyncio.shield(reader), 60)
    finally:
        reader.cancel()
    joined = "\n".join(text)
    assert "subscriber_too_slow" not in joined
    assert len(seen) == OPS
