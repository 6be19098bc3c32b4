"""DHT lookups on a real devnet before and after ``kill -9`` of 3 of its 10 nodes (issue 19).

    python -m bench.devnet_dht [--nodes 10] [--killed 3] [--lookups 20]

``statebus devnet 10`` starts ten ``statebus serve`` processes (each its own HTTP server, store and
DHT node, with the settings ``serve`` uses). This process then joins their invite-only DHT as one
more peer, as a follower's node does (``statebus serve``'s DHT settings: ksize 20, alpha 3, 0.5 s
RPC timeout), and resolves every node's public key twice (before). It sends SIGKILL to three node
processes (no goodbye, as in a crash), resolves ``--lookups`` times a live node's key and a dead
node's key in turn (their records are still held by the live nodes), waits until the requests to the
dead nodes have timed out (0.6 s), and resolves ``--lookups`` times again. The devnet is then stopped
(Ctrl-C, as a user would) and its folder removed.

Prints one line of milliseconds, in the form of ``bench.dht_heal`` (which runs bare DHT nodes in two
processes): the lookups before the kill, the first lookup after it, the median and worst right after
it, the median and worst once the failed contacts are evicted, how many lookups found a record, and
how many contacts the resolver evicted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.dht_heal import WAIT_TIMEOUT, timed
from statebus.federation.dht import KademliaDirectory

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 180.0


def start_devnet(n: int, base: Path, log: Path) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    """``statebus devnet n --base base`` (its output in ``log``); returns it once ``devnet.json``
    lists every node."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "statebus", "devnet", str(n), "--base", str(base)],
            env={**os.environ, "PYTHONPATH": path}, cwd=ROOT,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    details = base / "devnet.json"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"statebus devnet exited with status {proc.returncode}:\n{tail}")
        if details.exists():
            return proc, json.loads(details.read_text())
        time.sleep(0.2)
    stop_devnet(proc)
    raise RuntimeError("the devnet did not start in time")


def stop_devnet(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C: the devnet stops every node it still runs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _evicted(resolver: KademliaDirectory) -> str:
    """How many contacts the resolver evicted (``-`` on code that does not count them)."""
    count = vars(resolver.protocol).get("evicted")
    return str(count) if isinstance(count, int) else "-"


async def measure(details: dict[str, object], secret: bytes, killed: int, lookups: int) -> str:
    nodes = details["nodes"]
    assert isinstance(nodes, list)
    resolver = KademliaDirectory(os.urandom(32), str(details["dht"]), secret, wait_timeout=WAIT_TIMEOUT)
    await resolver.start([_address(nodes[0]["dht"]), _address(nodes[1]["dht"])])
    try:
        keys = [str(node["pubkey"]) for node in nodes]
        before = [await timed(resolver, pk) for pk in keys * 2]
        dead, live = nodes[-killed:], keys[:-killed]
        dead_keys = [str(node["pubkey"]) for node in dead]
        for node in dead:
            os.kill(int(node["pid"]), signal.SIGKILL)
        await asyncio.sleep(0.05)  # the processes are gone (their sockets closed, no goodbye)
        pick = [live, dead_keys]
        after = [await timed(resolver, pick[i % 2][i % len(pick[i % 2])]) for i in range(lookups)]
        await asyncio.sleep(WAIT_TIMEOUT + 0.1)  # the requests to dead nodes time out: evicted
        evicted = [await timed(resolver, pick[i % 2][(i + 1) % len(pick[i % 2])]) for i in range(lookups)]
    finally:
        await resolver.stop()
    was, ms, later = ([t for t, _ in xs] for xs in (before, after, evicted))
    found = sum(ok for _, ok in after + evicted)
    return (
        f"devnet_dht nodes={len(nodes)} killed={killed} processes=statebus-serve "
        f"before_p50={statistics.median(was):.2f}ms before_max={max(was):.2f}ms "
        f"first_after={ms[0]:.2f}ms after_p50={statistics.median(ms):.2f}ms after_max={max(ms):.2f}ms "
        f"evicted_p50={statistics.median(later):.2f}ms evicted_max={max(later):.2f}ms "
        f"found={found}/{2 * lookups} evicted={_evicted(resolver)}"
    )


def main(n: int, killed: int, lookups: int) -> str:
    if not 0 < killed < n - 1:
        raise SystemExit("--killed is at least 1 and leaves two nodes running")
    with tempfile.TemporaryDirectory(prefix="bench-devnet-") as tmp:
        base = Path(tmp) / "dn"
        proc, details = start_devnet(n, base, Path(tmp) / "devnet.log")
        try:
            secret = (base / "dht_secret").read_text().strip().encode()
            return asyncio.run(measure(details, secret, killed, lookups))
        finally:
            stop_devnet(proc)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--killed", type=int, default=3)
    parser.add_argument("--lookups", type=int, default=20)
    args = parser.parse_args()
    print(main(args.nodes, args.killed, args.lookups))
