"""The composition root: settings → identity, storage, bus, node → Starlette app → uvicorn.

    build_node(settings)   the Node on <data>/store.sqlite3, signed by the node identity
    create_app(settings)   the ASGI app (its lifespan closes the node: streams ended, writes on disk)
    serve(settings)        run it with uvicorn until SIGTERM/SIGINT
    uvicorn_config(...)    uvicorn behind the connection layer: timeouts, caps sized from the raised
                           open-file limit, the owner's reserve, client addresses from trusted proxies

On first start the node identity and owner token are created in ``<data>/identity/``. The recovery
phrase of a new identity is handed to ``on_new_identity``, which shows it once when a person can see
it (a terminal) and returns True; otherwise it stays in ``<data>/identity/recovery_phrase`` (0600)
until ``statebus phrase`` shows it, and :func:`phrase_reminder` says so at each start. It is never
logged.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import math
import os
import re
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from statebus.access.connections import ConnectionTable, connection_caps
from statebus.access.proxies import TrustedProxies
from statebus.bus import Bus
from statebus.config import Settings
from statebus.errors import NotFound
from statebus.http.app import build_app
from statebus.http.auth import OwnerAuth
from statebus.http.connections import ConnectionGuard, OwnerCheck, guarded_protocol
from statebus.http.forwarded import ForwardedClient
from statebus.identity import keystore
from statebus.identity.keys import Identity
from statebus.identity.signing import sign_batch
from statebus.oplog import Op
from statebus.runtime import Node, highwater
from statebus.storage.sqlite import SqliteStorage

log = logging.getLogger("statebus.server")

STORE_FILE = "store.sqlite3"
GRACEFUL_SHUTDOWN_SECONDS = 10.0

NewIdentityHook = Callable[[Identity, str], bool | None]
"""``on_new_identity(identity, phrase)`` shows a new identity's phrase; True when a person saw it."""


def ensure_identity(data_dir: Path, on_new_identity: NewIdentityHook | None = None) -> Identity:
    """Load the node identity, creating it (and the owner token) on first start.

    A new identity's phrase is kept on disk until shown: deleted at once when ``on_new_identity``
    returns True, else left for ``statebus phrase`` (:func:`phrase_reminder`)."""
    if not keystore.exists(data_dir):
        identity, phrase = keystore.init(data_dir, keep_phrase=True)
        if on_new_identity is not None and on_new_identity(identity, phrase) is True:
            keystore.discard_phrase(data_dir)
        log.info("created node identity %s", identity.pubkey)
        return identity
    identity = keystore.load(data_dir)
    try:
        keystore.load_owner_token(data_dir)
    except NotFound:
        keystore.new_owner_token(data_dir)
    return identity


def owner_token(settings: Settings) -> str:
    """The owner token of the node in ``settings.data_dir`` (secret: never log it)."""
    return keystore.load_owner_token(settings.data_dir)


def login_url(settings: Settings, port: int | None = None) -> str:
    """The link that logs the owner in to the web UI (secret: show it to the owner only)."""
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    return f"http://{host}:{port if port is not None else settings.port}/login?token={owner_token(settings)}"


_SECRET_RES = (
    (re.compile(r"([?&]token=)[^&\s'\"]*"), r"\1***"),
    (
        re.compile(
            r"((?:authorization|proxy-authorization)['\"]?\s*[:,]\s*b?['\"]?\s*\w+ )[^\s'\",)]+", re.I
        ),
        r"\1***",
    ),
    (re.compile(r"((?:__Host-)?statebus_\w*=)[^;\s'\",)]*"), r"\1***"),
    (re.compile(r"(\"token\"\s*:\s*\")[^\"]*"), r"\1***"),
)
DATA_OPCODES = frozenset({"TEXT", "BINARY", "CONT"})


def redact(text: str) -> str:
    """Mask owner tokens in ``text``: ``?token=``, ``Authorization: Bearer …``, the login cookie and
    a websocket ``{"token": …}`` message."""
    for pattern, repl in _SECRET_RES:
        text = pattern.sub(repl, text)
    return text


def _holds_token(data: bytes) -> bool:
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
        return True  # not JSON the node would act on, but it may be a piece of a token message
    return isinstance(msg, dict) and "token" in msg


def mask_frame(arg: object) -> object:
    """A websocket data frame that the websockets library logs at debug level (``< TEXT '…'``), with
    its payload replaced unless it is one whole JSON message without a ``token``: the ``{"token": …}``
    login message, escaped keys, and fragments of a message are never shown."""
    data, opcode = getattr(arg, "data", None), getattr(arg, "opcode", None)
    name = getattr(opcode, "name", None)
    if not isinstance(data, bytes | bytearray) or name not in DATA_OPCODES:
        return arg
    if name != "CONT" and getattr(arg, "fin", True) and not _holds_token(bytes(data)):
        return arg
    return f"{name} [{len(data)} bytes, not shown: it may hold a token]"


class RedactTokens(logging.Filter):
    """Masks secrets in log records: the login link in uvicorn's access log, the Authorization
    header and login cookie that websocket handshakes log at debug level, and websocket frames that
    may hold a ``{"token": …}`` message (:func:`mask_frame`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # its formatter unpacks the args (client, method, path, version, status): keep their shape
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
            return True
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(mask_frame(a) for a in record.args)
        # elsewhere redact the formatted message: a header name and its value may be separate args
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def install_log_redaction() -> None:
    """Add :class:`RedactTokens` to uvicorn's and websockets' loggers (idempotent)."""
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn", "websockets", "websockets.server"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


def batch_signer_for(identity: Identity) -> Callable[[list[Op]], list[Op]]:
    """Sign each commit's local, unsigned ops with one signature; ops of other authors pass as they are."""

    def sign(ops: list[Op]) -> list[Op]:
        mine = [i for i, op in enumerate(ops) if op.author == identity.pubkey and not op.sig]
        if not mine:
            return ops
        signed = sign_batch([ops[i] for i in mine], identity)
        out = list(ops)
        for i, op in zip(mine, signed, strict=True):
            out[i] = op
        return out

    return sign


def build_node(settings: Settings, *, on_new_identity: NewIdentityHook | None = None) -> Node:
    """The node of ``settings.data_dir``: identity (created on first start), SQLite store, bus, Node.

    Ops written here are signed by the node identity, one signature per group commit.
    """
    data = Path(settings.data_dir)
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    identity = ensure_identity(data, on_new_identity)
    storage = SqliteStorage(data / STORE_FILE, check="full" if settings.store_full_check else "quick")
    bus = Bus(storage, local=identity.pubkey, keep_ops=settings.history_keep_ops)
    node = Node(bus, batch_signer=batch_signer_for(identity), max_buffer=settings.subscriber_buffer)
    highwater.guard(node, data, accept_loss=settings.accept_store_loss)  # a deleted store refuses writes
    return node


def create_app(settings: Settings, *, on_new_identity: NewIdentityHook | None = None) -> Starlette:
    """The ASGI app of the node in ``settings.data_dir``; its lifespan shutdown ends every stream and
    closes the node (everything acknowledged is on disk)."""
    node = build_node(settings, on_new_identity=on_new_identity)
    return build_app(node, settings, owner_token=owner_token(settings))


OPEN_FILES_CEILING = 1 << 20
"""The most open files :func:`raise_open_file_limit` asks for when the hard limit is unlimited."""


def raise_open_file_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; return the soft limit in force.

    Each connection holds a file descriptor: the usual soft limit of 1,024 is what 1,100 idle
    connections exhausted, locking the owner out. The connection caps are sized from the result
    (:func:`~statebus.access.connections.connection_caps`).
    """
    try:
        import resource
    except ImportError:  # not a Unix: nothing to raise, assume the common default
        return 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return OPEN_FILES_CEILING if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def _owner_check(auth: OwnerAuth) -> OwnerCheck:
    def is_owner(headers: Mapping[str, str], query_token: str | None) -> bool:
        return auth.presents_owner_token(headers) or (
            query_token is not None and auth.check_token(query_token)
        )

    return is_owner


def connection_guard(app: Starlette, settings: Settings, open_files: int | None = None) -> ConnectionGuard:
    """The connection layer's state for ``app``: caps sized from the open-file limit (raised here
    unless ``open_files`` is given), timeouts, trusted proxies, and the owner-token check."""
    files = raise_open_file_limit() if open_files is None else open_files
    caps = connection_caps(
        settings.max_connections, settings.max_connections_per_ip, settings.owner_reserve_connections, files
    )
    if caps.total < settings.max_connections:
        log.info(
            "at most %d connections (%d kept for the owner): the open-file limit is %d",
            caps.total,
            caps.reserve,
            files,
        )
    auth = getattr(app.state, "auth", None)
    guard = ConnectionGuard(
        ConnectionTable(caps),
        TrustedProxies(settings.trusted_proxies),
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        idle_timeout=settings.idle_timeout,
        is_owner=_owner_check(auth) if auth is not None else None,
    )
    app.state.connections = guard  # /metrics reads it
    return guard


class StatebusServer(uvicorn.Server):
    """uvicorn's server that ends open streams first on shutdown, so connections close promptly."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.statebus_app = app

    @property
    def connections(self) -> ConnectionGuard | None:
        """The connection layer (caps, timeouts, what it closed), once :func:`uvicorn_config` made it."""
        guard: ConnectionGuard | None = getattr(self.statebus_app.state, "connections", None)
        return guard

    async def shutdown(self, sockets: Any = None) -> None:
        self.statebus_app.state.streams.close_all()
        await super().shutdown(sockets)

    @property
    def port(self) -> int:
        """The bound port (useful with port 0), once started."""
        for server in self.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        raise NotFound("the server is not listening yet")


def uvicorn_config(app: Starlette, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """uvicorn settings for a node: uvloop when installed, httptools behind the connection layer
    (:mod:`statebus.http.connections`), and client addresses from trusted proxies only
    (:class:`~statebus.http.forwarded.ForwardedClient`; uvicorn's own proxy headers stay off)."""
    guard = connection_guard(app, settings)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": guarded_protocol(guard),
        "lifespan": "on",
        "log_level": settings.log_level,
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
        "timeout_keep_alive": math.ceil(settings.idle_timeout),  # ours closes first, to the millisecond
        "ws": "none" if importlib.util.find_spec("statebus.http.websocket") is None else "auto",
        # a websocket message is read whole before the session sees it: bound it near the body limit
        # (the session answers one over max_body_bytes with 1009 and its reason; twice that, the library
        # closes with 1009 before buffering more), not uvicorn's 16 MiB
        "ws_max_size": 2 * settings.max_body_bytes,
    }
    options.update(overrides)
    asgi = ForwardedClient(app, guard.proxies) if guard.proxies else app
    config = uvicorn.Config(asgi, **options)  # configures uvicorn's loggers: add the filter after
    install_log_redaction()
    return config


PHRASE_NOTE = (
    "This recovery phrase is shown ONCE and is not stored. Write it down and keep it secret;\n"
    "`statebus init --recover` restores the identity from it."
)


def show_phrase_on_terminal(identity: Identity, phrase: str) -> bool:
    """The ``on_new_identity`` of a node started by a person: the phrase goes to stderr only when
    stderr is a terminal (never into a log file or a pipe). Returns whether it was shown."""
    if not sys.stderr.isatty():
        return False
    sys.stderr.write(f"Created node identity {identity.pubkey}.\n\n    {phrase}\n\n{PHRASE_NOTE}\n\n")
    sys.stderr.flush()
    return True


def phrase_reminder(settings: Settings) -> str | None:
    """What to tell the owner at start while a recovery phrase waits to be shown, or None."""
    if not keystore.phrase_pending(settings.data_dir):
        return None
    data = shlex.quote(str(settings.data_dir))
    return (
        f"statebus: the recovery phrase of this node's identity has not been shown yet (there was no "
        f"terminal when it was made). Run `statebus phrase --data {data}` in a terminal to see it once; "
        f"until then it is kept in {keystore.phrase_file(settings.data_dir)} (mode 0600).\n"
    )


def make_server(settings: Settings, **overrides: Any) -> StatebusServer:
    """A ready-to-run server for ``settings`` (``overrides`` go to ``uvicorn.Config``)."""
    app = create_app(settings, on_new_identity=show_phrase_on_terminal)
    reminder = phrase_reminder(settings)
    if reminder is not None:
        sys.stderr.write(reminder)
        sys.stderr.flush()
    server = StatebusServer(uvicorn_config(app, settings, **overrides), app)
    install_log_redaction()
    return server


GC_THRESHOLDS = (10_000, 50, 100)
"""Collector thresholds of a serving node (CPython's defaults are 700, 10, 10); see :func:`tune_gc`."""


def tune_gc() -> None:
    """Tune the garbage collector for a long-running node; call once, after startup.

    A full (generation-2) collection stops the event loop for a time proportional to every live
    object: 44-122 ms measured with 1,000 open streams (docs/performance.md), a latency spike for every
    subscriber at once. The objects alive after startup (modules, classes, the app) are frozen out of
    collection (``gc.freeze``) and collections run less often: young ones every 10,000 net
    allocations instead of 700, full ones after 50 x 100 young ones (and, as always in CPython, only
    once the long-lived objects grew by a quarter). Cyclic garbage is still collected, later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def serve(settings: Settings, **overrides: Any) -> None:
    """Run the node's HTTP server until SIGTERM or SIGINT, then shut down cleanly.

    Sets the process umask to 077 first, so the database and its WAL files are private to the user,
    and tunes the garbage collector (:func:`tune_gc`) once the app is built.
    """
    os.umask(0o077)
    server = make_server(settings, **overrides)
    tune_gc()
    server.run()
