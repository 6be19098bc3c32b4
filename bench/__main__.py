"""The statebus benchmark suite: ``python -m bench`` (full, 3 runs) or ``python -m bench --quick``.

Every scenario gets a fresh server subprocess (a statebus node on a new data folder, or a reference
server with the same uvicorn options) and a load generator in its own process
(``python -m bench.loadgen``). Results: a table on stdout and ``bench/results/<timestamp>.json``
(every run, the medians, the targets, the machine). ``--profile SCENARIO`` also samples the node
with py-spy during that scenario (collapsed stacks + a top-functions summary in bench/results/).

Scenarios: ``hello`` (raw-ASGI hello world, the reference), ``writes`` (durable PUTs, the node's
default ``power`` durability: fsync before each answer), ``writes_process`` (the same in ``process``
durability: no fsync per commit), ``writes_encrypted`` (``writes`` on a data folder encrypted at
rest), ``hello_put`` (the writes' PUTs answered by the hello world: what
uvicorn alone costs for them), ``fanout_20``,
``fanout_100``, ``pubsub_ref_100`` (Starlette + sse-starlette, the same fan-out), ``many_keys``,
``resume``, ``idle``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procs import ServerProcess, prioritised, raise_fd_limit
from bench.profile import summarize
from bench.report import check_targets, machine, medians, table, targets_text

RESULTS = Path(__file__).resolve().parent / "results"
Result = dict[str, Any]

FULL_WRITES: Result = {"scenario": "writes", "server": "node", "conns": 32, "duration": 10, "warmup": 2}

FULL: dict[str, Result] = {
    "hello": {"scenario": "hello", "server": "hello", "conns": 32, "duration": 10, "warmup": 2},
    "writes": {"scenario": "writes", "server": "node", "conns": 32, "duration": 10, "warmup": 2},
    "writes_process": {
        "scenario": "writes",
        "server": "node",
        "durability": "process",
        "conns": 32,
        "duration": 10,
        "warmup": 2,
    },
    "writes_encrypted": {**FULL_WRITES, "encrypt": True},
    "hello_put": {"scenario": "writes", "server": "hello", "conns": 32, "duration": 10, "warmup": 2},
    "fanout_20": {
        "scenario": "fanout",
        "server": "node",
        "subscribers": 1000,
        "rate": 20,
        "duration": 10,
        "pub_conns": 4,
    },
    "fanout_100": {
        "scenario": "fanout",
        "server": "node",
        "subscribers": 1000,
        "rate": 100,
        "duration": 10,
        "pub_conns": 4,
    },
    "pubsub_ref_100": {
        "scenario": "fanout",
        "server": "pubsub",
        "target": "pubsub",
        "subscribers": 1000,
        "rate": 100,
        "duration": 10,
        "pub_conns": 4,
    },
    "many_keys": {
        "scenario": "many_keys",
        "server": "node",
        "subscribers": 1000,
        "rate": 1000,
        "duration": 10,
    },
    # A resume further back than the subscriber buffer (the node's default: 1000) is answered with a
    # reset and a fresh snapshot (statebus/http/subscribe.py), not a replay: the node of this
    # scenario buffers 20,000, so the 10,000 ops are replayed, which is what it measures.
    "resume": {"scenario": "resume", "server": "node", "ops": 10_000, "keys": 100, "buffer": 20_000},
    "idle": {"scenario": "idle", "server": "node", "subscribers": 10_000},
}

QUICK: dict[str, Result] = {
    "hello": {**FULL["hello"], "duration": 1.0, "warmup": 0.3},
    "writes": {**FULL["writes"], "duration": 1.0, "warmup": 0.3},
    "writes_process": {**FULL["writes_process"], "duration": 1.0, "warmup": 0.3},
    "writes_encrypted": {**FULL["writes_encrypted"], "duration": 1.0, "warmup": 0.3},
    "hello_put": {**FULL["hello_put"], "duration": 1.0, "warmup": 0.3},
    "fanout_20": {**FULL["fanout_20"], "subscribers": 50, "duration": 1.0, "drain": 2.0},
    "fanout_100": {**FULL["fanout_100"], "subscribers": 50, "duration": 1.0, "drain": 2.0},
    "pubsub_ref_100": {**FULL["pubsub_ref_100"], "subscribers": 50, "duration": 1.0, "drain": 2.0},
    "many_keys": {**FULL["many_keys"], "subscribers": 50, "rate": 200, "duration": 1.0, "drain": 2.0},
    "resume": {**FULL["resume"], "ops": 500, "keys": 10},
    "idle": {**FULL["idle"], "subscribers": 100},
}


def start_server(
    kind: str,
    data: Path,
    nice: int,
    durability: str = "power",
    encrypt: bool = False,
    buffer: int | None = None,
) -> ServerProcess:
    if kind == "node":
        extra = ["--encrypt"] if encrypt else []
        extra += [] if buffer is None else ["--buffer", str(buffer)]
        args = ["--data", str(data), "--durability", durability, *extra]
        return ServerProcess("bench.serve_node", args, nice=nice)
    return ServerProcess("bench.reference", [kind], nice=nice)


def read_token(data: Path) -> str:
    from statebus.identity import keystore

    return keystore.load_owner_token(data)


def run_one(name: str, cfg: Result, *, profile_dir: Path | None, timeout: float, nice: int = 0) -> Result:
    """Start a fresh server, run one scenario's generator against it, stop the server."""
    with tempfile.TemporaryDirectory(prefix="statebus-bench-") as tmp:
        data = Path(tmp) / "node"
        durability = cfg.get("durability", "power")
        encrypt = cfg.get("encrypt", False)
        with start_server(cfg["server"], data, nice, durability, encrypt, cfg.get("buffer")) as server:
            env = {**os.environ, "PYTHONPATH": str(RESULTS.parent.parent)}
            if cfg["server"] == "node":
                deadline = time.monotonic() + 20
                while True:
                    try:
                        env["STATEBUS_BENCH_TOKEN"] = read_token(data)
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
            spy = None
            if profile_dir is not None:
                raw = profile_dir / f"{name}.collapsed.txt"
                spy = subprocess.Popen(
                    [
                        str(Path(sys.executable).with_name("py-spy")),
                        "record",
                        "--pid",
                        str(server.pid),
                        "--rate",
                        "250",
                        "--format",
                        "raw",
                        "--nonblocking",
                        "--gil",
                        "-o",
                        str(raw),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            gen_cfg = {**cfg, "port": server.port, "server_pid": server.pid}
            try:
                out = subprocess.run(
                    [sys.executable, "-m", "bench.loadgen", json.dumps(gen_cfg)],
                    capture_output=True,
                    env=env,
                    cwd=RESULTS.parent.parent,
                    timeout=timeout,
                    check=False,
                    preexec_fn=prioritised(nice),
                )
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    try:
                        spy.wait(30)
                    except subprocess.TimeoutExpired:
                        spy.kill()
                        spy.wait()
            if out.returncode != 0:
                sys.stderr.write(out.stderr.decode(errors="replace")[-3000:])
                return {"error": f"generator exit status {out.returncode}"}
            result: Result = json.loads(out.stdout.decode().strip().splitlines()[-1])
            if profile_dir is not None:
                raw = profile_dir / f"{name}.collapsed.txt"
                if raw.exists():
                    (profile_dir / f"{name}.top.txt").write_text(summarize(raw.read_text()))
            return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds per scenario")
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per scenario (default 3; 1 with --quick)"
    )
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results JSON")
    parser.add_argument("--profile", default="", help="comma-separated scenarios to sample with py-spy")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling priority of servers and generator (negative needs root; for shared machines)",
    )
    args = parser.parse_args(argv)
    raise_fd_limit()
    plan = QUICK if args.quick else FULL
    names = [n for n in args.only.split(",") if n] or list(plan)
    unknown = [n for n in names if n not in plan]
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)} (known: {', '.join(plan)})")
    runs = args.runs or (1 if args.quick else 3)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    args.out.mkdir(parents=True, exist_ok=True)
    profiles = {n for n in args.profile.split(",") if n}
    profile_dir = args.out / f"profile-{stamp}" if profiles else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[Result]] = {n: [] for n in names}
    for r in range(runs):
        for name in names:
            cfg = plan[name]
            timeout = 120 if args.quick else 600
            pdir = profile_dir if name in profiles and r == 0 else None
            sys.stderr.write(f"run {r + 1}/{runs}: {name} ...\n")
            res = run_one(name, cfg, profile_dir=pdir, timeout=timeout, nice=args.nice)
            results[name].append(res)
            sys.stderr.write(f"  {json.dumps({k: v for k, v in res.items() if not isinstance(v, dict)})}\n")
    summary = {n: medians([r for r in rs if "error" not in r]) for n, rs in results.items()}
    checks = check_targets(summary)
    doc = {
        "timestamp": stamp,
        "quick": args.quick,
        "runs": runs,
        "nice": args.nice,
        "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "config": {n: plan[n] for n in names},
        "results": results,
        "summary": summary,
        "targets": checks,
    }
    path = args.out / f"{stamp}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(summary, runs))
    print("targets (meaningful only for a full run):")
    print(targets_text(checks))
    print(f"results: {path}")
    failed = [n for n, rs in results.items() if any("error" in r for r in rs)]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
