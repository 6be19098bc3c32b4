"""A viral post: 1 origin and N following nodes, the origin's peer stream slots capped or not, side by side.

    python -m bench.viral_post [--followers 30] [--slots 5] [--posts 20] [--backlog 200]

Real nodes in one process (uvicorn on 127.0.0.1 port 0, SQLite stores, ``durability=process`` so the
figures show the fan-out, not N fsyncs queueing on one disk; no DHT: every follower is given the
origin's address). The origin holds ``--backlog`` posts; the followers (all with ``relay`` on) follow
its ``chirp/`` one after the other, each until it is live (``--together``: all at once, the
moment a post goes viral). Then the origin writes ``--posts`` posts,
one at a time: each is timed from just before the origin's ``save`` until every follower's node
applied it (``Node.observe``), and the next post waits until it has.

Run twice in one go on fresh data folders: with ``max_peer_streams = --slots`` (shedding) and with no
cap (every follower streams from the origin: a star). For each it prints the origin's federation
egress (``PeerEndpoints.sent_bytes``: ops stream lines and sync answers) while the followers joined
and while the posts went out, what all relays sent, how many follow the origin directly, the depth
of the tree, and the delivery delays: p50/p99 over every (post, follower) pair and p99 over the
posts of the time until the last follower had it. The machine's load average is printed first and
last: the box is shared, so the delays are only comparable within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from statebus.server import RunningNode, start_node

LIVE_TIMEOUT = 60.0


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def _live(node: RunningNode) -> bool:
    fs = node.federation.followers.values()
    return bool(fs) and all(f.live.is_set() for f in fs)


async def run(
    base: Path, followers: int, slots: int, posts: int, backlog: int, together: bool = False
) -> dict[str, Any]:
    """One run: the origin capped at ``slots`` peer streams (0: no cap)."""
    opts: dict[str, Any] = {
        "dht_name": None,
        "durability": "process",
        "backoff_base": 0.05,
        "backoff_cap": 1.0,
    }
    nodes: list[RunningNode] = []
    try:
        origin = await start_node(base / "origin", max_peer_streams=slots, **opts)
        nodes.append(origin)
        await origin.share("/~/chirp/")
        for i in range(backlog):
            origin.node.bus.save(f"/~/chirp/old/{i}", {"text": f"older post {i}", "n": i})
        await origin.node.flush()
        chirp = f"/{origin.pubkey}/chirp/"
        fol: list[RunningNode] = []
        for i in range(followers):
            fol.append(await start_node(base / f"f{i}", relay=True, **opts))
        nodes.extend(fol)

        joined_at = time.perf_counter()
        egress0 = origin.endpoints.sent_bytes
        if together:  # everyone at once
            await asyncio.gather(*(f.follow(chirp, via=[origin.url]) for f in fol))
        for f in fol:  # else one after the other: each is live before the next asks
            if not together:
                await f.follow(chirp, via=[origin.url])
            await _wait(lambda f=f: _live(f), LIVE_TIMEOUT, "a follower to be live")
        join_s = time.perf_counter() - joined_at
        join_egress = origin.endpoints.sent_bytes - egress0

        arrived: list[dict[str, float]] = [{} for _ in fol]
        subs = []
        for i, f in enumerate(fol):

            def seen(change: Any, into: dict[str, float] = arrived[i]) -> None:
                into.setdefault(change.key, time.perf_counter())

            subs.append(f.node.observe(chirp + "new/", seen, snapshot=False))

        egress0 = origin.endpoints.sent_bytes
        relays0 = sum(f.endpoints.sent_bytes for f in fol)
        pairs: list[float] = []
        alls: list[float] = []
        for p in range(posts):
            key = f"{chirp}new/{p}"
            t0 = time.perf_counter()
            await origin.node.save(f"/~/chirp/new/{p}", {"text": f"viral post {p}", "n": p})
            await _wait(lambda key=key: all(key in a for a in arrived), LIVE_TIMEOUT, f"post {p} everywhere")
            delays = [a[key] - t0 for a in arrived]
            pairs.extend(delays)
            alls.append(max(delays))
            await asyncio.sleep(0.05)
        post_egress = origin.endpoints.sent_bytes - egress0
        relay_egress = sum(f.endpoints.sent_bytes for f in fol) - relays0
        for s in subs:
            s.close("bench done")
        depths = Counter(next(iter(f.federation.followers.values())).depth for f in fol)
        return {
            "slots": slots,
            "direct": len(origin.endpoints.open_streams()),
            "depths": dict(sorted(depths.items())),
            "shed": origin.endpoints.shed,
            "join_s": join_s,
            "join_egress": join_egress,
            "post_egress": post_egress,
            "relay_egress": relay_egress,
            "p50": _pct(pairs, 0.5),
            "p99": _pct(pairs, 0.99),
            "p99_all": _pct(alls, 0.99),
            "max_all": max(alls) * 1000,
        }
    finally:
        for n in reversed(nodes):
            await n.stop()


def _row(name: str, r: dict[str, Any], posts: int, followers: int) -> str:
    depth = " ".join(f"{d}:{n}" for d, n in r["depths"].items())
    return (
        f"{name:<12} {r['direct']:>6} {depth:<10} {r['shed']:>5} {r['join_s']:>6.1f}s "
        f"{r['join_egress'] / 1e6:>8.2f}MB {r['post_egress']:>11} {r['post_egress'] / posts:>9.0f} "
        f"{r['relay_egress']:>10} {r['p50']:>7.1f} {r['p99']:>7.1f} {r['p99_all']:>8.1f}"
    )


async def main(followers: int, slots: int, posts: int, backlog: int, together: bool = False) -> str:
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        capped = await run(Path(tmp) / "capped", followers, slots, posts, backlog, together)
        star = await run(Path(tmp) / "star", followers, 0, posts, backlog, together)
    load1 = os.getloadavg()
    head = (
        f"{'run':<12} {'direct':>6} {'depth:n':<10} {'shed':>5} {'join':>7} {'join_egr':>10} "
        f"{'post_egress':>11} {'per_post':>9} {'relays_egr':>10} {'p50ms':>7} {'p99ms':>7} {'p99_all':>8}"
    )
    lines = [
        f"viral_post followers={followers} posts={posts} backlog={backlog} "
        f"joins={'together' if together else 'one by one'} cpus={os.cpu_count()} "
        f"load_before={load0[0]:.1f} load_after={load1[0]:.1f}",
        head,
        _row(f"slots={slots}", capped, posts, followers),
        _row("no cap", star, posts, followers),
        f"origin egress per post: {capped['post_egress'] / max(1, star['post_egress']):.2f}x of the star's; "
        f"joins: {capped['join_egress'] / max(1, star['join_egress']):.2f}x",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--followers", type=int, default=30)
    parser.add_argument("--slots", type=int, default=5)
    parser.add_argument("--posts", type=int, default=20)
    parser.add_argument("--backlog", type=int, default=200)
    parser.add_argument("--together", action="store_true", help="all followers follow at once")
    args = parser.parse_args()
    print(asyncio.run(main(args.followers, args.slots, args.posts, args.backlog, args.together)))
