"""uvicorn under a node: the connection layer, the open-file limit, graceful shutdown, the collector.

    uvicorn_config(app, settings)   uvicorn behind the connection layer: timeouts, caps sized from the
                                    raised open-file limit, the owner's reserve, client addresses from
                                    trusted proxies only
    StatebusServer                  uvicorn's server that ends open streams first on shutdown
    EmbeddedServer                  the same without signal handlers (the process owner stops nodes)
    tune_gc()                       collector thresholds for a long-running node

Rules:
    1. The connection caps come from the open-file limit this process really has (raised first).
    2. Log redaction is installed after uvicorn configured its loggers, never at import.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import logging
import math
from collections.abc import Generator, Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette

from statebus.access.connections import ConnectionTable, connection_caps
from statebus.access.proxies import TrustedProxies
from statebus.config import Settings
from statebus.errors import NotFound
from statebus.http.auth import OwnerAuth
from statebus.http.connections import ConnectionGuard, OwnerCheck, guarded_protocol
from statebus.http.forwarded import ForwardedClient
from statebus.server.logs import install_log_redaction, log_config

log = logging.getLogger("statebus.server")

GRACEFUL_SHUTDOWN_SECONDS = 10.0

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


class EmbeddedServer(StatebusServer):
    """uvicorn without its signal handlers: the process owner decides when nodes stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


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
        "ws": "auto",
        # a websocket message is read whole before the session sees it: bound it near the body limit
        # (the session answers one over max_body_bytes with 1009 and its reason; twice that, the library
        # closes with 1009 before buffering more), not uvicorn's 16 MiB
        "ws_max_size": 2 * settings.max_body_bytes,
    }
    json_logs = log_config(settings.log_format, settings.log_level)
    if json_logs is not None:  # else uvicorn's own (None would configure no logging at all)
        options["log_config"] = json_logs
    options.update(overrides)
    asgi = ForwardedClient(app, guard.proxies) if guard.proxies else app
    config = uvicorn.Config(asgi, **options)  # configures uvicorn's loggers: add the filter after
    install_log_redaction()
    return config


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
