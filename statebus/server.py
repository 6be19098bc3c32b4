"""The composition root: settings → identity, storage, bus, node → Starlette app → uvicorn.

    build_node(settings)   the Node on <data>/store.sqlite3, signed by the node identity
    create_app(settings)   the ASGI app (its lifespan closes the node: streams ended, writes on disk)
    serve(settings)        run it with uvicorn until SIGTERM/SIGINT

On first start the node identity and owner token are created in ``<data>/identity/``. The recovery
phrase of a new identity is handed to ``on_new_identity`` (the CLI shows it once); it is never stored
or logged here.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from statebus.bus import Bus
from statebus.config import Settings
from statebus.errors import NotFound
from statebus.http.app import build_app
from statebus.identity import keystore
from statebus.identity.keys import Identity
from statebus.identity.signing import sign_batch
from statebus.oplog import Op
from statebus.runtime import Node, highwater
from statebus.storage.sqlite import SqliteStorage

log = logging.getLogger("statebus.server")

STORE_FILE = "store.sqlite3"
GRACEFUL_SHUTDOWN_SECONDS = 10.0

NewIdentityHook = Callable[[Identity, str], None]


def ensure_identity(data_dir: Path, on_new_identity: NewIdentityHook | None = None) -> Identity:
    """Load the node identity, creating it (and the owner token) on first start."""
    if not keystore.exists(data_dir):
        identity, phrase = keystore.init(data_dir)
        if on_new_identity is not None:
            on_new_identity(identity, phrase)
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
    (re.compile(r"(statebus_token=)[^;\s'\",)]*"), r"\1***"),
)


def redact(text: str) -> str:
    """Mask owner tokens in ``text``: ``?token=``, ``Authorization: Bearer …`` and the login cookie."""
    for pattern, repl in _SECRET_RES:
        text = pattern.sub(repl, text)
    return text


class RedactTokens(logging.Filter):
    """Masks secrets in log records: the login link in uvicorn's access log, and the Authorization
    header and login cookie that websocket handshakes log at debug level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # its formatter unpacks the args (client, method, path, version, status): keep their shape
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
            return True
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


class StatebusServer(uvicorn.Server):
    """uvicorn's server that ends open streams first on shutdown, so connections close promptly."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.statebus_app = app

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
    """uvicorn settings for a node: uvloop and httptools when installed, no proxy headers."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "lifespan": "on",
        "log_level": settings.log_level,
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
        "ws": "none" if importlib.util.find_spec("statebus.http.websocket") is None else "auto",
    }
    options.update(overrides)
    config = uvicorn.Config(app, **options)  # configures uvicorn's loggers: add the filter after
    install_log_redaction()
    return config


def _show_phrase(identity: Identity, phrase: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(
            f"New node identity {identity.pubkey}.\n"
            f"Write down its recovery phrase; it is shown only now:\n\n    {phrase}\n\n"
        )


def make_server(settings: Settings, **overrides: Any) -> StatebusServer:
    """A ready-to-run server for ``settings`` (``overrides`` go to ``uvicorn.Config``)."""
    app = create_app(settings, on_new_identity=_show_phrase)
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
