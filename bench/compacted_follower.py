"""Issue 18's first reproduction at full size: a new follower of keys its owner compacted many times.

    python -m bench.compacted_follower [N]        (N = 10000 by default; 200 takes a few seconds)

Node A (default ``history_keep_ops``) takes N Yjs PATCHes to ``/~/yc/doc`` and one PUT then N
``Content-Range: json .n`` PATCHes to ``/~/lc/patched``, over HTTP. Node C starts afterwards and
follows both subtrees. Prints what C serves for each key (status, ``Version``, ``ETag``), whether C
claims A's version for a state it does not hold (``DIVERGENCE``), its listing, and its follow
states. Exit status 1 on a divergence. Figures: docs/data-model.md, "Incomplete replicas".
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pycrdt import Doc, Text

from statebus.server.cluster import Cluster

YJS = {"Content-Type": "application/vnd.yjs.update"}
RANGE = {"Content-Range": "json .n", "Content-Type": "application/json"}


async def run(n: int) -> bool:
    """True when C never claimed A's version for another state."""
    base = Path(tempfile.mkdtemp(prefix="compacted-follower-"))
    cluster = Cluster(base, dht_secret=os.urandom(16))
    ok = True
    try:
        a = await cluster.add("a")
        await a.share("/~/lc/")
        await a.share("/~/yc/")
        auth = {"Authorization": f"Bearer {a.token}"}
        async with httpx.AsyncClient(base_url=a.url, headers=auth, timeout=30) as http:
            t0 = time.monotonic()
            doc: Doc[Any] = Doc()
            text = doc.get("t", type=Text)
            for i in range(n):
                before = doc.get_state()
                text += f"{i % 10}"
                r = await http.patch("/~/yc/doc", content=doc.get_update(before), headers=YJS)
                r.raise_for_status()
            t1 = time.monotonic()
            (await http.put("/~/lc/patched", json={"n": 0})).raise_for_status()
            for i in range(1, n + 1):
                (await http.patch("/~/lc/patched", content=json.dumps(i), headers=RANGE)).raise_for_status()
            t2 = time.monotonic()
            at_a = {"yc/doc": await http.get("/~/yc/doc"), "lc/patched": await http.get("/~/lc/patched")}
        print(f"A: {n} Yjs PATCHes in {t1 - t0:.1f} s, a PUT and {n} range PATCHes in {t2 - t1:.1f} s")
        for name, r in at_a.items():
            print(
                f"A: GET {name}: {r.status_code} Version={r.headers.get('version')} ({len(r.content)} bytes)"
            )
        lc, yc = f"/{a.pubkey}/lc/", f"/{a.pubkey}/yc/"
        print(f"A: horizons lc/ {a.node.horizon(lc)}, yc/ {a.node.horizon(yc)}")
        c = await cluster.add("c")
        t3 = time.monotonic()
        await c.follow(lc)
        await c.follow(yc)
        while time.monotonic() - t3 < 120:
            followers = list(c.federation.followers.values())
            if len(followers) == 2 and all(f.live.is_set() for f in followers):
                break
            await asyncio.sleep(0.1)
        print(f"C: both follows live after {time.monotonic() - t3:.1f} s")
        auth = {"Authorization": f"Bearer {c.token}"}
        async with httpx.AsyncClient(base_url=c.url, headers=auth, timeout=30) as http:
            for name, mine in at_a.items():
                r = await http.get(f"/{a.pubkey}/{name}")
                claims = r.headers.get("version") == mine.headers.get("version")
                same = r.status_code == 200 and r.content == mine.content
                ok = ok and (same or not claims)
                print(
                    f"C: GET {name}: {r.status_code} Version={r.headers.get('version')} "
                    f"ETag={r.headers.get('etag')} {r.text[:200] if r.status_code != 200 else ''}"
                )
                verdict = "DIVERGENCE" if claims and not same else "ok"
                print(f"   {'same state as A' if same else 'not A state'}; {verdict}")
            for sub in (lc, yc):
                print(f"C: GET {sub.split('/', 2)[2]}: {(await http.get(sub)).text}")
        for f in c.federation.followers.values():
            st = f.state()
            print(
                f"C: follow {f.follow.pattern.split('/', 2)[2]}: {st.get('status')}, incomplete "
                f"{st.get('incomplete')}, {st.get('applied')} applied, {st.get('rejected')} refused"
            )
    finally:
        await cluster.aclose()
        shutil.rmtree(base, ignore_errors=True)
    return ok


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    sys.exit(0 if asyncio.run(run(n)) else 1)


if __name__ == "__main__":
    main()
