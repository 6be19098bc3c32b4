"""Summaries of benchmark runs: medians, ratios to the reference, targets, the machine, the table."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

Result = dict[str, Any]

LIBRARIES = ("uvicorn", "starlette", "uvloop", "httptools", "sse-starlette", "statebus-server")


def machine() -> Result:
    """CPU, memory, kernel, Python and library versions of this machine."""
    info: Result = {
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "libraries": {},
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in lscpu.splitlines():
            name, _, value = line.partition(":")
            if name.strip() in ("Model name", "Thread(s) per core", "Core(s) per socket", "CPU MHz"):
                info[name.strip()] = value.strip()
    except OSError:
        pass
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                info["memory_mb"] = int(line.split()[1]) // 1024
    for lib in LIBRARIES:
        try:
            info["libraries"][lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            info["libraries"][lib] = None
    return info


def flatten(result: Result, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested result, as ``a.b`` → value."""
    out: dict[str, float] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def medians(runs: list[Result]) -> dict[str, float]:
    """The median of every numeric field over the runs of one scenario."""
    flat = [flatten(r) for r in runs]
    keys = [k for k in flat[0] if all(k in f for f in flat)] if flat else []
    return {k: round(statistics.median(f[k] for f in flat), 4) for k in keys}


Check = tuple[str, str, Callable[[dict[str, dict[str, float]]], float | None], str, float]

TARGETS: list[Check] = [
    ("durable writes / hello-world rate", "writes", lambda s: _ratio(s, "writes", "rate"), ">=", 0.7),
    ("power-durable writes / hello (issue 16)", "writes", lambda s: _ratio(s, "writes", "rate"), ">=", 0.25),
    (
        "process-durable writes / hello (issue 16)",
        "writes_process",
        lambda s: _ratio(s, "writes_process", "rate"),
        ">=",
        0.5,
    ),
    (
        "fan-out deliveries/s, 1000 subs x 100 msg/s",
        "fanout_100",
        lambda s: _get(s, "fanout_100", "deliveries_per_s"),
        ">=",
        60_000,
    ),
    ("fan-out missing (1000 x 100 msg/s)", "fanout_100", lambda s: _get(s, "fanout_100", "missing"), "<=", 0),
    (
        "fan-out duplicated (1000 x 100 msg/s)",
        "fanout_100",
        lambda s: _get(s, "fanout_100", "duplicated"),
        "<=",
        0,
    ),
    ("p99 ms, 1000 subs x 20 msg/s", "fanout_20", lambda s: _get(s, "fanout_20", "latency.p99_ms"), "<=", 30),
    ("bytes per idle subscriber", "idle", lambda s: _get(s, "idle", "bytes_per_subscriber"), "<=", 20 * 1024),
    ("resume catch-up seconds", "resume", lambda s: _get(s, "resume", "catch_up_s"), "<", 1.0),
    # a catch-up is only one if it replayed every op: a reset (a fresh snapshot instead) is not met
    ("resume missing ops", "resume", lambda s: _get(s, "resume", "missing"), "<=", 0),
    ("resume duplicated ops", "resume", lambda s: _get(s, "resume", "duplicated"), "<=", 0),
    ("resume resets", "resume", lambda s: _get(s, "resume", "resets"), "<=", 0),
]


def _get(summary: dict[str, dict[str, float]], scenario: str, field: str) -> float | None:
    return summary.get(scenario, {}).get(field)


def _ratio(summary: dict[str, dict[str, float]], scenario: str, field: str) -> float | None:
    value, ref = _get(summary, scenario, field), _get(summary, "hello", "rate")
    return round(value / ref, 3) if value is not None and ref else None


def check_targets(summary: dict[str, dict[str, float]]) -> list[Result]:
    out: list[Result] = []
    for label, scenario, get, op, bound in TARGETS:
        value = get(summary)
        ok = (
            None
            if value is None
            else (value >= bound if op == ">=" else value <= bound if op == "<=" else value < bound)
        )
        out.append(
            {"target": label, "scenario": scenario, "value": value, "bound": f"{op} {bound:g}", "met": ok}
        )
    return out


ROWS: list[tuple[str, str, str]] = [
    ("hello", "rate", "req/s"),
    ("writes", "rate", "writes/s"),
    ("writes", "latency.p50_ms", "p50 ms"),
    ("writes", "latency.p99_ms", "p99 ms"),
    ("writes_process", "rate", "writes/s"),
    ("writes_process", "latency.p50_ms", "p50 ms"),
    ("writes_process", "latency.p99_ms", "p99 ms"),
    ("writes_encrypted", "rate", "writes/s"),
    ("writes_encrypted", "latency.p50_ms", "p50 ms"),
    ("writes_encrypted", "latency.p99_ms", "p99 ms"),
    ("hello_put", "rate", "req/s"),
    ("fanout_20", "deliveries_per_s", "deliv/s"),
    ("fanout_20", "latency.p50_ms", "p50 ms"),
    ("fanout_20", "latency.p99_ms", "p99 ms"),
    ("fanout_20", "missing", "missing"),
    ("fanout_20", "duplicated", "dup"),
    ("fanout_100", "deliveries_per_s", "deliv/s"),
    ("fanout_100", "latency.p50_ms", "p50 ms"),
    ("fanout_100", "latency.p99_ms", "p99 ms"),
    ("fanout_100", "missing", "missing"),
    ("fanout_100", "duplicated", "dup"),
    ("pubsub_ref_100", "deliveries_per_s", "deliv/s"),
    ("pubsub_ref_100", "latency.p99_ms", "p99 ms"),
    ("pubsub_ref_100", "missing", "missing"),
    ("many_keys", "deliveries_per_s", "deliv/s"),
    ("many_keys", "latency.p50_ms", "p50 ms"),
    ("many_keys", "latency.p99_ms", "p99 ms"),
    ("many_keys", "missing", "missing"),
    ("resume", "catch_up_s", "seconds"),
    ("resume", "events", "events"),
    ("resume", "resets", "resets"),
    ("resume", "missing", "missing"),
    ("idle", "bytes_per_subscriber", "bytes/sub"),
    ("idle", "write_reached", "reached"),
]


def table(summary: dict[str, dict[str, float]], runs: int) -> str:
    """A plain-text table of the medians (with CPU seconds of server and generator)."""
    hello = _get(summary, "hello", "rate")
    lines = [
        f"{'scenario':<16} {'metric':<10} {'median of ' + str(runs):>14} {'/hello':>8} {'srv cpu':>8} "
        f"{'gen cpu':>8} {'other':>8}"
    ]
    for scenario, field, label in ROWS:
        if scenario not in summary or field not in summary[scenario]:
            continue
        s = summary[scenario]
        value = s[field]
        ratio = f"{value / hello:.2f}" if hello and field == "rate" else ""
        cpu = f"{s.get('server_cpu_util', 0):.2f}" if "server_cpu_util" in s else ""
        gen = f"{s.get('generator_cpu_util', 0):.2f}" if "generator_cpu_util" in s else ""
        other = f"{s.get('other_cpu_util', 0):.2f}" if "other_cpu_util" in s else ""
        lines.append(f"{scenario:<16} {label:<10} {value:>14,.2f} {ratio:>8} {cpu:>8} {gen:>8} {other:>8}")
    lines.append(
        "(cpu columns: CPU seconds per wall second over the measured window, 1.00 = one core busy; "
        "'other' = every other process on the machine)"
    )
    return "\n".join(lines)


def targets_text(checks: list[Result]) -> str:
    lines = []
    for c in checks:
        state = "n/a" if c["met"] is None else "MET" if c["met"] else "NOT MET"
        lines.append(f"  {state:<8} {c['target']}: {c['value']} (target {c['bound']})")
    return "\n".join(lines)
