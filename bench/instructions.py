"""Instructions per request of a whole server (uvicorn included), counted by callgrind.

    python -m bench.instructions writes      # durable PUTs to a statebus node
    python -m bench.instructions writes --durability process   # the same, no fsync per commit
    python -m bench.instructions writes --encrypt              # the same, data encrypted at rest
    python -m bench.instructions hello       # GETs to the raw-ASGI hello world (the reference)
    python -m bench.instructions hello_put   # the same PUTs to the hello world

The server runs under ``valgrind --tool=callgrind --instr-atstart=no``; 32 keep-alive clients (this
process, not instrumented) send ``--warmup`` requests, then instrumentation is switched on for
exactly ``--count`` requests and off again. The figure is user-space instructions of every thread
of the server (the event loop and the node's writer thread) per request. Unlike CPU seconds it does
not move when other processes share the machine (two runs of the same code agree to ~0.1%); it leaves
out the kernel's work (socket reads and writes, fsync, epoll) and cache effects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import uvloop

from bench.client import HttpConn, request_bytes
from bench.loadgen import value_bytes

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
REFS = re.compile(rb"Collected\s*:\s*([0-9,]+)")


def server_command(kind: str, data: Path, durability: str = "power", encrypt: bool = False) -> list[str]:
    module = (
        [
            "bench.serve_node",
            "--data",
            str(data),
            "--durability",
            durability,
            *(["--encrypt"] if encrypt else []),
        ]
        if kind == "writes"
        else ["bench.reference", "hello"]
    )
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={data.parent}/callgrind.out.%p",
        sys.executable,
        "-m",
        *module,
    ]


def instrument(pid: int, state: str) -> None:
    subprocess.run(["callgrind_control", "-i", state, str(pid)], check=True, capture_output=True)


async def drive(port: int, pid: int, kind: str, token: str, conns: int, warmup: int, count: int) -> None:
    pool = [await HttpConn.open(HOST, port) for _ in range(conns)]
    auth = {"authorization": f"Bearer {token}"} if token else {}
    hostport = f"{HOST}:{port}"

    def make(w: int, i: int) -> bytes:
        if kind == "hello":
            return request_bytes("GET", "/", hostport)
        headers = {"content-type": "application/json", **auth}
        return request_bytes("PUT", f"/~/bench/w{w}", hostport, body=value_bytes(i), headers=headers)

    async def run(n: int) -> None:
        async def worker(w: int) -> None:
            for i in range(n // conns):
                status, body = await pool[w].request(make(w, i))
                if status != 200:
                    raise SystemExit(f"status {status}: {body[:200]!r}")

        await asyncio.gather(*(worker(w) for w in range(conns)))

    await run(warmup)
    instrument(pid, "on")
    await run(count)
    instrument(pid, "off")
    for c in pool:
        c.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("kind", choices=("writes", "hello", "hello_put"))
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=640)
    parser.add_argument("--count", type=int, default=1280)
    parser.add_argument(
        "--durability", default="power", help="the node's durability (writes): power or process"
    )
    parser.add_argument("--encrypt", action="store_true", help="writes: the data folder encrypted at rest")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="statebus-instr-") as tmp:
        data = Path(tmp) / "node"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            server_command(args.kind, data, args.durability, args.encrypt),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            info = json.loads(proc.stdout.readline())
            token = ""
            if args.kind == "writes":
                from statebus.identity import keystore

                token = keystore.load_owner_token(data)
            count = args.count // args.conns * args.conns
            uvloop.run(drive(info["port"], info["pid"], args.kind, token, args.conns, args.warmup, count))
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        found = REFS.search(err)
        if found is None:
            raise SystemExit(err.decode(errors="replace")[-2000:])
        total = int(found.group(1).replace(b",", b""))
        print(f"{args.kind}: {total / count:,.0f} instructions per request ({count} requests, {ROOT})")


if __name__ == "__main__":
    main()
