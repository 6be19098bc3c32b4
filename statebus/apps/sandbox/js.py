"""JavaScript handlers on quickjs-rs: quickjs-ng compiled to wasm32-wasip1, run by wasmtime.

    warm()                                  # compile the engine module once per process (about 1 s)
    sandbox = JsSandbox(source, ["validateEntry"], Limits())
    sandbox.call("validateEntry", [op, current], seed, host)

Rules:

1. The memory cap is a wasmtime store limit on the instance's linear memory, set right after it is
   made; quickjs's own ``memory_limit`` is not relied on (it did not stop a runaway allocation).
2. Before the app's source runs, the prelude removes ``performance``, ``WebAssembly``,
   ``SharedArrayBuffer``, ``Atomics``, ``WeakRef`` and ``FinalizationRegistry``; replaces ``Date``
   (``Date.now()`` and ``new Date()`` are the fixed :data:`FIXED_NOW`) and ``Math.random`` (a PRNG
   seeded per call from the op); and freezes all of them. The host API is the frozen global ``host``.
3. The time budget is wall time from the call's start. quickjs checks it every so many bytecodes; a
   host call checks it too (a handler that spends its time in host calls is stopped as well).
4. Data crosses the boundary as JSON text only (no native numbers: quickjs marshalling of large ints
   is not trusted). The guest's answer is one string: ``R`` + JSON, or a one-letter failure code.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import Any

import quickjs_rs
import wasmtime
from quickjs_rs import errors as qjs_errors

from statebus.apps.sandbox.base import GuestError, HostApi, HostDenied, Limits, Trap
from statebus.types import JSON

FIXED_NOW = 0
"""What ``Date.now()`` answers inside a handler (ms): time comes from the data, never the clock."""

_PRELUDE = r"""
(function () {
  "use strict";
  const G = globalThis;
  const hostCall = G.__sb_host;
  const parse = JSON.parse, stringify = JSON.stringify, Str = String, IE = G.InternalError;
  const def = (o, k, v) =>
    Object.defineProperty(o, k, {value: v, writable: false, enumerable: false, configurable: false});
  delete G.__sb_host;
  const gone = ["performance", "WebAssembly", "SharedArrayBuffer", "Atomics",
                "WeakRef", "FinalizationRegistry"];
  for (const name of gone) {
    try { delete G[name]; } catch (e) {}
    if (name in G) def(G, name, undefined);
  }
  let seed = 0;
  def(Math, "random", function random() {
    seed = (seed + 0x6D2B79F5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  });
  Object.freeze(Math);
  const RealDate = G.Date;
  const FIXED = __FIXED__;
  const FrozenDate = function Date(...args) {
    if (!new.target) return new RealDate(FIXED).toString();
    return args.length === 0 ? new RealDate(FIXED) : new RealDate(...args);
  };
  FrozenDate.prototype = RealDate.prototype;
  const now = function now() { return FIXED; };
  def(FrozenDate, "now", now);
  def(FrozenDate, "parse", RealDate.parse);
  def(FrozenDate, "UTC", RealDate.UTC);
  def(RealDate, "now", now);
  def(RealDate.prototype, "constructor", FrozenDate);
  Object.freeze(FrozenDate);
  Object.freeze(RealDate);
  def(G, "Date", FrozenDate);
  const ask = (op, args) => {
    const r = hostCall(op, stringify(args));
    if (r[0] === "X") for (;;) {}  // past the time budget: spin into quickjs's (uncatchable) interrupt
    if (r[0] !== "R") throw new Error(r.slice(1));
    return parse(r.slice(1));
  };
  def(G, "host", Object.freeze({
    get: function get(key) { return ask("get", [key]); },
    put: function put(key, value) { ask("put", [key, value === undefined ? null : value]); },
    list: function list(prefix) { return ask("list", [prefix]); },
    log: function log(message) { ask("log", [Str(message)]); },
  }));
  let fns = null;
  def(G, "__sb_bind", function (names) {
    if (fns !== null) return "[]";
    fns = Object.create(null);
    for (const n of names) if (typeof G[n] === "function") fns[n] = G[n];
    return stringify(Object.keys(fns));
  });
  def(G, "__sb_call", function (name, argsJson, s, maxOut) {
    seed = s | 0;
    const f = fns !== null ? fns[name] : undefined;
    if (f === undefined) return "M" + name;
    let out;
    try {
      out = f.apply(undefined, parse(argsJson));
    } catch (e) {
      if (IE !== undefined && e instanceof IE) throw e;
      if (e instanceof RangeError && /stack/i.test(e.message)) return "S" + e.message;
      let msg;
      try { msg = (e !== null && typeof e === "object" && "message" in e) ? Str(e.message) : Str(e); }
      catch (e2) { msg = "an exception"; }
      return "T" + msg.slice(0, 300);
    }
    if (out === undefined) out = null;
    let text;
    try { text = stringify(out); } catch (e) {
      if (IE !== undefined && e instanceof IE) throw e;
      return "N" + Str(e && e.message).slice(0, 200);
    }
    if (text === undefined) return "N" + typeof out;
    if (text.length > maxOut) return "B" + text.length;
    return "R" + text;
  });
})();
""".replace("__FIXED__", str(FIXED_NOW))

_warm_lock = threading.Lock()
_warmed = False


def warm() -> None:
    """Compile the quickjs wasm module once for this process (about 1 s here); later runtimes take
    about 1 ms. Safe to call from any thread, any number of times."""
    global _warmed
    if _warmed:
        return
    with _warm_lock:
        if not _warmed:
            rt = quickjs_rs.Runtime(memory_limit=None)
            try:
                rt.new_context(timeout=5.0).eval("0")
            finally:
                rt.close()
            _warmed = True


def _engine_store(ctx: Any) -> tuple[wasmtime.Store, wasmtime.Memory]:
    """The wasmtime store and memory behind a quickjs-rs 0.2.6 context (one wasm instance each)."""
    inst = ctx._engine_ctx._inst
    return inst.store, inst.mem


class JsSandbox:
    """One app's JavaScript runtime (see the module rules).

    Raises:
        Trap: the source does not load (a syntax error, it throws, or it breaks a limit while loading).
    """

    def __init__(self, source: str, functions: Iterable[str], limits: Limits) -> None:
        self.limits = limits
        self._host: HostApi | None = None
        self._overtime = False
        self._deadline = 0.0
        self._rt = quickjs_rs.Runtime(memory_limit=None, stack_limit=limits.stack_bytes)
        try:
            self._ctx = self._rt.new_context(timeout=limits.call_seconds)
            self._store, self._mem = _engine_store(self._ctx)
            self._store.set_limits(memory_size=limits.memory_bytes)
            self._ctx.register("__sb_host", self._host_call, is_async=False)
            self._ctx.eval(_PRELUDE)
            self._ctx.eval(source, filename="handlers.js")
            bound = json.loads(self._ctx.eval(f"__sb_bind({json.dumps(sorted(set(functions)))})"))
        except qjs_errors.QuickJSError as exc:
            self._rt.close()
            raise Trap(f"the handlers source did not load: {_describe(exc)}") from None
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            self._rt.close()
            raise Trap(f"the handlers source did not load: {_trap_text(exc)}") from None
        missing = sorted(set(functions) - set(bound))
        if missing:
            self._rt.close()
            raise Trap(f"the handlers source defines no function {missing[0]!r}")

    def memory_bytes(self) -> int:
        return int(self._mem.data_len(self._store))

    def call(self, function: str, args: list[JSON], seed: int, host: HostApi) -> JSON:
        payload = json.dumps(args, separators=(",", ":"), ensure_ascii=False)
        if len(payload) > self.limits.max_input_bytes:
            raise Trap(f"the input is {len(payload)} bytes, over {self.limits.max_input_bytes}")
        seed &= 0x7FFFFFFF
        code = (
            f"__sb_call({json.dumps(function)},{json.dumps(payload)},{seed},{self.limits.max_output_bytes})"
        )
        self._host = host
        self._overtime = False
        self._deadline = time.monotonic() + self.limits.call_seconds
        try:
            answer = self._ctx.eval(code)
        except qjs_errors.TimeoutError:
            raise Trap(f"ran past its time budget ({self.limits.call_seconds:g} s)") from None
        except qjs_errors.MemoryLimitError:
            raise Trap(f"ran out of memory (cap {self.limits.memory_bytes >> 20} MiB)") from None
        except qjs_errors.QuickJSError as exc:
            raise Trap(_describe(exc)) from None
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise Trap(_trap_text(exc)) from None
        finally:
            self._host = None
        if self._overtime:
            raise Trap(f"ran past its time budget ({self.limits.call_seconds:g} s) in host calls")
        if not isinstance(answer, str) or not answer:
            raise Trap("the guest gave no answer")
        tag, rest = answer[0], answer[1:]
        if tag == "R":
            return json.loads(rest)  # type: ignore[no-any-return]
        if tag == "T":
            raise GuestError(rest)
        if tag == "N":
            raise Trap(f"{function} returned a value that is not JSON ({rest})")
        if tag == "B":
            raise Trap(f"{function} returned {rest} characters, over {self.limits.max_output_bytes}")
        if tag == "S":
            raise Trap(f"{function} recursed too deep ({rest})")
        if tag == "M":
            raise Trap(f"no handler function {rest!r}")
        raise Trap("the guest gave an answer out of protocol")

    def _host_call(self, op: str, args_json: str) -> str:
        """The one host function (module rule 3): ``op`` with JSON ``args`` → ``R<json>`` or ``E<why>``."""
        host = self._host
        if host is None:
            return "Ehost calls are only possible during a handler call"
        if self._overtime or time.monotonic() > self._deadline:
            # quickjs polls its interrupt only every so many bytecodes: host calls check the clock too
            self._overtime = True
            return "X"
        try:
            args = json.loads(args_json)
            if not isinstance(args, list) or not args or not isinstance(args[0], str):
                return f"Ehost.{op}: the first argument is a string"
            if op == "get":
                return "R" + json.dumps(host.get(args[0]), separators=(",", ":"), ensure_ascii=False)
            if op == "list":
                return "R" + json.dumps(host.list(args[0]), ensure_ascii=False)
            if op == "put":
                host.put(args[0], args[1] if len(args) > 1 else None)
                return "Rnull"
            if op == "log":
                host.log(args[0])
                return "Rnull"
            return f"Eno host function {op!r}"
        except HostDenied as exc:
            return f"E{exc}"

    def close(self) -> None:
        self._rt.close()


def _describe(exc: Exception) -> str:
    if isinstance(exc, qjs_errors.JSError) and len(exc.args) >= 2:
        return f"{exc.args[0]}: {str(exc.args[1])[:300]}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _trap_text(exc: Exception) -> str:
    """A wasm trap's first line (its backtrace names only wasm function numbers)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if "call stack exhausted" in str(exc) or "stack overflow" in str(exc):
        return "recursed too deep (wasm stack exhausted)"
    return f"wasm trap: {first[:200]}"
