"""A follower that joins late: after N Yjs ops on one busy document, compacted C times by its owner.

    python -m bench.late_follower [--ops 50000] [--compactions 20] [--swarm]

Node A (``history_keep_ops`` = N / (C + 1): the document is compacted once it holds ``2 * keep``
ops, then every ``keep`` ops)
takes N Yjs updates to ``/~/yc/doc`` in process (250 at a time, group-committed). Node B starts
afterwards and follows ``yc/``: anti-entropy brings the ops A still holds, the document is
incomplete, B fetches A's signed subtree snapshot, checks it, installs the base and takes the op
tail again. Reported: the time from ``follow`` until B serves the document byte-identical to A
(same Yjs state, same Version), the bytes moved (anti-entropy both ways + the snapshot), what
sending every op would have been, and the machine's load average. ``--swarm``: both nodes swarm
(``swarm_min_bytes`` 64 KiB), so the snapshot moves as a torrent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from statebus.federation.opset import scan_all
from statebus.server.cluster import Cluster

BATCH = 250


async def run(ops: int, compactions: int, swarm: bool = False) -> dict[str, Any]:
    keep = max(1, ops // (compactions + 1))  # compacted at 2 * keep ops, then every keep ops
    base = Path(tempfile.mkdtemp(prefix="late-follower-"))
    extra: dict[str, Any] = {"swarm": True, "swarm_min_bytes": 64 * 1024} if swarm else {}
    cluster = Cluster(base, dht_secret=os.urandom(16), durability="process", **extra)
    try:
        a = await cluster.add("a", history_keep_ops=keep)
        await a.share("/~/yc/")
        yc = f"/{a.pubkey}/yc/"
        doc: Doc[Any] = Doc()
        text = doc.get("t", type=Text)
        horizons: set[int] = set()
        t0 = time.perf_counter()
        for start in range(0, ops, BATCH):
            updates = []
            for i in range(start, min(ops, start + BATCH)):
                before = doc.get_state()
                text.insert(len(text) if i % 7 else 0, f"{i % 10}")
                updates.append(doc.get_update(before))
            await asyncio.gather(*(a.node.crdt_update("/~/yc/doc", u) for u in updates))
            horizons.add(a.node.horizon(yc))
        horizons.add(a.node.horizon(yc))
        write_s = time.perf_counter() - t0
        kept = scan_all(a.node, yc)
        per_op = sum(len(s.data) for s in kept) / max(1, len(kept))
        mine = a.node.fetch_or_none("/~/yc/doc")
        assert mine is not None

        b = await cluster.add("b")
        t1 = time.perf_counter()
        await b.follow(yc)
        doc_key = yc + "doc"
        phases: dict[str, float] = {}
        while time.perf_counter() - t1 < 300:
            fs = list(b.federation.followers.values())
            if fs and fs[0].incomplete and "ops_synced_doc_incomplete" not in phases:
                phases["ops_synced_doc_incomplete"] = round(time.perf_counter() - t1, 3)
            if fs and fs[0].snapshot is not None and "snapshot_installed" not in phases:
                phases["snapshot_installed"] = round(time.perf_counter() - t1, 3)
            theirs = b.node.fetch_or_none(doc_key)
            if (
                fs
                and fs[0].live.is_set()
                and b.node.incomplete(doc_key) is None
                and theirs is not None
                and theirs.version == mine.version
            ):
                break
            await asyncio.sleep(0.02)
        live_s = time.perf_counter() - t1
        follower = next(iter(b.federation.followers.values()))
        theirs = b.node.fetch_or_none(doc_key)
        same = theirs is not None and theirs.version == mine.version
        same = same and b.node.yjs_update(doc_key, mine.version) == a.node.yjs_update(
            "/~/yc/doc", mine.version
        )
        return {
            "ops": ops,
            "history_keep_ops": keep,
            "compactions_seen": len(horizons - {0}),
            "owner_write_seconds": round(write_s, 1),
            "ops_kept_by_owner": len(kept),
            "seconds_until_live": round(live_s, 3),
            "seconds_at": phases,
            "complete_and_identical": same and b.node.incomplete(doc_key) is None,
            "follow_state": {k: follower.state()[k] for k in ("status", "reason", "snapshot", "incomplete")},
            "snapshot_bytes": follower.snapshot_bytes,
            "anti_entropy_bytes": follower.sync_bytes,
            "bytes_until_live": follower.snapshot_bytes + follower.sync_bytes,
            "every_op_bytes": round(per_op * ops),
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
    finally:
        await cluster.aclose()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=50_000)
    parser.add_argument("--compactions", type=int, default=20)
    parser.add_argument("--swarm", action="store_true", help="both nodes swarm: the snapshot is a torrent")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.ops, args.compactions, args.swarm)), indent=2))


if __name__ == "__main__":
    main()
