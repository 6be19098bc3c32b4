"""Propagation latency between federated nodes: a write at A to a subscriber on B, which follows A.

    /work/venv/bin/python bench/federation_propagation.py [--writes 500] [--relay]

Two real nodes (uvicorn on 127.0.0.1, port 0, SQLite stores, a real DHT) in one process. B follows
``/<A>/chirp/``; a subscriber on B (``node.events``) waits for each change. A writes one key at a time
and waits for the subscriber to see it, so each sample is one full path: A's group commit (fsync),
A's signed ops stream, B's verification, B's group commit (fsync), B's subscriber. With ``--relay``
a third node C follows A *through* B (A's ops relayed by B, verified at C) and the subscriber is on C.
Prints one line: p50 / p99 / max in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from statebus.server import Cluster, RunningNode


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _live(node: RunningNode) -> None:
    while not (
        node.federation.followers and all(f.live.is_set() for f in node.federation.followers.values())
    ):
        await asyncio.sleep(0.01)


async def main(writes: int, relay: bool) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), dht_secret=os.urandom(16), sse_ping_interval=5.0)
        try:
            a = await cluster.add("a")
            b = await cluster.add("b")
            await a.share("/~/chirp/")
            chirp = f"/{a.pubkey}/chirp/"
            await b.follow(chirp)
            await _live(b)
            sink = b
            if relay:
                c = await cluster.add("c")
                c.federation.directory = None  # no DHT lookups: C knows only the relay's address
                await c.follow(chirp, via=[b.url])
                await _live(c)
                sink = c
            stream = sink.node.events(chirp, snapshot=False)
            samples: list[float] = []
            it = aiter(stream)
            for i in range(writes):
                t0 = time.perf_counter()
                await a.node.save(f"/~/chirp/{i}", {"text": "x" * 100, "i": i})
                while True:
                    change = await it.__anext__()
                    if change.key == f"{chirp}{i}":
                        break
                samples.append(time.perf_counter() - t0)
            stream.close()
        finally:
            await cluster.aclose()
    path = "A→B→C (relayed)" if relay else "A→B"
    return (
        f"federation_propagation path={path} writes={writes} p50={_pct(samples, 0.5):.2f}ms "
        f"p99={_pct(samples, 0.99):.2f}ms max={max(samples) * 1000:.2f}ms "
        f"mean={statistics.mean(samples) * 1000:.2f}ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--relay", action="store_true", help="measure A→B→C through a relay")
    args = parser.parse_args()
    print(asyncio.run(main(args.writes, args.relay)))
