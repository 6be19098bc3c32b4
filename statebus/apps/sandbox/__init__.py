"""The sandbox that runs an app's handlers: JavaScript on quickjs-rs (quickjs-ng compiled to wasm,
run by wasmtime) or a raw-wasm module speaking the same JSON ABI, with no file system, network,
clock or randomness of its own, and only the host API an app's grants allow.

    runner = AppRunner(name, factory, limits, loop)   # one per app: one thread, one runtime
    result = await runner.call("validateEntry", [op, current], seed=b"...", host=host)

Rules:

1. One runtime per app (one trust domain), created, used and closed on the app's own thread (a
   quickjs context must stay on one thread); calls never run on the event loop.
2. After any trap (time budget, memory cap, wasm trap, a result over its cap, not JSON) the runtime
   is thrown away and a fresh one made before the next call: a trapped guest's state is never reused.
3. Every call is bounded: wall time per call, linear memory per app (a wasmtime store limit), the
   result's size, the host calls it makes and the bytes they return.
4. Determinism: the same handler, inputs and seed give the same result on every replica. The seed
   comes from the op's timestamp-free fields; ``Date`` and ``Math.random`` are replaced and frozen.
"""

from statebus.apps.sandbox.base import (
    AppRunner,
    GuestError,
    HostApi,
    HostDenied,
    Limits,
    Sandbox,
    SandboxFactory,
    Trap,
)

__all__ = ["AppRunner", "GuestError", "HostApi", "HostDenied", "Limits", "Sandbox", "SandboxFactory", "Trap"]
