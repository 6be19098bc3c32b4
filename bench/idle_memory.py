"""Where the memory of idle SSE subscribers goes: ``python -m bench.idle_memory [--subscribers N]``.

Starts a node (as ``bench.serve_node`` does, plus ``tracemalloc``) in a subprocess, opens ``N`` idle
SSE streams on one key from this process, and prints the Python allocations that appeared per stream,
grouped by source line and by allocation traceback; then one write must reach every stream. The
server takes its two snapshots when it gets SIGUSR1 and writes the comparison as JSON (no pickle).
RSS with tracemalloc on is inflated by its own bookkeeping: quote ``python -m bench --only idle`` for
bytes of RSS, this for where they come from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.procs import ServerProcess, raise_fd_limit, rss_bytes

KEY = "/~/bench/idle"


def serve(data: Path, report: Path, frames: int) -> None:
    """The node, with tracemalloc: SIGUSR1 takes a snapshot; the second writes ``report``."""
    from bench.serve_common import NODE_UVICORN_OPTIONS, announce, listen
    from statebus.config import Settings
    from statebus.server import make_server, tune_gc

    tracemalloc.start(frames)
    raise_fd_limit()
    os.umask(0o077)
    settings = replace(Settings(data_dir=data), host="127.0.0.1", port=0, log_level="warning")
    sock = listen()
    server = make_server(settings, **NODE_UVICORN_OPTIONS)
    tune_gc()
    snaps: list[tracemalloc.Snapshot] = []
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]

    def on_signal(signum: int, frame: Any) -> None:
        snaps.append(tracemalloc.take_snapshot().filter_traces(ignore))
        if len(snaps) == 2:
            report.write_text(json.dumps(compare(snaps[0], snaps[1])))

    signal.signal(signal.SIGUSR1, on_signal)
    announce(sock)
    server.run(sockets=[sock])


def compare(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> dict[str, Any]:
    """Size and count differences by line and by traceback, biggest first."""
    out: dict[str, Any] = {"total": 0, "lines": [], "tracebacks": []}
    for group in ("lineno", "traceback"):
        rows = []
        for d in after.compare_to(before, group):
            if d.size_diff <= 0:
                continue
            rows.append({"size": d.size_diff, "count": d.count_diff, "where": d.traceback.format()})
        out["lines" if group == "lineno" else "tracebacks"] = rows[:200]
        if group == "lineno":
            out["total"] = sum(r["size"] for r in rows)
    return out


async def drive(port: int, pid: int, n: int, report: Path) -> dict[str, Any]:
    from bench.client import HttpConn
    from bench.loadgen import Target, open_subscribers, value_bytes

    target = Target({"port": port})
    conn = await HttpConn.open("127.0.0.1", port)
    await conn.request(target.put(KEY, value_bytes(0)))
    warm = await open_subscribers(target, [KEY] * 50, 4)
    for s in warm:
        s.close()
    await asyncio.sleep(1.0)
    os.kill(pid, signal.SIGUSR1)
    await asyncio.sleep(0.5)
    rss0 = rss_bytes(pid)
    subs = await open_subscribers(target, [KEY] * n, 4)
    await asyncio.sleep(2.0)
    rss1 = rss_bytes(pid)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while not report.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    conn.close()  # the snapshots may take longer than the keep-alive timeout
    conn = await HttpConn.open("127.0.0.1", port)
    await conn.request(target.put(KEY, value_bytes(1)))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and sum(s.seen[1] for s in subs) < n:
        await asyncio.sleep(0.05)
    reached = sum(s.seen[1] for s in subs)
    conn.close()
    for s in subs:
        s.close()
    doc: dict[str, Any] = json.loads(report.read_text())
    doc["rss_per_subscriber_with_tracemalloc"] = round((rss1 - rss0) / n)
    doc["reached"] = reached
    return doc


def show(doc: dict[str, Any], n: int, top: int) -> str:
    lines = [
        f"{n} idle streams: {doc['total'] / n:,.0f} bytes of Python allocations each "
        f"(RSS with tracemalloc: {doc['rss_per_subscriber_with_tracemalloc']:,}); "
        f"the write reached {doc['reached']}",
        "",
        "by line (bytes / stream, blocks / stream):",
    ]
    for row in doc["lines"][:top]:
        lines.append(f"  {row['size'] / n:8.0f} {row['count'] / n:6.2f}  {row['where'][-2].strip()}")
    lines += ["", "by traceback (innermost last):"]
    for row in doc["tracebacks"][:top]:
        lines.append(f"  {row['size'] / n:8.0f} {row['count'] / n:6.2f}")
        frames = [w.strip() for w in row["where"] if w.strip().startswith("File ")]
        lines.extend(f"        {f}" for f in frames[-6:])
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=12, help="traceback depth kept by tracemalloc")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--json", type=Path, default=None, help="also write the comparison here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.data, args.report, args.frames)
        return 0
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="statebus-idle-") as tmp:
        data, report = Path(tmp) / "node", Path(tmp) / "report.json"
        cmd = ["--serve", "--data", str(data), "--report", str(report), "--frames", str(args.frames)]
        with ServerProcess("bench.idle_memory", cmd) as server:
            from statebus.identity import keystore

            os.environ["STATEBUS_BENCH_TOKEN"] = keystore.load_owner_token(data)
            doc = asyncio.run(drive(server.port, server.pid, args.subscribers, report))
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=1))
    sys.stdout.write(show(doc, args.subscribers, args.top) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
