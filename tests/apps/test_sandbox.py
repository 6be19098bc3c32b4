"""The JS sandbox on its own: limits, failures, determinism and probes (no node)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from statebus.apps.sandbox import AppRunner, GuestError, HostDenied, Limits, Trap
from statebus.apps.sandbox.js import FIXED_NOW, JsSandbox, warm
from statebus.types import JSON

SOURCE = (Path(__file__).parent / "handlers.js").read_text()
FUNCTIONS = [
    "validateEntry",
    "spin",
    "grow",
    "deep",
    "nonJson",
    "huge",
    "readSecret",
    "probe",
    "clock",
    "busyHost",
]
PROBE = r"""
function probe() {
  const names = [];
  let o = globalThis;
  while (o) { names.push(...Object.getOwnPropertyNames(o)); o = Object.getPrototypeOf(o); }
  const found = {};
  for (const n of ["require", "process", "fetch", "XMLHttpRequest", "WebSocket", "Deno", "Bun", "std", "os",
                   "performance", "WebAssembly", "SharedArrayBuffer", "Atomics", "WeakRef",
                   "FinalizationRegistry", "console", "setTimeout", "__sb_host", "import"]) {
    found[n] = typeof globalThis[n];
  }
  let imported = "none";
  try { import("fs").then(() => { imported = "loaded"; }, (e) => { imported = "refused"; }); }
  catch (e) { imported = "threw"; }
  let evalRequire;
  try { evalRequire = typeof eval("typeof require === 'function' ? require('fs') : undefined"); }
  catch (e) { evalRequire = "threw"; }
  let fnProcess;
  try { fnProcess = Function("return typeof process")(); } catch (e) { fnProcess = "threw"; }
  return {names: names.filter((n) => !/^[a-z]/.test(n) || ["host", "escape", "unescape"].includes(n)).length,
          found, imported, evalRequire, fnProcess, hostKeys: Object.keys(host).sort()};
}
function clock(op) {
  const d = new Date();
  let undo;
  try { Date.now = () => 5; undo = "assigned"; } catch (e) { undo = "refused"; }
  try { Math.random = () => 0.5; } catch (e) {}
  return {now: Date.now(), date: d.getTime(), call: Date(), ctor: new (new Date(1).constructor)().getTime(),
          ctorNow: new Date(1).constructor.now(), r: [Math.random(), Math.random()], undo,
          perf: typeof performance};
}
"""


class NoHost:
    """A host API that refuses everything (and counts)."""

    def __init__(self) -> None:
        self.denied = 0

    def get(self, key: str) -> JSON:
        self.denied += 1
        raise HostDenied(f"host.get: {key} is outside the app's read grant")

    def put(self, key: str, value: JSON) -> None:
        raise HostDenied("host.put: only on_write handlers write")

    def list(self, prefix: str) -> list[str]:
        raise HostDenied("no")

    def log(self, message: str) -> None:
        pass


@pytest.fixture(scope="module")
def source() -> str:
    warm()
    return SOURCE + PROBE


def make(source: str, **limits: int | float) -> JsSandbox:
    return JsSandbox(source, FUNCTIONS, Limits(**limits))  # type: ignore[arg-type]


ENTRY = {"key": "gb/entries/1", "kind": "set", "value": {"text": "hi"}}


def test_a_valid_entry_passes_and_a_long_one_gets_its_reason(source: str) -> None:
    sb = make(source)
    try:
        assert sb.call("validateEntry", [ENTRY, None], 1, NoHost()) is True
        long = {**ENTRY, "value": {"text": "x" * 10_000}}
        assert (
            sb.call("validateEntry", [long, None], 1, NoHost())
            == "an entry is at most 280 characters, not 10000"
        )
        with pytest.raises(GuestError, match="asked to throw"):
            sb.call("validateEntry", [{**ENTRY, "value": {"text": "throw"}}, None], 1, NoHost())
        assert sb.call("validateEntry", [ENTRY, None], 1, NoHost()) is True  # a throw keeps the runtime
    finally:
        sb.close()


@pytest.mark.parametrize(
    ("function", "reason", "limits"),
    [
        ("spin", "ran past its time budget", {}),
        ("grow", "ran out of memory (cap 16 MiB)", {}),  # the exact loop quickjs's own limit let run
        ("deep", "recursed too deep", {}),
        ("nonJson", "returned a value that is not JSON", {}),
        ("huge", "returned 10485762 characters, over 1048576", {"memory_bytes": 64 << 20}),
    ],
)
def test_a_hostile_handler_is_stopped_with_its_reason(
    source: str, function: str, reason: str, limits: dict[str, int]
) -> None:
    sb = make(source, **limits)
    try:
        start = time.monotonic()
        with pytest.raises(Trap) as info:
            sb.call(function, [ENTRY], 1, NoHost())
        assert reason in str(info.value)
        assert time.monotonic() - start < 3.0
        if function == "grow":
            assert sb.memory_bytes() <= 16 << 20
    finally:
        sb.close()


def test_the_memory_cap_is_what_stops_the_runaway_loop(source: str) -> None:
    """Without the wasmtime store limit the same loop runs until the time budget: the cap is what stops it."""
    sb = make(source, memory_bytes=128 << 20, call_seconds=0.15)
    try:
        with pytest.raises(Trap) as info:
            sb.call("grow", [ENTRY], 1, NoHost())
        assert "time budget" in str(info.value) or "memory" in str(info.value)
        assert sb.memory_bytes() > 16 << 20  # it grew past 16 MiB when nothing capped it
    finally:
        sb.close()


def test_out_of_grant_host_calls_throw_inside_js(source: str) -> None:
    sb = make(source)
    host = NoHost()
    try:
        with pytest.raises(GuestError, match="outside the app's read grant"):
            sb.call("readSecret", [ENTRY], 1, host)
        assert host.denied == 1
    finally:
        sb.close()


class SlowHost(NoHost):
    """A host whose reads take 5 ms each (a node under load)."""

    def get(self, key: str) -> JSON:
        time.sleep(0.005)
        return None


def test_time_spent_in_host_calls_counts_against_the_budget(source: str) -> None:
    """quickjs polls its interrupt only every so many bytecodes; 1000 slow host calls would take 5 s."""
    sb = make(source)
    try:
        start = time.monotonic()
        with pytest.raises(Trap, match="ran past its time budget"):
            sb.call("busyHost", [ENTRY], 1, SlowHost())
        assert time.monotonic() - start < 1.0
        assert sb.call("validateEntry", [ENTRY, None], 1, NoHost()) is True
    finally:
        sb.close()


def test_probing_finds_nothing_usable(source: str) -> None:
    sb = make(source)
    try:
        out = sb.call("probe", [], 1, NoHost())
        assert isinstance(out, dict)
        assert set(out["found"].values()) == {"undefined"}, out["found"]
        assert out["imported"] in ("none", "refused", "threw")
        assert out["evalRequire"] == "undefined" and out["fnProcess"] == "undefined"
        assert out["hostKeys"] == ["get", "list", "log", "put"]
    finally:
        sb.close()


def test_clock_and_randomness_are_frozen_and_seeded(source: str) -> None:
    sb = make(source)
    try:
        a = sb.call("clock", [], 42, NoHost())
        b = sb.call("clock", [], 42, NoHost())
        c = sb.call("clock", [], 43, NoHost())
        assert isinstance(a, dict) and isinstance(c, dict)
        assert a == b  # the same seed, the same answers: every replica agrees
        assert a["now"] == a["date"] == a["ctor"] == a["ctorNow"] == FIXED_NOW
        assert a["undo"] == "refused" and a["perf"] == "undefined"
        assert a["r"][0] != a["r"][1] and c["r"] != a["r"]
    finally:
        sb.close()


@pytest.mark.anyio
async def test_the_runner_restarts_after_a_trap_and_counts(source: str) -> None:
    runner = AppRunner("gb", lambda: make(source), Limits())
    try:
        await runner.start()
        with pytest.raises(Trap):
            await runner.call("spin", [ENTRY], 1, NoHost())
        assert runner.state == "trapped" and "time budget" in (runner.trap_reason or "")
        assert await runner.call("validateEntry", [ENTRY, None], 1, NoHost()) is True
        assert runner.state == "running"
        assert (runner.stats.calls, runner.stats.traps, runner.stats.restarts) == (2, 1, 1)
    finally:
        runner.close()


def test_a_source_that_does_not_load_is_a_trap() -> None:
    warm()
    with pytest.raises(Trap, match="did not load"):
        JsSandbox("function (", ["f"], Limits())
    with pytest.raises(Trap, match="defines no function 'missing'"):
        JsSandbox("function f() {}", ["f", "missing"], Limits())
    with pytest.raises(Trap, match=r"time budget|did not load"):
        JsSandbox("while (true) {}", ["f"], Limits())


class Sleepy:
    """A Sandbox whose engine cannot be stopped (a call sleeps in the host): what the backstop is for."""

    def __init__(self, start: float = 0.0) -> None:
        time.sleep(start)

    def call(self, function: str, args: list[JSON], seed: int, host: object) -> JSON:
        time.sleep(float(function))
        return function

    def memory_bytes(self) -> int:
        return 0

    def close(self) -> None:
        pass


@pytest.mark.anyio
async def test_the_backstop_counts_from_the_call_not_the_start() -> None:
    limits = Limits(backstop_seconds=0.3)
    slow_start = AppRunner("slow", lambda: Sleepy(start=0.6), limits)  # a slow first compile
    try:
        assert await slow_start.call("0", [], 1, NoHost()) == "0"
        assert not slow_start.stuck
    finally:
        slow_start.close()
    runner = AppRunner("hang", Sleepy, limits)
    try:
        with pytest.raises(Trap, match=r"did not stop within 0\.3 s"):
            await runner.call("1.0", [], 1, NoHost())
        assert runner.stuck and runner.state == "trapped"
        t = time.monotonic()
        with pytest.raises(Trap, match="stuck in an earlier call"):
            await runner.call("0", [], 1, NoHost())
        assert time.monotonic() - t < 0.1  # refused at once, not queued behind the hung call
        await asyncio.sleep(1.0)  # the hung call comes back: the runner takes calls again
        assert not runner.stuck
        assert await runner.call("0", [], 1, NoHost()) == "0"
    finally:
        runner.close()
