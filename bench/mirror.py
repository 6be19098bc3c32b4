"""Mirror push and restore throughput, and the mirror's storage overhead (issue 15).

    python -m bench.mirror [--ops 100000] [--keys 10000]

An owner node (in this process, its store on disk) writes ``--ops`` signed ops over ``--keys``
keys (about 60-byte JSON values); a mirror node runs as a separate ``statebus serve`` process on
127.0.0.1 with the owner in its ``mirror_for``. The owner pushes everything (sealed segments over
real HTTP), then a fresh node recovered from the same phrase restores it all (decrypt, verify every
op's signature, apply durably). Prints one table: MB/s and ops/s each way, plaintext op bytes against
the ciphertext on the mirror's disk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from statebus.config import Settings
from statebus.federation.mirror_restore import restore_from_mirror
from statebus.identity import keystore
from statebus.mirror.push import MirrorTargets, push
from statebus.server import build_node


def _start_mirror(folder: Path, owner: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "STATEBUS_MIRROR_FOR": owner, "STATEBUS_MIRROR_QUOTA_BYTES": "64GiB"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "statebus",
            "serve",
            "--json",
            "--port",
            "0",
            "--dht-port",
            "0",
            "--data",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return proc, str(info["url"])


async def run(n: int, keys: int, base: Path) -> dict[str, float]:
    owner_dir, restored_dir = base / "owner", base / "restored"
    identity, phrase = keystore.init(owner_dir)
    node = build_node(Settings(data_dir=owner_dir))
    for i in range(n):
        node.bus.save(f"/~/bench/{i % keys}", {"i": i, "text": "a typical small value of some sixty bytes"})
        if i % 5000 == 4999:
            await node.flush()
    await node.flush()
    proc, url = _start_mirror(base / "mirror", identity.pubkey)
    try:
        targets = MirrorTargets(owner_dir)
        targets.add(url)
        t0 = time.perf_counter()
        report = await push(node, identity, targets, url)
        push_s = time.perf_counter() - t0
        assert report.error == "", report.error
        await node.aclose()
        keystore.recover(restored_dir, phrase)
        fresh = build_node(Settings(data_dir=restored_dir))
        t0 = time.perf_counter()
        restored = await restore_from_mirror(fresh, keystore.load(restored_dir), url)
        restore_s = time.perf_counter() - t0
        assert restored.error == "" and restored.applied == report.ops, restored
        await fresh.aclose()
    finally:
        proc.terminate()
        proc.wait(30)
    sealed = sum(p.stat().st_size for p in (base / "mirror" / "mirror" / identity.pubkey).iterdir())
    return {
        "ops": report.ops,
        "segments": report.segments,
        "plain_mb": report.plain_bytes / 1e6,
        "sealed_mb": sealed / 1e6,
        "push_s": push_s,
        "restore_s": restore_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="statebus-bench-mirror-") as tmp:
        r = asyncio.run(run(args.ops, args.keys, Path(tmp)))
    print("| direction | ops | seconds | ops/s | MB/s (plaintext) |")
    print("|---|---:|---:|---:|---:|")
    for what, s in (("push", r["push_s"]), ("restore", r["restore_s"])):
        print(f"| {what} | {r['ops']:.0f} | {s:.2f} | {r['ops'] / s:,.0f} | {r['plain_mb'] / s:.2f} |")
    print(
        f"\nplaintext {r['plain_mb']:.2f} MB in {r['segments']:.0f} segments; on the mirror's disk "
        f"{r['sealed_mb']:.2f} MB: overhead {r['sealed_mb'] / r['plain_mb'] - 1:+.1%}"
    )


if __name__ == "__main__":
    main()
