"""apps/chirp in headless Chromium: ``python -m bench.chirp [--users 200] [--posts 50] [--samples 50]``.

Two figures (issue 12, "Benchmarks"), on real nodes (uvicorn on 127.0.0.1, SQLite) with chirp
installed from its signed bundle, and Debian's Chromium driven by tests/js/browser.mjs:

* **timeline**: a user following ``--users`` people with ``--posts`` posts each. The posts are signed
  by each author's own key and stored on the user's node as replicas (``Node.apply_many``, the path
  federation ingests by, without the network). The page is opened as the owner; the figure is the
  time from navigation until every post has arrived over the page's SSE streams and the first page of
  the timeline is on screen, then the time of one full timeline build (filter, sort, render the first
  50) with everything loaded, and the page's JS heap.
* **latency**: A posts ``--samples`` posts (one every 150 ms, through A's HTTP API as the page does);
  B follows A and has chirp open; each sample is the time from the post's ``at`` (A's clock, the same
  machine) until its article is in B's DOM (checked every animation frame). p50 and p99.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from statebus.identity import Identity, sign_op
from statebus.oplog import Op, encode_op, mint_version
from statebus.server import Cluster
from tests.support.chirp import chirp_url, install_chirp, launch
from tests.support.node_harness import run_browser

TIMELINE = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  while (!(window.chirp && chirp.posts.size >= %(total)d && chirp.rendered === 50)) await sleep(20);
  const loaded = performance.now();
  const t = performance.now();
  location.hash = '#home-again';          // an unknown view is the home timeline: a full build
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const build = chirp.lastRender;
  window.__result = {loaded_ms: loaded, build_ms: build, frame_ms: performance.now() - t,
                     heap: performance.memory ? performance.memory.usedJSHeapSize : null,
                     posts: chirp.posts.size, rendered: chirp.rendered};
  window.__done = true;
})()
"""

LATENCY = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  while (document.getElementById('conn').textContent !== 'live') await sleep(20);
  await statebus.put('chirp/profile', {name: 'reader'});
  const seen = new Map();
  await new Promise(done => {
    const tick = () => {
      for (const a of document.querySelectorAll('#view article')) {
        const k = a.dataset.key;
        if (!seen.has(k) && chirp.posts.has(k) && !k.includes('/' + statebus.node + '/'))
          seen.set(k, Date.now() - chirp.posts.get(k).at);
      }
      if (seen.size >= %(samples)d) done(); else requestAnimationFrame(tick);
    };
    tick();
  });
  window.__result = {latencies: [...seen.values()]};
  window.__done = true;
})()
"""


def signed_post(author: Identity, index: int, clock: int) -> tuple[Op, bytes]:
    key = f"/{author.pubkey}/chirp/posts/{index:04d}"
    value = {"text": f"post {index} by {author.pubkey[:8]}", "at": 1_700_000_000_000 + clock}
    op = Op(key, "", (), author.pubkey, clock, "lww", "set", value)
    op = sign_op(dataclasses.replace(op, version=mint_version(op)), author)
    return op, encode_op(op)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def timeline(base: Path, users: int, posts: int) -> dict[str, Any]:
    cluster = Cluster(base / "t", dht_secret=os.urandom(16))
    try:
        node = await cluster.add("reader")
        await install_chirp(node.url, node.token, base)
        authors = [Identity.generate() for _ in range(users)]
        clock = 0
        for author in authors:
            batch = []
            for i in range(posts):
                clock += 1
                batch.append(signed_post(author, i, clock))
            await node.node.apply_many(batch)
            await node.node.save(f"/~/chirp/follows/{author.pubkey}", {"at": 1})
        script = TIMELINE % {"total": users * posts}
        started = time.perf_counter()
        out = await asyncio.to_thread(
            run_browser, chirp_url(node.port), script, timeout=300, before=launch(node.url, node.token)
        )
        wall = time.perf_counter() - started
    finally:
        await cluster.aclose()
    if not out["ok"]:
        raise RuntimeError(json.dumps(out)[:2000])
    return {**out["result"], "browser_wall_s": round(wall, 2), "users": users, "posts_each": posts}


async def latency(base: Path, samples: int) -> dict[str, Any]:
    cluster = Cluster(base / "l", dht_secret=os.urandom(16), sse_ping_interval=0.3)
    try:
        a, b = await cluster.add("a"), await cluster.add("b")
        for n in (a, b):
            await install_chirp(n.url, n.token, base)
        await a.share("/~/chirp/")
        await b.follow(f"/{a.pubkey}/chirp/", via=[a.url])
        await b.node.save(f"/~/chirp/follows/{a.pubkey}", {"at": 1})
        run = asyncio.create_task(
            asyncio.to_thread(
                run_browser,
                chirp_url(b.port),
                LATENCY % {"samples": samples},
                timeout=120,
                before=launch(b.url, b.token),
            )
        )
        while b.node.fetch_or_none("/~/chirp/profile") is None:
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=a.url, headers={"Authorization": f"Bearer {a.token}"}) as http:
            for i in range(samples):
                post = {"text": f"sample {i}", "at": time.time() * 1000}
                (await http.put(f"/~/chirp/posts/s{i:03d}", json=post)).raise_for_status()
                await asyncio.sleep(0.15)
        out = await run
    finally:
        await cluster.aclose()
    if not out["ok"]:
        raise RuntimeError(json.dumps(out)[:2000])
    lat = [float(x) for x in out["result"]["latencies"]]
    return {"samples": len(lat), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-chirp-") as tmp:
        base = Path(tmp)
        out: dict[str, Any] = {}
        if not args.skip_timeline:
            out["timeline"] = await timeline(base, args.users, args.posts)
        if not args.skip_latency:
            out["latency"] = await latency(base, args.samples)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chirp", description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--posts", type=int, default=50)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--skip-timeline", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(out, indent=2))
        return
    if "timeline" in out:
        t = out["timeline"]
        heap = f"{t['heap'] / 2**20:.1f} MiB" if t.get("heap") else "n/a"
        print(
            f"chirp timeline users={t['users']} posts_each={t['posts_each']} posts={t['posts']} "
            f"loaded={t['loaded_ms']:.0f}ms build={t['build_ms']:.1f}ms js_heap={heap}"
        )
    if "latency" in out:
        lat = out["latency"]
        print(
            f"chirp post->display A->B samples={lat['samples']} p50={lat['p50_ms']:.0f}ms "
            f"p99={lat['p99_ms']:.0f}ms max={lat['max_ms']:.0f}ms"
        )


if __name__ == "__main__":
    main()
