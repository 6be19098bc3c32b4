"""The handler kinds of hosted apps, wired into the node: validate, derive, on_write, JSON Schema.

    apps = AppHost(node)                  # one per node (statebus.server.assembly)
    access.op_gate.checks.append(apps.check_op)   # ops from peers and signed clients
    node.write_checks.append(apps)                 # the owner's own writes
    apps.load(spec)                       # start (or replace) an app's sandbox and hook it in
    apps.status()                         # [AppStatus(name, state, trap_reason, calls, ...)]

Rules:

1. validate and JSON Schema run on every write to a key their pattern matches, in *any* namespace:
   local writes (:meth:`AppHost.check`, awaited by the node before the write) and ops from other
   nodes or signed clients (:meth:`AppHost.check_op`, awaited by the op gate). The same op gets the
   same verdict on every replica: the handler sees only the op and the current value, its seed is
   the hash of the op's timestamp-free fields (:func:`seed_of`). A verdict refuses the write with
   ``AppRejected`` (422), a failed handler with ``AppFailed`` (422); nothing changes then.
2. Validated keys take whole JSON writes only (PUT of JSON, or delete): a patch, a CRDT update or a
   bytes value is refused, since the handler could not see the value it would make.
3. ``derive(key)`` runs off the loop; the derived key is a reactive key whose value is the last
   result, whose inputs are the keys the handler read (so readers need their read rights), and that
   is computed again when a key it read or a subtree it listed changes. Until the first run ends
   it has no value; a failed run leaves it failed (``ReactiveFailed``).
4. ``on_write(op)`` runs after a write in the user's own namespace; ``host.put`` inside it writes
   inside the write grant, through the same checks as any local write (the app's own validator
   aside: it is busy running the on_write). Chains of on_write calls stop at :data:`MAX_CHAIN`.
5. Every host call is checked against the app's grants in the host; a refusal throws inside the
   handler and is counted (``denied``). Host calls hop to the event loop to read or write.
6. ``host.put`` of a key in *another* namespace inside the app's ``send`` grant (on_write only)
   stores nothing here: it hands the value to the node's :class:`Courier`, which signs it with the
   node's key and delivers it to that namespace's node (:mod:`statebus.federation.courier`). The
   receiving node decides whether to store it, by its rules, speed bumps and validators. When the
   key whose write sent notices is deleted (an unlike, a deleted post, an unfollow), the courier
   retracts them: a signed delete of each notice at its receiver (:meth:`Courier.retract`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jsonschema_rs

from statebus.access.op_gate import OpGate
from statebus.apps.patterns import Grants, Pattern, split_key
from statebus.apps.sandbox import AppRunner, GuestError, HostDenied, Limits, Trap
from statebus.apps.sandbox.base import COST_BUCKETS, RunnerStats, Sandbox
from statebus.apps.spec import AppSpec
from statebus.bus import Change
from statebus.errors import AppFailed, AppRejected, InvalidKey, InvalidValue, StatebusError
from statebus.keys import is_pubkey
from statebus.oplog import Op
from statebus.runtime import Node
from statebus.types import JSON, Key, PubKey
from statebus.values import CheckedJSON, dumps_json

log = logging.getLogger("statebus.apps")

MAX_CHAIN = 4
"""on_write calls that may follow from one write (rule 4)."""
MAX_LIST = 1000
"""Names one ``host.list`` returns at most."""
HOST_CALL_TIMEOUT = 5.0


def seed_of(key: Key, kind: str, author: str, body: Any) -> int:
    """The handler's seed for an op: a hash of its timestamp-free fields (rule 1)."""
    h = hashlib.sha256(f"{key}\n{kind}\n{author}\n".encode())
    if isinstance(body, bytes | bytearray):
        h.update(bytes(body))
    elif body is not None:
        h.update(dumps_json(body))
    return int.from_bytes(h.digest()[:4], "big") & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class AppStatus:
    """One app as the node page and /metrics show it."""

    name: str
    version: str
    state: str
    """``running``, ``trapped`` or ``stopped``."""
    trap_reason: str | None
    calls: int
    traps: int
    rejected: int
    denied: int
    restarts: int
    total_cost: float
    """Seconds spent in handler calls."""
    avg_cost: float
    memory_bytes: int
    cost_buckets: tuple[int, ...] = ()
    grants: Mapping[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "state": self.state,
            "trap_reason": self.trap_reason,
            "calls": self.calls,
            "traps": self.traps,
            "rejected": self.rejected,
            "denied": self.denied,
            "restarts": self.restarts,
            "total_cost": round(self.total_cost, 6),
            "avg_cost": round(self.avg_cost, 6),
            "memory_bytes": self.memory_bytes,
            "grants": dict(self.grants),
        }


def sandbox_factory(spec: AppSpec, limits: Limits) -> Callable[[], Sandbox]:
    """How the app's runtime is made (on its thread): JS on quickjs-rs, or a raw-wasm module."""
    functions = sorted({*spec.validate.values(), *spec.derive.values(), *spec.on_write.values()})
    if spec.wasm is not None:
        from statebus.apps.sandbox.wasm import WasmSandbox, compile_module

        module = compile_module(spec.wasm)
        return lambda: WasmSandbox(module, functions, limits)
    from statebus.apps.sandbox.js import JsSandbox

    source = spec.handler_source or ""
    return lambda: JsSandbox(source, functions, limits)


class _Derived:
    """The state of one derived key (rule 3)."""

    def __init__(self, key: Key, function: str) -> None:
        self.key = key
        self.function = function
        self.value: JSON = None
        self.error: StatebusError | None = None
        self.done = False
        self.inputs: tuple[Key, ...] = ()
        self.listed: tuple[Key, ...] = ()
        self.running = False
        self.dirty = False


class App:
    """One loaded app: its spec, runner, compiled patterns and hooks into the node."""

    def __init__(self, host: AppHost, spec: AppSpec, limits: Limits) -> None:
        self.host = host
        self.spec = spec
        self.grants: Grants = spec.grants
        self.runner = AppRunner(spec.name, sandbox_factory(spec, limits), limits)
        self.validate = [(Pattern.parse(p), fn) for p, fn in spec.validate.items()]
        self.on_write = [(Pattern.parse(p), fn) for p, fn in spec.on_write.items()]
        self.schemas: list[tuple[Pattern, Any]] = []
        for p, schema in spec.schemas.items():
            try:
                self.schemas.append((Pattern.parse(p), jsonschema_rs.validator_for(dict(schema))))
            except jsonschema_rs.ValidationError as exc:
                raise InvalidValue(
                    f"app {spec.name}: the schema for {p!r} is not a valid JSON Schema: {exc}"
                ) from None
        self.derived: dict[Key, _Derived] = {}
        self.observers: dict[Key, Any] = {}
        self.handler: Any = None
        self.logs_dropped = 0
        self._log_tokens = float(limits.log_burst)
        self._log_at = time.monotonic()

    def validates(self, rel: str) -> bool:
        return any(p.matches(rel) for p, _ in self.validate) or any(p.matches(rel) for p, _ in self.schemas)

    def take_log_token(self) -> bool:
        lim = self.runner.limits
        now = time.monotonic()
        self._log_tokens = min(
            float(lim.log_burst), self._log_tokens + (now - self._log_at) * lim.log_per_second
        )
        self._log_at = now
        if self._log_tokens < 1:
            self.logs_dropped += 1
            return False
        self._log_tokens -= 1
        return True


class Courier(Protocol):
    """Where an app's notices to other namespaces go (rule 6)."""

    def send(self, key: Key, value: JSON, source: Key | None = None) -> None:
        """Queue ``value`` for ``key`` (in another namespace), sent because of the write to ``source``;
        raise a StatebusError to refuse it."""

    def retract(self, source: Key) -> None:
        """Take back the notices sent because of writes to ``source`` (it was deleted)."""


class CallHost:
    """The host API of one handler call (rule 5): runs on the app's thread, hops to the loop."""

    def __init__(
        self, app: App, *, writable: bool = False, chain: int = 0, source: Key | None = None
    ) -> None:
        self.app = app
        self.source = source
        """The key whose write this on_write call follows: notices it sends are retracted with it."""
        self.node = app.host.node
        self.local: PubKey = app.host.node.local
        self.writable = writable
        self.chain = chain
        self.calls = 0
        self.read_bytes = 0
        self.inputs: list[Key] = []
        self.listed: list[Key] = []

    def _budget(self, what: str) -> None:
        self.calls += 1
        lim = self.app.runner.limits
        if self.calls > lim.max_host_calls:
            self._deny(f"host.{what}: more than {lim.max_host_calls} host calls in one handler call")

    def _deny(self, why: str) -> None:
        self.app.runner.stats.denied += 1
        raise HostDenied(why)

    def _resolve(self, what: str, key: str, *, subtree: bool = False) -> tuple[Key, bool, str]:
        """``key`` (relative, or ``/<pubkey>/…``) as (absolute key, own namespace?, relative path)."""
        if not isinstance(key, str) or not key or len(key) > 1024:
            self._deny(f"host.{what}: a key is a non-empty string")
        text = key if key.startswith("/") else f"/{self.local}/{key}"
        parts = text.split("/", 2)
        if len(parts) < 3 or not is_pubkey(parts[1]):
            self._deny(f"host.{what}: {key!r} is not a relative path nor /<pubkey>/path")
        try:
            k = self.node.parse(text, allow_subtree=subtree)
        except InvalidKey as exc:
            self._deny(f"host.{what}: {exc.detail}")
        ns, rel = split_key(k)
        return k, ns == self.local, rel.rstrip("/")

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        loop = self.app.host.loop
        if loop is None:
            raise HostDenied("the node is not running")
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the caller's thread
                fut.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return fut.result(HOST_CALL_TIMEOUT)

    def get(self, key: str) -> JSON:
        self._budget("get")
        k, own, rel = self._resolve("get", key)
        if not self.app.grants.can_read(own, rel):
            self._deny(f"host.get: {key} is outside the app's read grant")
        self.inputs.append(k)
        change: Change | None = self._on_loop(lambda: self.node.fetch_or_none(k))
        if change is None or not change.exists or change.content_type is not None:
            return None
        size = len(dumps_json(change.value))
        self.read_bytes += size
        if self.read_bytes > self.app.runner.limits.max_host_read_bytes:
            self._deny("host.get: read more than the per-call budget")
        return change.value  # type: ignore[no-any-return]

    def list(self, prefix: str) -> list[str]:
        self._budget("list")
        text = prefix if prefix.endswith("/") else prefix + "/"
        k, own, rel = self._resolve("list", text, subtree=True)
        probe = f"{rel}/x" if rel else "x"
        if not self.app.grants.can_read(own, probe):
            self._deny(f"host.list: {prefix} is outside the app's read grant")
        self.listed.append(k)
        names: list[str] = self._on_loop(lambda: self.node.children(k, "", MAX_LIST))
        return [
            n
            for n in names
            if self.app.grants.can_read(own, f"{rel}/{n.rstrip('/')}" if rel else n.rstrip("/"))
        ]

    def put(self, key: str, value: JSON) -> None:
        self._budget("put")
        if not self.writable:
            self._deny("host.put: only on_write handlers write")
        k, own, rel = self._resolve("put", key)
        if not own and self.app.grants.can_send(rel):
            courier = self.app.host.courier
            if courier is None:
                raise HostDenied(f"host.put: {key}: this node sends no notices (it has no federation)")
            try:
                self._on_loop(lambda: courier.send(k, value, self.source))
            except StatebusError as exc:
                raise HostDenied(f"host.put: {key} refused: {exc.detail or exc.code}") from None
            return
        if not own or not self.app.grants.can_write(rel):
            self._deny(f"host.put: {key} is outside the app's write grant")
        loop = self.app.host.loop
        if loop is None:
            raise HostDenied("the node is not running")
        fut = asyncio.run_coroutine_threadsafe(self.app.host.app_write(self.app, k, value, self.chain), loop)
        try:
            fut.result(HOST_CALL_TIMEOUT)
        except StatebusError as exc:
            raise HostDenied(f"host.put: {key} refused: {exc.detail or exc.code}") from None

    def log(self, message: str) -> None:
        self._budget("log")
        if self.app.take_log_token():
            lim = self.app.runner.limits.max_log_chars
            clean = "".join(c if c.isprintable() else "?" for c in str(message)[:lim])
            log.info("app %s: %s", self.app.spec.name, clean)


class AppHost:
    """The node's hosted apps (see the module rules).

    Args:
        node: the node the apps hook into.
        gate: the node's one op gate (``AccessControl.op_gate``): ops from outside are validated there.
        limits: the budgets of each app (the defaults of :class:`Limits` otherwise).

    It hooks itself into the node's write checks and the gate's checks only while an app validates
    something, so a node without apps pays nothing on its write path. The JS engine is compiled
    when the first app loads (at node start, when the registry loads the installed apps).
    """

    def __init__(self, node: Node, gate: OpGate | None = None, *, limits: Limits | None = None) -> None:
        self.node = node
        self.gate = gate
        self.limits = limits or Limits()
        self.apps: dict[str, App] = {}
        self.courier: Courier | None = None
        """Delivers notices of apps with a ``send`` grant (rule 6); None: the node sends none."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._writing: dict[Key, tuple[str, int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    def __repr__(self) -> str:
        return f"AppHost({sorted(self.apps)})"

    # ------------------------------------------------------------------ lifecycle

    def load(self, spec: AppSpec) -> None:
        """Start (or replace) the app's sandbox and hook it into the op gate, derive and on_write.
        Call it on the event loop's thread. The runtime starts in the app's thread at once.

        Raises:
            InvalidValue: the spec's schemas do not compile, or its wasm module is refused.
        """
        self.loop = asyncio.get_running_loop()
        try:
            app = App(self, spec, self.limits)
        except Trap as exc:
            raise InvalidValue(f"app {spec.name}: {exc}") from None
        self.unload(spec.name)
        self.apps[spec.name] = app
        app.runner.start_soon()
        if app.on_write:
            app.handler = self.node.handle(
                f"/{self.node.local}/", on_save=lambda c, a=app: self._after_write(a, c)
            )
        for rel, fn in spec.derive.items():
            key = self.node.parse(f"/{self.node.local}/{rel}", allow_subtree=False)
            d = _Derived(key, fn)
            app.derived[key] = d
            self.node.reactive(key, functools.partial(self._derived_value, app))
            self._spawn(self._derive(app, d))
        self._rehook()
        log.info("app %s %s loaded", spec.name, spec.version)

    def unload(self, name: str) -> None:
        """Stop the app's sandbox and unhook it (nothing happens if it is not loaded)."""
        app = self.apps.pop(name, None)
        if app is None:
            return
        if app.handler is not None:
            self.node.unhandle(app.handler)
        for sub in app.observers.values():
            sub.close()
        for key in app.derived:
            self.node.unreactive(key)
        app.runner.close()
        self._rehook()

    def _rehook(self) -> None:
        """Be in the node's write checks and the gate's checks exactly while some app validates."""
        wanted = any(app.validate or app.schemas for app in self.apps.values())
        hooked = self in self.node.write_checks
        if wanted and not hooked:
            self.node.write_checks.append(self)
            if self.gate is not None:
                self.gate.checks.append(self.check_op)
        elif hooked and not wanted:
            self.node.write_checks.remove(self)
            if self.gate is not None and self.check_op in self.gate.checks:
                self.gate.checks.remove(self.check_op)

    def close(self) -> None:
        self.closed = True
        for name in list(self.apps):
            self.unload(name)
        for task in list(self._tasks):
            task.cancel()

    async def aclose(self) -> None:
        """:meth:`close`, then wait for the derive and on_write tasks it cancelled: none is left
        pending when the node's loop closes (the node awaits this first, ``Node.on_aclose``)."""
        self.close()
        tasks = list(self._tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def status(self) -> list[AppStatus]:
        out = []
        for name in sorted(self.apps):
            app = self.apps[name]
            r = app.runner
            s: RunnerStats = r.stats
            out.append(
                AppStatus(
                    name,
                    app.spec.version,
                    r.state,
                    r.trap_reason,
                    s.calls,
                    s.traps,
                    s.rejected,
                    s.denied,
                    s.restarts,
                    s.total_cost,
                    s.total_cost / s.calls if s.calls else 0.0,
                    r.memory,
                    tuple(s.buckets),
                    app.grants.to_json(),
                )
            )
        return out

    # ------------------------------------------------------------------ validate (rules 1, 2)

    def covers(self, key: Key) -> bool:
        """Does any app validate ``key`` (a node write check's cheap test)?"""
        if not self.apps:
            return False
        rel = split_key(key)[1]
        return any(app.validates(rel) for app in self.apps.values())

    async def check(self, key: Key, kind: str, body: Any, author: str) -> None:
        """Validate a local write before it is made (the node awaits it)."""
        if isinstance(body, CheckedJSON):
            body = body.value  # a request body just parsed: the value itself
        writer = self._writing.get(key)
        await self._validate(key, kind, body, author, skip=writer[0] if writer else None)

    async def check_op(self, op: Op) -> None:
        """Validate an op from outside (the op gate awaits it)."""
        if self.covers(op.key):
            await self._validate(op.key, op.kind, op.body, op.author)

    async def _validate(
        self, key: Key, kind: str, body: Any, author: str, *, skip: str | None = None
    ) -> None:
        ns, rel = split_key(key)
        for app in list(self.apps.values()):
            if not app.validates(rel):
                continue
            name = app.spec.name
            if kind in ("patch", "crdt") or isinstance(body, bytes | bytearray):
                raise AppRejected(
                    f"app {name} validates {rel}: write it whole, as JSON (PUT), not as "
                    + ("bytes" if isinstance(body, bytes | bytearray) else f"a {kind}")
                )
            for pattern, validator in app.schemas:
                if kind != "delete" and pattern.matches(rel):
                    errors = list(validator.iter_errors(body))
                    if errors:
                        app.runner.stats.rejected += 1
                        e = errors[0]
                        where = "/".join(str(p) for p in e.instance_path) or "the value"
                        raise AppRejected(
                            f"app {name}: {rel} does not match its schema at {where}: {e.message[:200]}"
                        )
            if skip == name:
                continue
            for pattern, fn in app.validate:
                if not pattern.matches(rel):
                    continue
                current_change = self.node.fetch_or_none(key)
                current = None
                if (
                    current_change is not None
                    and current_change.exists
                    and current_change.content_type is None
                ):
                    current = current_change.value
                op: dict[str, JSON] = {
                    "key": rel,
                    "namespace": ns,
                    "own": ns == self.node.local,
                    "author": author,
                    "kind": kind,
                }
                op["value"] = None if kind == "delete" else body
                verdict = await self._call(
                    app, fn, [op, current], seed_of(key, kind, author, body), CallHost(app)
                )
                if (
                    verdict is False
                    or isinstance(verdict, str)
                    or (isinstance(verdict, dict) and "reject" in verdict)
                ):
                    app.runner.stats.rejected += 1
                if verdict is False:
                    raise AppRejected(f"app {name} refused {rel}")
                if isinstance(verdict, str):
                    raise AppRejected(f"app {name} refused {rel}: {verdict[:300]}")
                if isinstance(verdict, dict) and "reject" in verdict:
                    raise AppRejected(f"app {name} refused {rel}: {str(verdict['reject'])[:300]}")

    async def _call(self, app: App, fn: str, args: list[JSON], seed: int, host: CallHost) -> JSON:
        try:
            return await app.runner.call(fn, args, seed, host)
        except GuestError as exc:
            raise AppRejected(f"app {app.spec.name}: {fn} threw: {exc}") from None
        except Trap as exc:
            raise AppFailed(f"app {app.spec.name}: {fn} failed: {exc}") from None

    # ------------------------------------------------------------------ on_write (rule 4)

    def _after_write(self, app: App, change: Change) -> None:
        if change.kind != "op" or self.closed or app.spec.name not in self.apps:
            return
        rel = split_key(change.key)[1]
        fns = [fn for p, fn in app.on_write if p.matches(rel)]
        if not fns:
            return
        writer = self._writing.get(change.key)
        if writer is not None and writer[0] == app.spec.name:
            return  # the app's own put: no call back into itself
        chain = writer[1] + 1 if writer is not None else 0
        if chain >= MAX_CHAIN:
            log.warning("app %s: on_write chain stopped at %s (%d deep)", app.spec.name, rel, chain)
            return
        op = change.op
        author = op.author if op is not None else self.node.local
        body = op.body if op is not None else change.value
        kind = op.kind if op is not None else "set"
        if kind == "delete" and self.courier is not None and app.grants.send:
            self.courier.retract(change.key)  # rule 6: the record's notices go with it
        payload = {
            "key": rel,
            "namespace": self.node.local,
            "author": author,
            "kind": kind,
            "value": change.value if change.exists else None,
        }
        for fn in fns:
            seed = seed_of(change.key, kind, author, body)
            self._spawn(self._on_write(app, fn, payload, seed, chain, change.key))

    async def _on_write(
        self, app: App, fn: str, payload: dict[str, Any], seed: int, chain: int, source: Key
    ) -> None:
        try:
            await self._call(
                app, fn, [payload], seed, CallHost(app, writable=True, chain=chain, source=source)
            )
        except StatebusError as exc:
            log.warning("app %s: on_write %s failed: %s", app.spec.name, fn, exc.detail)

    async def app_write(self, app: App, key: Key, value: JSON, chain: int) -> None:
        """A ``host.put`` of ``app`` (on the loop): the same checks as any local write (rule 4)."""
        self._writing[key] = (app.spec.name, chain)
        try:
            await self.node.save(key, value)
        finally:
            self._writing.pop(key, None)

    # ------------------------------------------------------------------ derive (rule 3)

    def _derived_value(self, app: App, key: Key, get: Callable[[str], Any]) -> Any:
        d = app.derived.get(key)
        if d is None:
            return None
        for k in d.inputs:
            get(k)  # the derived key carries its inputs' read rules
        if d.error is not None:
            raise d.error
        return d.value if d.done else None

    async def _derive(self, app: App, d: _Derived) -> None:
        if d.running:
            d.dirty = True
            return
        d.running = True
        try:
            while True:
                d.dirty = False
                host = CallHost(app)
                rel = split_key(d.key)[1]
                try:
                    value = await self._call(app, d.function, [rel], seed_of(d.key, "derive", "", rel), host)
                    d.value, d.error = value, None
                except StatebusError as exc:
                    d.error = AppFailed(exc.detail)
                d.done = True
                d.inputs, d.listed = tuple(dict.fromkeys(host.inputs)), tuple(dict.fromkeys(host.listed))
                if app.spec.name not in self.apps or self.closed:
                    return
                self._watch(app, d)
                self.node.refresh_derived(d.key)
                if not d.dirty:
                    return
        finally:
            d.running = False

    def _watch(self, app: App, d: _Derived) -> None:
        wanted = set(d.inputs) | set(d.listed)
        for pattern in wanted - set(app.observers):
            app.observers[pattern] = self.node.observe(
                pattern, functools.partial(self._input_changed, app, pattern), snapshot=False
            )

    def _input_changed(self, app: App, pattern: Key, change: Change) -> None:
        if self.closed or app.spec.name not in self.apps:
            return
        self._spawn(self._rerun(app, pattern, change.seq))

    async def _rerun(self, app: App, pattern: Key, seq: int) -> None:
        """Run the derives that read ``pattern`` again, once the change at ``seq`` is on disk (a
        listing reads what is on disk)."""
        try:
            await self.node.durable(seq)
        except StatebusError:
            return  # rolled back: nothing changed
        for d in list(app.derived.values()):
            if pattern in d.inputs or pattern in d.listed:
                await self._derive(app, d)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


__all__ = ["COST_BUCKETS", "AppHost", "AppStatus", "CallHost", "seed_of"]
