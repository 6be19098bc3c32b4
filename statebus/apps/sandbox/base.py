"""What every sandbox engine shares: its limits, its failures, the host API seam and the per-app runner.

Rules (see the package docstring for the sandbox's own):

1. :class:`Trap` is a failure of the guest (time, memory, a wasm trap, a result not JSON or over its
   cap): the runner restarts the runtime. :class:`GuestError` is the handler throwing: a verdict
   (the handler said no), the runtime is kept.
2. :class:`HostApi` methods run on the app's thread; they raise :class:`HostDenied` for anything
   outside the grants or the per-call budget, and the engine turns that into a JS exception.
3. A runner whose call has run past its backstop (a guest the engine could not stop) is marked
   stuck: later calls fail at once, the node keeps serving; if that call ever returns, the runtime
   is dropped and the runner takes calls again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from statebus.types import JSON

log = logging.getLogger("statebus.apps")

COST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
"""Upper bounds (seconds) of the call-cost histogram on /metrics."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The budgets of one app (rule 3 of the package)."""

    memory_bytes: int = 16 << 20
    """Linear memory of the app's wasm instance (a wasmtime store limit)."""
    call_seconds: float = 0.1
    """Wall time one call may take (interrupt / epoch deadline)."""
    fuel: int = 50_000_000
    """Raw-wasm path only: fuel per call (deterministic; about 5–10 ms of tight loop here, idle)."""
    max_input_bytes: int = 2 << 20
    max_output_bytes: int = 1 << 20
    max_host_calls: int = 1000
    max_host_read_bytes: int = 4 << 20
    log_per_second: float = 5.0
    log_burst: int = 20
    max_log_chars: int = 300
    stack_bytes: int = 512 << 10
    backstop_seconds: float = 5.0
    """A call still running after this long marks the runner stuck (rule 3)."""


class Trap(Exception):
    """The guest failed (rule 1); the message says how, never with host secrets."""


class GuestError(Exception):
    """The handler threw: its message is the reason (rule 1)."""


class HostDenied(Exception):
    """A host call outside the grants or over the per-call budget (rule 2)."""


class HostApi(Protocol):
    """What a handler may ask of the node during one call (rule 2). Keys are relative paths in the
    user's namespace, or ``/<pubkey>/…`` for another namespace."""

    def get(self, key: str) -> JSON: ...

    def put(self, key: str, value: JSON) -> None: ...

    def list(self, prefix: str) -> list[str]: ...

    def log(self, message: str) -> None: ...


class Sandbox(Protocol):
    """One runtime of one app: made, called and closed on the app's thread only."""

    def call(self, function: str, args: list[JSON], seed: int, host: HostApi) -> JSON:
        """Run ``function(*args)``; raises :class:`Trap` or :class:`GuestError`."""

    def memory_bytes(self) -> int:
        """The linear memory the runtime holds now."""

    def close(self) -> None: ...


SandboxFactory = Callable[[], Sandbox]


@dataclass
class RunnerStats:
    calls: int = 0
    traps: int = 0
    rejected: int = 0
    """Writes refused: the handler threw (counted here) or gave a refusing verdict (counted by the host)."""
    denied: int = 0
    """Host calls refused (outside the grants or over budget)."""
    restarts: int = 0
    total_cost: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(COST_BUCKETS) + 1))

    def observe(self, seconds: float) -> None:
        self.calls += 1
        self.total_cost += seconds
        for i, bound in enumerate(COST_BUCKETS):
            if seconds <= bound:
                self.buckets[i] += 1
                return
        self.buckets[-1] += 1


class AppRunner:
    """The runtime of one app on a thread of its own (package rules 1 and 2)."""

    def __init__(self, name: str, factory: SandboxFactory, limits: Limits) -> None:
        self.name = name
        self.limits = limits
        self._factory = factory
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"statebus-app-{name}")
        self._sandbox: Sandbox | None = None
        self._lock = threading.Lock()
        self.stats = RunnerStats()
        self.state = "stopped"
        self.trap_reason: str | None = None
        self.stuck = False
        self.memory = 0
        self._closed = False
        self._running_since: float | None = None

    def __repr__(self) -> str:
        return f"AppRunner({self.name!r}, {self.state})"

    async def start(self) -> None:
        """Make the runtime now (on the app's thread); raises :class:`Trap` if the source does not load."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self._ensure)

    def start_soon(self) -> None:
        """Make the runtime in the app's thread now, without waiting (a source that fails to load
        leaves the runner trapped with its reason; calls then fail with it)."""
        self._pool.submit(self._start_quietly)

    def _start_quietly(self) -> None:
        try:
            self._ensure()
        except Trap:
            pass

    async def call(self, function: str, args: list[JSON], seed: int, host: HostApi) -> JSON:
        """Run one handler call on the app's thread, never on the event loop. The backstop (rule 3)
        counts from when the call starts running, not while it waits for the runtime to be made."""
        if self.stuck:
            raise Trap(f"app {self.name} is stuck in an earlier call: {self.trap_reason}")
        fut = asyncio.wrap_future(self._pool.submit(self._call, function, args, seed, host))
        backstop = self.limits.backstop_seconds
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(fut), backstop)
            except TimeoutError:
                since = self._running_since
                if since is None or time.monotonic() - since < backstop:
                    continue  # still queued, or the runtime is still being made
            self.stuck = True
            self.state = "trapped"
            self.trap_reason = f"a call to {function} did not stop within {backstop:g} s"
            log.error("app %s: %s", self.name, self.trap_reason)
            raise Trap(self.trap_reason)

    def _ensure(self) -> Sandbox:
        if self._sandbox is None:
            try:
                self._sandbox = self._factory()
            except Trap as exc:
                self.state, self.trap_reason = "trapped", str(exc)
                raise
            self.state = "running"
            self.memory = self._sandbox.memory_bytes()
        return self._sandbox

    def _call(self, function: str, args: list[JSON], seed: int, host: HostApi) -> JSON:
        if self._closed:
            raise Trap(f"app {self.name} is stopped")
        sandbox = self._ensure()
        start = time.perf_counter()
        self._running_since = time.monotonic()
        try:
            return sandbox.call(function, args, seed, host)
        except GuestError:
            self.stats.rejected += 1
            raise
        except Trap as exc:
            self.stats.traps += 1
            self.state, self.trap_reason = "trapped", f"{function}: {exc}"
            log.warning("app %s trapped in %s: %s", self.name, function, exc)
            self._drop()
            raise
        finally:
            self._running_since = None
            self.stats.observe(time.perf_counter() - start)
            if self.stuck:  # the call the runner gave up on came back: start afresh
                self.stuck = False
                self._drop()
            if self._sandbox is not None:
                self.memory = self._sandbox.memory_bytes()

    def _drop(self, restart: bool = True) -> None:
        """Throw the trapped runtime away; the next call makes a fresh one (package rule 2)."""
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            self.stats.restarts += restart
            try:
                sandbox.close()
            except Exception:  # a broken runtime may fail to close; it is dropped all the same
                log.debug("app %s: closing a trapped runtime failed", self.name, exc_info=True)

    def close(self) -> None:
        """Stop taking calls; the runtime is closed on its thread once the call running now (if
        any) ends. Never waits: a call may be waiting for the event loop that calls this."""
        self.state = "stopped"
        self._closed = True
        if not self.stuck:
            self._pool.submit(self._drop, False)
        self._pool.shutdown(wait=False)
