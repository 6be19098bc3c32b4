"""A blob to many fetchers: over the swarm (libtorrent, 1 origin + N fetching sessions) and over HTTP
from a statebus node (N concurrent ``GET ?download``), side by side in one run.

    python -m bench.swarm_blob                 # 50 MB to 10 fetchers
    python -m bench.swarm_blob --mb 10 --fetchers 3

Swarm: every session listens on its own loopback address (127.0.0.2, .3, …), in this one process; the
fetchers are given the origin and each other as peers (what our DHT and the origin's seeder list hand
them) and each checks the whole blob's sha256 before its store takes it. Reported: the time until all N
hold the blob, and the origin's upload divided by the blob size (the goal is ≤ 1.3; 1.0 is the floor).
Two swarm runs: the origin super-seeding (``seed(once=True)``) and plain seeding (the default).
A third swarm run finds peers only through our DHT: 11 Kademlia nodes, the origin announces a provider
record, each fetcher knows only the blob's sha256 and size (the signed pointer), looks its seeders up,
fetches by info-hash (metadata from the peers) and announces itself as it starts (``SwarmPlane``).
HTTP: the same bytes PUT to a live node, then N concurrent downloads; the origin sends N copies.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from statebus.blobs import BlobPointer, BlobStore
from statebus.config import Settings
from statebus.federation.dht import KademliaDirectory
from statebus.federation.swarm import SwarmPlane
from statebus.swarm import SwarmSession
from statebus.testing.live_server import live_server


async def swarm_run(data: bytes, fetchers: int, root: Path, once: bool) -> dict[str, Any]:
    origin = SwarmSession(root / "origin", interface="127.0.0.2")
    sessions = [SwarmSession(root / f"f{i}", interface=f"127.0.0.{i + 3}") for i in range(fetchers)]
    stores = [BlobStore(root / f"s{i}", max_bytes=1 << 31, fsync=False) for i in range(fetchers + 1)]
    for s in (origin, *sessions):
        await s.start()
    try:
        info = stores[0].put_bytes(data)
        started = time.perf_counter()
        meta = await origin.seed(stores[0].path(info.hash), once=once)
        torrent_s = time.perf_counter() - started
        peers = [origin.address, *(s.address for s in sessions)]
        t0 = time.perf_counter()
        await asyncio.gather(
            *(s.fetch(meta, peers, store, timeout=600) for s, store in zip(sessions, stores[1:], strict=True))
        )
        elapsed = time.perf_counter() - t0
        await asyncio.sleep(1.1)  # libtorrent's counters move once a second
        up = origin.stats().uploaded
        return {
            "torrent_seconds": round(torrent_s, 3),
            "seconds_all_done": round(elapsed, 2),
            "origin_upload_bytes": up,
            "origin_upload_over_size": round(up / len(data), 2),
            "fetcher_upload_bytes": sum(s.stats().uploaded for s in sessions),
        }
    finally:
        for s in (*sessions, origin):
            await s.close()


async def dht_run(data: bytes, fetchers: int, root: Path) -> dict[str, Any]:
    directories: list[KademliaDirectory] = []
    planes: list[SwarmPlane] = []
    secret = os.urandom(16)
    try:
        for i in range(fetchers + 1):
            host = f"127.0.0.{i + 2}"
            directory = KademliaDirectory(
                os.urandom(32), "bench", secret, interface=host, ksize=8, wait_timeout=0.5
            )
            await directory.start([(directories[0].interface, directories[0].port)] if directories else [])
            directories.append(directory)
            settings = Settings(data_dir=root / f"n{i}", host=host, swarm=True)
            store = BlobStore(root / f"n{i}" / "blobs", max_bytes=1 << 31, fsync=False)
            plane = SwarmPlane(settings, blobs=store, directory=directory)
            await plane.start()
            planes.append(plane)
        origin = planes[0]
        info = origin.blobs.put_bytes(data)
        pointer = BlobPointer(info.hash, info.size, "application/octet-stream")
        await origin.offer(pointer, seeder="")  # seeds it and announces a provider record
        while origin.announces < 1:
            await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        await asyncio.gather(*(p.fetch_from_dht(pointer, None) for p in planes[1:]))
        elapsed = time.perf_counter() - t0
        await asyncio.sleep(1.1)
        up = origin.session.stats().uploaded
        return {
            "seconds_all_done": round(elapsed, 2),
            "origin_upload_bytes": up,
            "origin_upload_over_size": round(up / len(data), 2),
            "fetcher_upload_bytes": sum(p.session.stats().uploaded for p in planes[1:]),
        }
    finally:
        for p in planes:
            await p.stop()
        for d in directories:
            await d.stop()


async def http_run(data: bytes, fetchers: int, root: Path) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    with live_server(root / "node", max_body_bytes=len(data) + 1024) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=600) as client:
            put = await client.put(
                "/~/bench/blob",
                content=data,
                headers={**srv.auth, "Content-Type": "application/octet-stream"},
            )
            put.raise_for_status()

            async def one() -> int:
                h = hashlib.sha256()
                async with client.stream("GET", "/~/bench/blob?download", headers=srv.auth) as r:
                    r.raise_for_status()
                    async for chunk in r.aiter_bytes(1 << 20):
                        h.update(chunk)
                assert h.hexdigest() == digest
                return len(data)

            t0 = time.perf_counter()
            sent = sum(await asyncio.gather(*(one() for _ in range(fetchers))))
            elapsed = time.perf_counter() - t0
    return {
        "seconds_all_done": round(elapsed, 2),
        "origin_upload_bytes": sent,
        "origin_upload_over_size": round(sent / len(data), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--fetchers", type=int, default=10)
    args = parser.parse_args()
    data = os.urandom(int(args.mb * 1_000_000))
    with tempfile.TemporaryDirectory() as tmp:
        once = asyncio.run(swarm_run(data, args.fetchers, Path(tmp) / "once", True))
        plain = asyncio.run(swarm_run(data, args.fetchers, Path(tmp) / "plain", False))
        dht = asyncio.run(dht_run(data, args.fetchers, Path(tmp) / "dht"))
        http = asyncio.run(http_run(data, args.fetchers, Path(tmp) / "http"))
    out = {"blob_bytes": len(data), "fetchers": args.fetchers, "swarm_super_seeding": once}
    out |= {"swarm_plain": plain, "swarm_peers_from_dht": dht, "http": http}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
