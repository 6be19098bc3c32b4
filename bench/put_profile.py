"""The CPU of one durable PUT through the node's ASGI app, in-process: ``python -m bench.put_profile``.

No sockets and no uvicorn: ``writers`` coroutines each send ``PUT /~/bench/w<i>`` (a 100-byte JSON
value, the owner's token, the headers the load generator sends) straight to the app built by
``statebus.server.create_app`` on a new data folder, and wait for the answer (given once durable).
It prints PUT/s, the event-loop thread's CPU per PUT (``time.thread_time``, so the writer thread's
SQLite work is not in it) and the whole process's CPU per PUT. ``--profile`` adds a cProfile pass
(its figures are slower; read them for the shape). ``--repeat N`` measures N times and prints the
median. ``--callgrind`` (run under ``valgrind --tool=callgrind --instr-atstart=no``) switches
instrumentation on for the measured loops only: the instruction count (``Ir``) per PUT is a figure
that other processes on a shared machine do not move, unlike CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import statistics
import subprocess
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from statebus.config import Settings
from statebus.server import create_app, owner_token, tune_gc
from statebus.testing.asgi import put_scope

Message = MutableMapping[str, Any]


def instrument(state: str) -> None:
    """Switch callgrind's instrumentation of this process ``on`` or ``off``."""
    subprocess.run(["callgrind_control", "-i", state, str(os.getpid())], check=True, capture_output=True)


def show(label: str, row: tuple[float, float, float]) -> str:
    """One line of figures: PUT/s, loop-thread and process CPU µs per PUT."""
    return f"{label}PUT/s {row[0]:7.0f}   loop CPU µs/PUT {row[1]:6.1f}   process CPU µs/PUT {row[2]:6.1f}"


async def run(
    writers: int, count: int, profile: bool, repeat: int, callgrind: bool = False, durability: str = "power"
) -> None:
    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="statebus-put-")), log_level="warning", durability=durability
    )
    app = create_app(settings)
    token = owner_token(settings)
    body = json.dumps({"v": "x" * 88}).encode()
    startup: asyncio.Queue[Message] = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})

    async def nothing(message: Message) -> None:
        return None

    life_scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    lifespan = asyncio.create_task(app(life_scope, startup.get, nothing))
    await asyncio.sleep(0.1)
    tune_gc()
    scopes = [put_scope(f"/~/bench/w{i}", token, body) for i in range(writers)]

    async def put(scope: dict[str, Any]) -> None:
        sent = False
        status: list[int] = []

        async def receive() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(dict(scope), receive, send)
        if status != [200]:
            raise SystemExit(f"PUT answered {status}")

    async def loop(n: int) -> None:
        async def writer(w: int) -> None:
            for _ in range(n // writers):
                await put(scopes[w])

        await asyncio.gather(*(writer(w) for w in range(writers)))

    await loop(count // 2)  # warm-up
    committer = app.state.node.committer
    rows = []
    for _ in range(repeat):
        batches = committer.batches
        if callgrind:
            subprocess.run(
                ["callgrind_control", "-i", "on", str(os.getpid())], check=True, capture_output=True
            )
        wall, thread, proc = time.perf_counter(), time.thread_time(), time.process_time()
        await loop(count)
        if callgrind:
            subprocess.run(
                ["callgrind_control", "-i", "off", str(os.getpid())], check=True, capture_output=True
            )
        wall = time.perf_counter() - wall
        thread = time.thread_time() - thread
        proc = time.process_time() - proc
        rows.append((count / wall, thread / count * 1e6, proc / count * 1e6))
        print(show("", rows[-1]) + f"   ops per commit {count / max(1, committer.batches - batches):5.1f}")
    if repeat > 1:
        med = [statistics.median(r[i] for r in rows) for i in range(3)]
        print(show("median ", (med[0], med[1], med[2])))
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        await loop(count)
        prof.disable()
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)
    gc.collect()
    await startup.put({"type": "lifespan.shutdown"})
    await lifespan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--count", type=int, default=6400)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="under valgrind --tool=callgrind --instr-atstart=no: count the measured loops only",
    )
    parser.add_argument("--durability", default="power", help="the node's durability: power or process")
    args = parser.parse_args()
    main = run(args.writers, args.count, args.profile, args.repeat, args.callgrind, args.durability)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


if __name__ == "__main__":
    main()
