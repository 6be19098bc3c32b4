"""Time from a follower's restart to ``live``: two real nodes in one process on 127.0.0.1.

    python -m bench.follow_restart [--restarts 5] [--posts 200]

A writes ``--posts`` keys under ``/~/chirp/``; B follows them and goes live. Then, ``--restarts``
times, B stops (its DHT contact dies with it, as in a crash) while A writes one more post, and B is
started again on the same data directory, as ``statebus serve`` starts it (HTTP, then federation).
Each sample is the time from the start call until B's follower is ``live`` (the missed post applied),
and from the moment HTTP listens (the start call returned) until then. Prints one line of
milliseconds: p50 and max of both.
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


def _live(node: RunningNode, key: str) -> bool:
    followers = node.federation.followers.values()
    change = node.node.fetch_or_none(key)
    return (
        bool(followers)
        and all(f.status == "live" for f in followers)
        and change is not None
        and change.exists
    )


async def main(restarts: int, posts: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), dht_secret=os.urandom(16), sse_ping_interval=5.0)
        try:
            a = await cluster.add("a")
            await a.share("/~/chirp/")
            for i in range(posts):
                a.node.bus.save(f"/~/chirp/{i}", {"text": f"post {i}"})
            await a.node.flush()
            chirp = f"/{a.pubkey}/chirp/"
            b = await cluster.add("b")
            await b.follow(chirp)
            while not _live(b, f"{chirp}{posts - 1}"):
                await asyncio.sleep(0.005)
            total: list[float] = []
            after_http: list[float] = []
            for n in range(restarts):
                await cluster.stop("b")
                key = f"/~/chirp/missed{n}"
                await a.node.save(key, {"text": "written while b was down"})
                t0 = time.perf_counter()
                b = await cluster.add("b")
                t1 = time.perf_counter()
                while not _live(b, f"/{a.pubkey}{key[2:]}"):
                    await asyncio.sleep(0.002)
                t2 = time.perf_counter()
                total.append(t2 - t0)
                after_http.append(t2 - t1)
        finally:
            await cluster.aclose()

    def ms(xs: list[float]) -> str:
        return f"p50={statistics.median(xs) * 1000:.1f}ms max={max(xs) * 1000:.1f}ms"

    head = f"follow_restart restarts={restarts} posts={posts}"
    return f"{head} start_to_live {ms(total)} http_up_to_live {ms(after_http)}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--posts", type=int, default=200)
    args = parser.parse_args()
    print(asyncio.run(main(args.restarts, args.posts)))
