"""Hosted apps' handlers: ``python -m bench.apps [--writes N] [--apps N] [--json]``.

Measures, in this process, on a node in a temporary data folder (SQLite, the default settings):

* cold start: the first JS runtime of the process (the quickjs wasm module compiled), then a second
  app's runtime (the module reused);
* per-call cost of ``validate`` (one entry) and ``derive`` (a count over 10 entries: 11 host calls);
* writes/s of ``node.save`` through a validated pattern next to the same writes to a key no app
  covers, and to a node with no app at all, in one run (50 writes in flight, like HTTP clients);
* memory per installed app: RSS growth over ``--apps`` loaded apps, and the linear memory of each;
* another client's GET p99 (HTTP, a real server on a loopback port) while a handler spins.

The figures are quoted in docs/apps.md ("the sandbox: guarantees and limits").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.procs import rss_bytes

HANDLERS = Path(__file__).resolve().parent.parent / "tests" / "apps" / "handlers.js"


def _spec(author: str, name: str = "gb", **overrides: Any) -> Any:
    from statebus.apps.patterns import Grants
    from statebus.apps.spec import AppSpec

    fields: dict[str, Any] = {
        "grants": Grants.parse(read=["gb/"], write=["gb/"], read_others=["gb/"]),
        "handler_source": HANDLERS.read_text(),
        "validate": {"gb/entries/*": "validateEntry"},
        "schemas": {"gb/entries/*": {"type": "object", "required": ["text"]}},
    }
    fields.update(overrides)
    return AppSpec(name, "1.0.0", "bench", author, **fields)


def cold_start() -> dict[str, float]:
    from statebus.apps.sandbox import Limits
    from statebus.apps.sandbox.js import JsSandbox, warm

    t = time.perf_counter()
    warm()
    first = time.perf_counter() - t
    t = time.perf_counter()
    sb = JsSandbox(HANDLERS.read_text(), ["validateEntry", "countEntries"], Limits())
    second = time.perf_counter() - t
    sb.close()
    return {"first_runtime_s": round(first, 3), "next_runtime_ms": round(second * 1000, 2)}


async def _writes(node: Any, prefix: str, n: int, inflight: int = 50) -> float:
    sem = asyncio.Semaphore(inflight)

    async def one(i: int) -> None:
        async with sem:
            await node.save(f"{prefix}{i}", {"text": f"entry {i}"})

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - t)


async def in_process(writes: int, apps: int) -> dict[str, Any]:
    from statebus.apps.handlers import AppHost, CallHost
    from statebus.config import Settings
    from statebus.server.assembly import build_node

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        bare = build_node(replace(Settings(data_dir=Path(tmp) / "bare")))
        out["writes_per_s_no_app"] = round(await _writes(bare, "/~/gb/entries/", writes))
        await bare.aclose()

        node = build_node(replace(Settings(data_dir=Path(tmp) / "node")))
        host = AppHost(node)
        host.load(_spec(node.local))
        app = host.apps["gb"]
        await app.runner.start()
        out["writes_per_s_validated"] = round(await _writes(node, "/~/gb/entries/", writes))
        out["writes_per_s_uncovered"] = round(await _writes(node, "/~/plain/", writes))

        entry = {"key": "gb/entries/x", "kind": "set", "value": {"text": "hello"}, "author": node.local}
        times = []
        for i in range(300):
            t = time.perf_counter()
            await app.runner.call("validateEntry", [entry, None], i, CallHost(app))
            times.append(time.perf_counter() - t)
        out["validate_call_ms"] = _ms(times)

        with tempfile.TemporaryDirectory() as tmp2:
            small = build_node(replace(Settings(data_dir=Path(tmp2))))
            h2 = AppHost(small)
            h2.load(_spec(small.local, derive={"gb/count": "countEntries"}))
            for i in range(10):
                await small.save(f"/~/gb/entries/{i}", {"text": "x" * i})
            a2 = h2.apps["gb"]
            times = []
            for i in range(100):
                t = time.perf_counter()
                await a2.runner.call("countEntries", ["gb/count"], i, CallHost(a2))
                times.append(time.perf_counter() - t)
            out["derive_call_ms_10_entries"] = _ms(times)
            h2.close()
            await small.aclose()

        before = rss_bytes(os.getpid())
        for i in range(apps):
            host.load(_spec(node.local, name=f"app{i}"))
        await asyncio.gather(*(host.apps[f"app{i}"].runner.start() for i in range(apps)))
        grown = rss_bytes(os.getpid()) - before
        out["rss_per_app_mb"] = round(grown / apps / 2**20, 2)
        out["linear_memory_per_app_mb"] = round(host.status()[0].memory_bytes / 2**20, 2)
        host.close()
        await node.aclose()
    return out


def get_p99_while_spinning(requests: int = 300) -> dict[str, float]:
    import httpx

    from statebus.apps.patterns import Grants
    from statebus.apps.spec import AppSpec
    from statebus.testing.live_server import live_server

    with tempfile.TemporaryDirectory() as tmp, live_server(Path(tmp)) as srv:
        spec = AppSpec(
            "hostile",
            "0",
            "bench",
            srv.local,
            Grants.parse(write=["h/"]),
            HANDLERS.read_text(),
            validate={"h/*": "spin"},
        )
        loop = srv.running.task.get_loop() if srv.running.task else None
        assert loop is not None

        async def load() -> None:
            srv.running.apps.load(spec)

        asyncio.run_coroutine_threadsafe(load(), loop).result(30)
        result: dict[str, float] = {}
        with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=30) as c:
            c.put("/~/plain", json=1)
            for label, spinning in (("idle", False), ("spinning", True)):
                stop = threading.Event()

                thread = threading.Thread(target=_attack, args=(srv.url, srv.auth, stop))
                if spinning:
                    thread.start()
                    time.sleep(0.3)
                times = []
                for _ in range(requests):
                    t = time.perf_counter()
                    c.get("/~/plain")
                    times.append(time.perf_counter() - t)
                stop.set()
                if spinning:
                    thread.join()
                result[f"get_p99_ms_{label}"] = round(statistics.quantiles(times, n=100)[98] * 1000, 2)
                result[f"get_median_ms_{label}"] = round(statistics.median(times) * 1000, 2)
    return result


def _attack(url: str, auth: dict[str, str], stop: threading.Event) -> None:
    """PUT to the spinning validator's key until ``stop``: each call runs 0.1 s and traps."""
    import httpx

    with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
        while not stop.is_set():
            client.put("/~/h/x", json=1)


def _ms(times: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(times) * 1000, 3),
        "p99": round(statistics.quantiles(times, n=100)[98] * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--apps", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"cold_start": cold_start()}
    results.update(asyncio.run(in_process(args.writes, args.apps)))
    results.update(get_p99_while_spinning())
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for key, value in results.items():
        print(f"{key:28} {value}")


if __name__ == "__main__":
    main()
