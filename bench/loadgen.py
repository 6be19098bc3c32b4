"""The load generator: one scenario against one running server, in its own process.

``python -m bench.loadgen '<json config>'`` prints one JSON object (the scenario's figures) on stdout.
The owner token comes from ``$STATEBUS_BENCH_TOKEN`` (never on the command line). Each result holds
the server's and the generator's CPU seconds over the measured window, so a reader can see which
side was the limit.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import uvloop

from bench.client import HttpConn, SseConn, open_sse, request_bytes
from bench.procs import cpu_seconds, machine_busy_seconds, raise_fd_limit, rss_bytes

HOST = "127.0.0.1"
Result = dict[str, Any]


def percentiles(values: list[float] | Any) -> dict[str, float]:
    """p50/p99/max in milliseconds (0 when empty)."""
    data = sorted(values)
    if not data:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}

    def at(q: float) -> float:
        return round(float(data[min(len(data) - 1, int(q * len(data)))]) * 1000, 3)

    return {"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": round(data[-1] * 1000, 3)}


def value_bytes(seq: int, pad_to: int = 100) -> bytes:
    """A JSON value of exactly ``pad_to`` bytes holding the publisher's seq and send time."""
    head = f'{{"seq":{seq},"ts":{time.time():.6f},"pad":"'
    return (head + "x" * max(0, pad_to - len(head) - 2) + '"}').encode()


class Meter:
    """CPU seconds of the server and of this generator, and wall time, over a window."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self._t0 = self._s0 = self._g0 = self._m0 = 0.0
        self.result: Result = {}

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._s0 = cpu_seconds(self.server_pid)
        self._g0 = time.process_time()
        self._m0 = machine_busy_seconds()

    def stop(self) -> Result:
        wall = time.perf_counter() - self._t0
        server = cpu_seconds(self.server_pid) - self._s0
        gen = time.process_time() - self._g0
        other = max(0.0, machine_busy_seconds() - self._m0 - server - gen)
        self.result = {
            "wall_s": round(wall, 3),
            "server_cpu_s": round(server, 3),
            "generator_cpu_s": round(gen, 3),
            "server_cpu_util": round(server / wall, 3) if wall else 0.0,
            "generator_cpu_util": round(gen / wall, 3) if wall else 0.0,
            "other_cpu_util": round(other / wall, 3) if wall else 0.0,
        }
        return self.result


class Target:
    """Where requests go: a statebus node (``/~/…`` keys, owner token) or the pub/sub reference."""

    def __init__(self, cfg: Result) -> None:
        self.port: int = cfg["port"]
        self.kind: str = cfg.get("target", "node")
        self.hostport = f"{HOST}:{self.port}"
        token = os.environ.get("STATEBUS_BENCH_TOKEN", "")
        self.auth = {"authorization": f"Bearer {token}"} if token else {}

    def put(self, path: str, body: bytes) -> bytes:
        if self.kind == "pubsub":
            path = "/pub"
        return request_bytes(
            "PUT", path, self.hostport, body=body, headers={"content-type": "application/json", **self.auth}
        )

    def sub_path(self, path: str) -> str:
        return "/sub" if self.kind == "pubsub" else path

    @property
    def sep(self) -> bytes:
        return b"\r\n\r\n" if self.kind == "pubsub" else b"\n\n"


async def open_conns(port: int, n: int) -> list[HttpConn]:
    return [await HttpConn.open(HOST, port) for _ in range(n)]


async def open_subscribers(
    target: Target,
    paths: list[str],
    capacity: int,
    *,
    concurrency: int = 200,
    headers: dict[str, str] | None = None,
    track_ids: bool = False,
) -> list[SseConn]:
    """Open one SSE stream per path (``concurrency`` connects at a time) and wait for each first event."""
    sem = asyncio.Semaphore(concurrency)
    hdrs = {**target.auth, **(headers or {})}

    async def one(path: str) -> SseConn:
        async with sem:
            conn = await open_sse(
                HOST,
                target.port,
                target.sub_path(path),
                capacity=capacity,
                headers=hdrs,
                sep=target.sep,
                track_ids=track_ids,
            )
            await asyncio.wait_for(conn.ready, 60)
            return conn

    return list(await asyncio.gather(*(one(p) for p in paths)))


async def paced_publisher(
    target: Target,
    n_msgs: int,
    rate: float,
    path_of: Callable[[int], str],
    conns: int,
) -> Result:
    """Publish seq 1..n_msgs at ``rate``/s over ``conns`` keep-alive connections (each write awaited).

    A server that cannot keep up makes the publisher fall behind its schedule; it stops starting new
    writes after 1.2 × the planned duration (the achieved ``publish_rate`` tells)."""
    pool = await open_conns(target.port, conns)
    next_seq = 1
    acked: list[int] = []
    errors = 0
    lat: list[float] = []
    t0 = time.perf_counter() + 0.05
    deadline = t0 + 1.2 * n_msgs / rate

    async def worker(conn: HttpConn) -> None:
        nonlocal next_seq, errors
        while next_seq <= n_msgs and time.perf_counter() < deadline:
            seq = next_seq
            next_seq += 1
            delay = t0 + (seq - 1) / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            start = time.perf_counter()
            status, _ = await conn.request(target.put(path_of(seq), value_bytes(seq)))
            lat.append(time.perf_counter() - start)
            if status == 200:
                acked.append(seq)
            else:
                errors += 1

    await asyncio.gather(*(worker(c) for c in pool))
    elapsed = time.perf_counter() - t0
    for c in pool:
        c.close()
    return {
        "published": len(acked),
        "publish_errors": errors,
        "publish_rate": round(len(acked) / elapsed, 1),
        "ack": percentiles(lat),
        "acked": sorted(acked),
    }


async def drain(subs: list[SseConn], total: int, timeout: float) -> float:
    """Wait until the subscribers received ``total`` events between them (or ``timeout``)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if sum(s.events for s in subs) - len(subs) >= total:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # late duplicates would show up here
    return max((s.last_time for s in subs), default=0.0)


def delivery_stats(subs: list[SseConn], expected_of: Callable[[int], list[int]], t_first: float) -> Result:
    """Deliveries, rate, missing and duplicated counts, end-to-end latency over all subscribers."""
    delivered = sum(s.events for s in subs) - len(subs)  # minus each initial seq-0 event
    t_last = max(s.last_time for s in subs)
    lat: list[float] = []
    for s in subs:
        lat.extend(s.latencies)
    missing = sum(s.missing(expected_of(i)) for i, s in enumerate(subs))
    span = max(1e-9, t_last - t_first)
    return {
        "delivered": delivered,
        "deliveries_per_s": round(delivered / span, 1),
        "missing": missing,
        "duplicated": sum(s.duplicates for s in subs),
        "id_regressions": sum(s.id_regressions for s in subs),
        "closed_early": sum(1 for s in subs if s.closed.done()),
        "latency": percentiles(lat),
    }


# ---------------------------------------------------------------------- scenarios


async def closed_loop(
    port: int, conns: int, duration: float, warmup: float, make: Callable[[int, int], bytes]
) -> Result:
    """``conns`` clients each sending one request after another; rate and latency after ``warmup``."""
    pool = await open_conns(port, conns)
    phase = 0  # 0 warm-up, 1 measuring, 2 stop
    count = errors = 0
    lat: list[float] = []

    async def worker(w: int, conn: HttpConn) -> None:
        nonlocal count, errors
        i = 0
        while phase < 2:
            i += 1
            raw = make(w, i)
            start = time.perf_counter()
            status, _ = await conn.request(raw)
            if phase == 1:
                lat.append(time.perf_counter() - start)
                count += 1
                errors += status != 200

    tasks = [asyncio.ensure_future(worker(w, c)) for w, c in enumerate(pool)]
    await asyncio.sleep(warmup)
    meter = Meter(CFG["server_pid"])
    meter.start()
    phase = 1
    await asyncio.sleep(duration)
    phase = 2
    window = meter.stop()
    await asyncio.gather(*tasks)
    for c in pool:
        c.close()
    return {
        "requests": count,
        "errors": errors,
        "rate": round(count / window["wall_s"], 1),
        "latency": percentiles(lat),
        **window,
    }


async def scenario_hello(cfg: Result) -> Result:
    target = Target(cfg)
    raw = request_bytes("GET", "/", target.hostport)
    return await closed_loop(target.port, cfg["conns"], cfg["duration"], cfg["warmup"], lambda w, i: raw)


async def scenario_writes(cfg: Result) -> Result:
    target = Target(cfg)

    def make(w: int, i: int) -> bytes:
        return target.put(f"/~/bench/w{w}", value_bytes(i))

    return await closed_loop(target.port, cfg["conns"], cfg["duration"], cfg["warmup"], make)


async def scenario_fanout(cfg: Result) -> Result:
    target = Target(cfg)
    n_subs, rate, duration = cfg["subscribers"], cfg["rate"], cfg["duration"]
    n_msgs = max(1, int(rate * duration))
    key = "/~/bench/fan"
    if target.kind == "node":
        conn = await HttpConn.open(HOST, target.port)
        await conn.request(target.put(key, value_bytes(0)))
        conn.close()
    subs = await open_subscribers(target, [key] * n_subs, n_msgs)
    meter = Meter(cfg["server_pid"])
    meter.start()
    t_first = time.time()
    pub = await paced_publisher(target, n_msgs, rate, lambda s: key, cfg.get("pub_conns", 1))
    acked = pub.pop("acked")
    await drain(subs, len(acked) * n_subs, cfg.get("drain", 5.0))
    window = meter.stop()
    stats = delivery_stats(subs, lambda i: acked, t_first)
    for s in subs:
        s.close()
    return {"subscribers": n_subs, "rate": rate, **pub, **stats, **window}


async def scenario_many_keys(cfg: Result) -> Result:
    target = Target(cfg)
    n_subs, rate, duration = cfg["subscribers"], cfg["rate"], cfg["duration"]
    n_msgs = max(n_subs, int(rate * duration))
    keys = [f"/~/bench/mk/k{i}" for i in range(n_subs)]
    pool = await open_conns(target.port, 16)

    async def init(j: int) -> None:
        for i in range(j, n_subs, len(pool)):
            await pool[j].request(target.put(keys[i], value_bytes(0)))

    await asyncio.gather(*(init(j) for j in range(len(pool))))
    for c in pool:
        c.close()
    subs = await open_subscribers(target, keys, n_msgs)
    meter = Meter(cfg["server_pid"])
    meter.start()
    t_first = time.time()
    pub = await paced_publisher(
        target, n_msgs, rate, lambda s: keys[(s - 1) % n_subs], cfg.get("pub_conns", 16)
    )
    acked = pub.pop("acked")
    await drain(subs, len(acked), cfg.get("drain", 5.0))
    window = meter.stop()
    by_sub: dict[int, list[int]] = {}
    for s in acked:
        by_sub.setdefault((s - 1) % n_subs, []).append(s)
    stats = delivery_stats(subs, lambda i: by_sub.get(i, []), t_first)
    for sub in subs:
        sub.close()
    return {"subscribers": n_subs, "rate": rate, **pub, **stats, **window}


async def scenario_resume(cfg: Result) -> Result:
    """A subtree subscriber leaves, ``ops`` writes happen, it comes back with Last-Event-ID."""
    target = Target(cfg)
    n_ops, n_keys = cfg["ops"], cfg["keys"]
    prefix = "/~/bench/resume/"
    conn = await HttpConn.open(HOST, target.port)
    for k in range(n_keys):
        await conn.request(target.put(f"{prefix}k{k}", value_bytes(0)))
    conn.close()
    first = await open_subscribers(target, [prefix], n_ops, track_ids=True)
    await asyncio.sleep(0.2)
    cursor = first[0].last_id
    first[0].close()
    pool = await open_conns(target.port, 32)
    next_op = 1
    last_seq = 0
    t_write = time.perf_counter()

    async def writer(c: HttpConn) -> None:
        nonlocal next_op, last_seq
        while next_op <= n_ops:
            op = next_op
            next_op += 1
            status, body = await c.request(target.put(f"{prefix}k{op % n_keys}", value_bytes(op)))
            if status == 200:
                last_seq = max(last_seq, int(json.loads(body)["seq"]))

    await asyncio.gather(*(writer(c) for c in pool))
    write_s = time.perf_counter() - t_write
    for c in pool:
        c.close()
    meter = Meter(cfg["server_pid"])
    meter.start()
    t0 = time.time()
    sub = await open_sse(
        HOST,
        target.port,
        prefix,
        capacity=n_ops,
        headers={**target.auth, "last-event-id": str(cursor)},
        track_ids=True,
    )
    sub.watch_id = last_seq
    reached = await asyncio.wait_for(sub.reached, 60)
    window = meter.stop()
    sub.close()
    return {
        "ops": n_ops,
        "keys": n_keys,
        "cursor": cursor,
        "last_seq": last_seq,
        "catch_up_s": round(reached - t0, 4),
        "events": sub.events,
        "missing": sub.missing(list(range(1, n_ops + 1))),
        "duplicated": sub.duplicates,
        "resets": sub.resets,
        "bytes": sub.raw_bytes,
        "write_phase_ops_per_s": round(n_ops / write_s, 1),
        **window,
    }


async def scenario_idle(cfg: Result) -> Result:
    """RSS of the server per open, idle SSE subscriber; then one write must reach all of them."""
    target = Target(cfg)
    n_subs = cfg["subscribers"]
    key = "/~/bench/idle"
    conn = await HttpConn.open(HOST, target.port)
    await conn.request(target.put(key, value_bytes(0)))
    warm = await open_subscribers(target, [key] * 50, 4)
    for s in warm:
        s.close()
    await asyncio.sleep(1.0)
    pid = cfg["server_pid"]
    rss0, gen0 = rss_bytes(pid), rss_bytes(os.getpid())
    t0 = time.perf_counter()
    subs = await open_subscribers(target, [key] * n_subs, 4)
    open_s = time.perf_counter() - t0
    await asyncio.sleep(2.0)
    rss1, gen1 = rss_bytes(pid), rss_bytes(os.getpid())
    status, _ = await conn.request(target.put(key, value_bytes(1)))
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline and sum(s.seen[1] for s in subs) < n_subs:
        await asyncio.sleep(0.05)
    reached = sum(s.seen[1] for s in subs)
    conn.close()
    for s in subs:
        s.close()
    return {
        "subscribers": n_subs,
        "open_s": round(open_s, 2),
        "server_rss_before_mb": round(rss0 / 2**20, 1),
        "server_rss_after_mb": round(rss1 / 2**20, 1),
        "bytes_per_subscriber": round((rss1 - rss0) / n_subs),
        "generator_bytes_per_subscriber": round((gen1 - gen0) / n_subs),
        "write_status": status,
        "write_reached": reached,
    }


SCENARIOS: dict[str, Callable[[Result], Coroutine[Any, Any, Result]]] = {
    "hello": scenario_hello,
    "writes": scenario_writes,
    "fanout": scenario_fanout,
    "many_keys": scenario_many_keys,
    "resume": scenario_resume,
    "idle": scenario_idle,
}

CFG: Result = {}


def main() -> None:
    CFG.update(json.loads(sys.argv[1]))
    raise_fd_limit()
    gc.collect()
    gc.freeze()
    gc.disable()  # the generator is measuring apparatus: no collector pauses in its timestamps
    result: Result = uvloop.run(SCENARIOS[CFG["scenario"]](CFG))
    result["generator_max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
