"""DHT lookups before and after a crash: 10 nodes on 127.0.0.1, ``kill -9`` of 3 of them.

    python -m bench.dht_heal [--nodes 10] [--killed 3] [--lookups 20] [--ksize 20]

Seven nodes run in this process, the other three in a child process (``python -m bench.dht_heal
child``) that is killed with SIGKILL: their sockets close with no goodbye, as in a crash. Every node
publishes a record; one node of this process then resolves every other node (before the kill), and
after the kill resolves ``--lookups`` times a live node's key and a dead node's key in turn (their
records are still held by the live nodes), waits until the requests to the dead nodes have timed out
(0.6 s), and resolves ``--lookups`` times again. Settings are the ones ``statebus serve`` uses
(ksize 20, alpha 3, a 0.5 s RPC timeout). Prints one line of milliseconds: the lookups before the
kill, the first lookup after it, the median and worst right after it, the median and worst once the
failed contacts are evicted, how many lookups found a record and how many contacts were evicted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from statebus.federation.dht import KademliaDirectory

SECRET_ENV = "STATEBUS_BENCH_DHT_SECRET"
ROOT = Path(__file__).resolve().parents[1]
WAIT_TIMEOUT = 0.5  # what statebus serve passes (statebus/server/running.py)


def _directory(secret: bytes, ksize: int) -> KademliaDirectory:
    return KademliaDirectory(os.urandom(32), "heal", secret, ksize=ksize, wait_timeout=WAIT_TIMEOUT)


async def _child(bootstrap_port: int, count: int, ksize: int) -> None:
    """Start ``count`` nodes, publish, print their keys, then wait to be killed."""
    secret = bytes.fromhex(os.environ[SECRET_ENV])
    nodes = [_directory(secret, ksize) for _ in range(count)]
    for node in nodes:
        await node.start([("127.0.0.1", bootstrap_port)])
    for node in nodes:
        await node.publish([f"http://127.0.0.1:{node.port}"])
    sys.stdout.write(json.dumps({"pubkeys": [n.pubkey for n in nodes]}) + "\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


async def start_child(bootstrap_port: int, count: int, ksize: int, secret: bytes) -> tuple[Any, list[str]]:
    """Spawn the child process of ``count`` nodes; return it and its nodes' public keys."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.dht_heal", "child", str(bootstrap_port), str(count), str(ksize),
        env={**os.environ, SECRET_ENV: secret.hex(), "PYTHONPATH": path}, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    if not line:
        raise RuntimeError("the child DHT process exited")
    return proc, list(json.loads(line)["pubkeys"])


async def timed(resolver: KademliaDirectory, pubkey: str) -> tuple[float, bool]:
    """Milliseconds one resolve took, and whether it found a record."""
    t = time.perf_counter()
    record = await resolver.resolve(pubkey)
    return (time.perf_counter() - t) * 1000, record is not None


async def main(n: int, killed: int, lookups: int, ksize: int) -> str:
    secret = os.urandom(16)
    nodes = [_directory(secret, ksize) for _ in range(n - killed)]
    await nodes[0].start([])
    for node in nodes[1:]:
        await node.start([("127.0.0.1", nodes[0].port)])
    proc, dead_keys = await start_child(nodes[0].port, killed, ksize, secret)
    try:
        for node in nodes:
            await node.publish([f"http://127.0.0.1:{node.port}"])
        resolver = nodes[-1]
        live_keys = [node.pubkey for node in nodes[:-1]]
        before = [await timed(resolver, pk) for pk in [*live_keys, *dead_keys] * 2]
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        after = [await timed(resolver, (live_keys, dead_keys)[i % 2][i % 3]) for i in range(lookups)]
        await asyncio.sleep(WAIT_TIMEOUT + 0.1)  # the requests to dead nodes time out: evicted
        evicted = [await timed(resolver, (live_keys, dead_keys)[i % 2][i % 3]) for i in range(lookups)]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for node in nodes:
            await node.stop()
    ms = [t for t, _ in after]
    later = [t for t, _ in evicted]
    was = [t for t, _ in before]
    found = sum(ok for _, ok in after + evicted)
    return (
        f"dht_heal nodes={n} killed={killed} ksize={ksize} "
        f"before_p50={statistics.median(was):.2f}ms before_max={max(was):.2f}ms "
        f"first_after={ms[0]:.2f}ms after_p50={statistics.median(ms):.2f}ms after_max={max(ms):.2f}ms "
        f"evicted_p50={statistics.median(later):.2f}ms evicted_max={max(later):.2f}ms "
        f"found={found}/{2 * lookups} evicted={getattr(resolver.protocol, 'evicted', '-')}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        asyncio.run(_child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--killed", type=int, default=3)
    parser.add_argument("--lookups", type=int, default=20)
    parser.add_argument("--ksize", type=int, default=20)
    args = parser.parse_args()
    print(asyncio.run(main(args.nodes, args.killed, args.lookups, args.ksize)))
