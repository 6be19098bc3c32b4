"""Run inside a network namespace by ``test_netns_egress.py``: a blob moves between two swarm sessions
on loopback while the namespace also has a real interface with a default route, and this prints how
many packets that interface sent meanwhile, as JSON. ``defaults`` instead idles a libtorrent session
built with libtorrent's own defaults for as long (the control: it does send)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

import libtorrent as lt

from statebus.blobs import BlobStore
from statebus.swarm import SwarmSession


def tx_packets(dev: str) -> int:
    return int(Path(f"/sys/class/net/{dev}/statistics/tx_packets").read_text())


async def ours(root: Path) -> dict[str, int]:
    data = os.urandom(4 << 20)
    seeder = SwarmSession(root / "s", interface="127.0.0.2")
    fetcher = SwarmSession(root / "f", interface="127.0.0.3")
    await seeder.start()
    await fetcher.start()
    try:
        a = BlobStore(root / "a", max_bytes=1 << 30, fsync=False)
        b = BlobStore(root / "b", max_bytes=1 << 30, fsync=False)
        info = a.put_bytes(data)
        meta = await seeder.seed(a.path(info.hash))
        await asyncio.wait_for(fetcher.fetch(meta, [seeder.address], b), 30)
        assert b.read(info.hash) == data
        await asyncio.sleep(2.0)  # the time LSD, UPnP and the DHT take to speak up, if they were on
        return {"uploaded": seeder.stats().uploaded}
    finally:
        await fetcher.close()
        await seeder.close()


async def defaults() -> dict[str, int]:
    ses = lt.session()  # libtorrent's defaults: DHT, LSD, UPnP, NAT-PMP on, 0.0.0.0:6881
    await asyncio.sleep(3.0)
    ses.pause()
    return {"uploaded": 0}


def main() -> None:
    mode, dev = sys.argv[1], sys.argv[2]
    before = tx_packets(dev)
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(ours(Path(tmp)) if mode == "ours" else defaults())
    out["tx_packets"] = tx_packets(dev) - before
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
