"""Raw-wasm handlers: any core wasm module (C, Zig, Rust, WAT) speaking the JSON ABI, on wasmtime.

The ABI (v1, docs/apps.md):

* exports ``memory``, ``in_buf() -> i32``, ``out_buf() -> i32`` and one ``<handler>(in_len i32) -> i32``
  per handler function. The host writes ``{"args": [...], "seed": n}`` (UTF-8 JSON) at ``in_buf``;
  the handler writes its result (JSON, the same meaning as a JS handler's return value) at
  ``out_buf`` and returns its length, or a negative number to reject (the JS ``throw``).
* imports, all optional and all from module ``host``: ``get(key_ptr, key_len, out_ptr, out_cap) -> i32``
  and ``list(...)`` with the same shape (the JSON length; -1 refused, -2 ``out_cap`` too small),
  ``put(key_ptr, key_len, val_ptr, val_len) -> i32`` (0, or -1 refused) and ``log(ptr, len) -> i32``.

Rules:

1. A module importing anything else (WASI included) is refused when it is loaded.
2. Limits are wasmtime's own: fuel per call (deterministic), an epoch deadline (wall time, one
   ticker thread per process) and a store limit on linear memory; one instance, one memory, one table.
3. Host data is copied in and out of linear memory only within bounds the host checked.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import wasmtime as w

from statebus.apps.sandbox.base import GuestError, HostApi, HostDenied, Limits, Trap
from statebus.types import JSON

EPOCH_TICK = 0.01
"""Seconds per epoch tick: the granularity of the wall-time budget."""
MAX_KEY_BYTES = 1024
MAX_MODULE_BYTES = 8 << 20
"""Largest module (binary or WAT) a node compiles."""
_ALLOWED_IMPORTS = {"get", "list", "put", "log"}

_engine: w.Engine | None = None
_engine_lock = threading.Lock()


def engine() -> w.Engine:
    """The process's wasmtime engine for raw-wasm handlers (fuel, epochs, deterministic NaNs, no threads)."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                cfg = w.Config()
                cfg.consume_fuel = True
                cfg.epoch_interruption = True
                cfg.cranelift_nan_canonicalization = True
                cfg.wasm_threads = False
                cfg.wasm_relaxed_simd = False
                eng = w.Engine(cfg)
                threading.Thread(target=_tick, args=(eng,), name="statebus-wasm-epoch", daemon=True).start()
                _engine = eng
    return _engine


def _tick(eng: w.Engine) -> None:
    while True:
        time.sleep(EPOCH_TICK)
        eng.increment_epoch()


def compile_module(code: bytes | str) -> w.Module:
    """Compile a module (binary, or WAT text) and check its imports and exports (rule 1).

    Raises:
        Trap: it does not compile, imports something outside ``host``, or lacks the ABI's exports.
    """
    if len(code) > MAX_MODULE_BYTES:
        raise Trap(f"the wasm module is {len(code)} bytes, over {MAX_MODULE_BYTES}")
    try:
        module = w.Module(engine(), code)
    except w.WasmtimeError as exc:
        raise Trap(f"the wasm module does not compile: {str(exc).splitlines()[0][:200]}") from None
    for imp in module.imports:
        if imp.module != "host" or imp.name not in _ALLOWED_IMPORTS:
            raise Trap(
                f"the wasm module imports {imp.module}.{imp.name}: only host.get, host.list, host.put and "
                "host.log are offered (no WASI)"
            )
    names = {e.name for e in module.exports}
    missing = {"memory", "in_buf", "out_buf"} - names
    if missing:
        raise Trap(f"the wasm module does not export {sorted(missing)[0]!r}")
    return module


class WasmSandbox:
    """One app's raw-wasm instance (see the module rules)."""

    def __init__(self, module: w.Module, functions: Iterable[str], limits: Limits) -> None:
        self.limits = limits
        self._host: HostApi | None = None
        self.store = w.Store(engine())
        self.store.set_limits(memory_size=limits.memory_bytes, instances=1, tables=1, memories=1)
        self.store.set_fuel(limits.fuel)
        self.store.set_epoch_deadline(self._ticks())
        linker = w.Linker(engine())
        i32 = w.ValType.i32()
        wanted = {imp.name or "" for imp in module.imports}
        hooks: dict[str, tuple[int, Callable[..., int]]] = {
            "get": (4, self._get),
            "list": (4, self._list),
            "put": (4, self._put),
            "log": (2, self._log),
        }
        for name in sorted(wanted):
            arity, fn = hooks[name]
            linker.define_func("host", name, w.FuncType([i32] * arity, [i32]), fn, access_caller=True)
        try:
            instance = linker.instantiate(self.store, module)
        except (w.WasmtimeError, w.Trap) as exc:
            raise Trap(f"the wasm module did not instantiate: {str(exc).splitlines()[0][:200]}") from None
        self.exports = instance.exports(self.store)
        mem = self.exports["memory"]
        if not isinstance(mem, w.Memory):
            raise Trap("the wasm module's 'memory' export is not a memory")
        self.mem = mem
        for name in functions:
            if not isinstance(self.exports.get(name), w.Func):
                raise Trap(f"the wasm module exports no function {name!r}")
        self.in_buf = self._func("in_buf")(self.store)
        self.out_buf = self._func("out_buf")(self.store)

    def _ticks(self) -> int:
        return max(1, round(self.limits.call_seconds / EPOCH_TICK))

    def _func(self, name: str) -> w.Func:
        fn = self.exports[name]
        if not isinstance(fn, w.Func):
            raise Trap(f"the wasm module's {name!r} export is not a function")
        return fn

    def memory_bytes(self) -> int:
        return int(self.mem.data_len(self.store))

    def call(self, function: str, args: list[JSON], seed: int, host: HostApi) -> JSON:
        payload = json.dumps({"args": args, "seed": seed & 0x7FFFFFFF}, separators=(",", ":")).encode()
        if len(payload) > self.limits.max_input_bytes:
            raise Trap(f"the input is {len(payload)} bytes, over {self.limits.max_input_bytes}")
        self.store.set_fuel(self.limits.fuel)
        self.store.set_epoch_deadline(self._ticks())
        self._host = host
        try:
            self._write(self.in_buf, payload)
            n = self._func(function)(self.store, len(payload))
        except w.Trap as exc:
            raise Trap(_trap_text(exc, self.limits)) from None
        except w.WasmtimeError as exc:
            raise Trap(f"wasm error: {str(exc).splitlines()[0][:200]}") from None
        finally:
            self._host = None
        if not isinstance(n, int):
            raise Trap(f"{function} must return one i32")
        if n < 0:
            raise GuestError(f"{function} rejected it (code {n})")
        if n > self.limits.max_output_bytes:
            raise Trap(f"{function} returned {n} bytes, over {self.limits.max_output_bytes}")
        out = self._read(self.out_buf, n)
        try:
            return json.loads(out)  # type: ignore[no-any-return]
        except (UnicodeDecodeError, ValueError):
            raise Trap(f"{function} returned a value that is not JSON") from None

    def _write(self, ptr: int, data: bytes, caller: Any = None) -> None:
        size = self.mem.data_len(caller or self.store)
        if ptr < 0 or ptr + len(data) > size:
            raise Trap("a buffer lies outside the module's memory")
        self.mem.write(caller or self.store, data, ptr)

    def _read(self, ptr: int, n: int, caller: Any = None) -> bytes:
        size = self.mem.data_len(caller or self.store)
        if ptr < 0 or n < 0 or ptr + n > size:
            raise Trap("a buffer lies outside the module's memory")
        return bytes(self.mem.read(caller or self.store, ptr, ptr + n))

    def _text(self, caller: Any, ptr: int, n: int) -> str | None:
        if n > MAX_KEY_BYTES or n < 0:
            return None
        try:
            return self._read(ptr, n, caller).decode("utf-8")
        except (Trap, UnicodeDecodeError):
            return None

    def _answer(self, caller: Any, value: JSON, out: int, cap: int) -> int:
        data = json.dumps(value, separators=(",", ":")).encode()
        if len(data) > cap:
            return -2
        try:
            self._write(out, data, caller)
        except Trap:
            return -1
        return len(data)

    def _get(self, caller: Any, kp: int, kl: int, out: int, cap: int) -> int:
        key, host = self._text(caller, kp, kl), self._host
        if key is None or host is None:
            return -1
        try:
            return self._answer(caller, host.get(key), out, cap)
        except HostDenied:
            return -1

    def _list(self, caller: Any, kp: int, kl: int, out: int, cap: int) -> int:
        prefix, host = self._text(caller, kp, kl), self._host
        if prefix is None or host is None:
            return -1
        try:
            return self._answer(caller, list(host.list(prefix)), out, cap)
        except HostDenied:
            return -1

    def _put(self, caller: Any, kp: int, kl: int, vp: int, vl: int) -> int:
        key, host = self._text(caller, kp, kl), self._host
        if key is None or host is None or vl < 0 or vl > self.limits.max_output_bytes:
            return -1
        try:
            value = json.loads(self._read(vp, vl, caller))
            host.put(key, value)
        except (HostDenied, Trap, ValueError):
            return -1
        return 0

    def _log(self, caller: Any, p: int, n: int) -> int:
        host = self._host
        if host is None or n < 0 or n > 4096:
            return -1
        try:
            host.log(self._read(p, n, caller).decode("utf-8", "replace"))
        except (HostDenied, Trap):
            return -1
        return 0

    def close(self) -> None:
        self.store.close()


def _trap_text(exc: w.Trap, limits: Limits) -> str:
    text = str(exc)
    if exc.trap_code == w.TrapCode.OUT_OF_FUEL:
        return f"ran out of fuel ({limits.fuel} per call)"
    if exc.trap_code == w.TrapCode.INTERRUPT:
        return f"ran past its time budget ({limits.call_seconds:g} s)"
    if exc.trap_code == w.TrapCode.STACK_OVERFLOW:
        return "recursed too deep (wasm stack exhausted)"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return f"wasm trap: {(lines[-1] if lines else type(exc).__name__).strip()[:200]}"
