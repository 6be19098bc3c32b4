"""Resolve latency of the statebus DHT: N nodes in one process on 127.0.0.1.

    /work/venv/bin/python bench/dht_resolve.py [--nodes 20] [--resolves 200] [--ksize 4]

Prints one line: bootstrap time, publish p50, resolve p50/p99/max, and how many resolves found
the right record.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time

from statebus.federation.dht import KademliaDirectory


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def main(n: int, resolves: int, ksize: int) -> str:
    nodes = [KademliaDirectory(os.urandom(32), "bench", b"bench secret", ksize=ksize) for _ in range(n)]
    t0 = time.perf_counter()
    await nodes[0].start([])
    for node in nodes[1:]:
        await node.start([("127.0.0.1", nodes[0].port)])
    boot = time.perf_counter() - t0
    pub: list[float] = []
    for i, node in enumerate(nodes):
        t = time.perf_counter()
        await node.publish([f"http://127.0.0.1:{8000 + i}"])
        pub.append(time.perf_counter() - t)
    rng = random.Random(1)
    times: list[float] = []
    ok = 0
    for _ in range(resolves):
        resolver, target = rng.choice(nodes), rng.choice(nodes)
        t = time.perf_counter()
        record = await resolver.resolve(target.pubkey)
        times.append(time.perf_counter() - t)
        ok += record == target.record
    for node in nodes:
        await node.stop()
    return (
        f"dht_resolve nodes={n} ksize={ksize} bootstrap={boot * 1000:.0f}ms "
        f"publish_p50={_pct(pub, 0.5):.2f}ms resolves={resolves} found={ok} "
        f"p50={_pct(times, 0.5):.2f}ms p99={_pct(times, 0.99):.2f}ms max={max(times) * 1000:.2f}ms "
        f"mean={statistics.mean(times) * 1000:.2f}ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--resolves", type=int, default=200)
    parser.add_argument("--ksize", type=int, default=4)
    args = parser.parse_args()
    print(asyncio.run(main(args.nodes, args.resolves, args.ksize)))
