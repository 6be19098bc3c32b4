"""The Starlette app of a node: routes for keys, streams, login, static files and extensions.

:func:`build_app` wires a :class:`~statebus.runtime.Node` and :class:`~statebus.config.Settings` into
routes; the composition root (:mod:`statebus.server`) builds the node, its identity, owner token and
access rules once and calls it. Hooks for other
transports:

* ``statebus/http/static/index.html`` is served at ``/``, ``statebus/http/static/statebus.js`` at
  ``/statebus.js`` and ``favicon.ico`` at ``/favicon.ico`` (cached for a year) when the files exist
  (everything in that folder also under ``/static/``);
* the websocket protocol (:mod:`statebus.http.websocket`) and the info route share the app's owner
  check and access rules;
* ``extra_routes`` (the peer endpoints, given by ``statebus.server``) come before every other route.

Requests for keys skip Starlette's middleware stack and router (:class:`NodeApp`): every HTTP request
whose path cannot match one of the other routes goes straight to the key endpoint, behind the same
request counter and signature gate. That halves the ASGI layers a write passes through (measured in
docs/performance.md, "Durable writes"); every other request takes Starlette's way, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from statebus.access.control import AccessControl
from statebus.config import Settings
from statebus.http.app_origin import AppDirectory, AppOrigins
from statebus.http.auth import APP_SCOPE, OwnerAuth, login
from statebus.http.encode import EncodeCache
from statebus.http.errors import error_response
from statebus.http.keys import KeyEndpoint
from statebus.http.metrics import NodeMetrics, RequestCounter
from statebus.http.openapi import routes as openapi_routes
from statebus.http.origins import OriginPolicy
from statebus.http.pump import StreamRegistry, install_log_filter
from statebus.http.websocket import routes as websocket_routes
from statebus.http.y_websocket import routes as y_websocket_routes
from statebus.runtime import Node

log = logging.getLogger("statebus.http")

STATIC_DIR = Path(__file__).resolve().parent / "static"
ICON_CACHE = "public, max-age=31536000, immutable"


class NodeApp(Starlette):
    """Starlette, with a short way in for key requests.

    An HTTP request whose path starts with no other route's literal prefix (``/login``, ``/metrics``,
    ``/static``, ``/.well-known/statebus``…) can only match the catch-all key route: it is handed to
    ``keys`` (the counted, gated key endpoint) directly, without Starlette's error and exception
    middleware and router walk. Everything else (other routes, websockets, lifespan) goes through
    Starlette as usual. The prefixes are read once, from the ``routes`` given: every route is passed
    to :func:`build_app` (``extra_routes``), none is added later. A route without a literal prefix, or
    middleware added with ``add_middleware``, turns the short way off. A request whose ``Host`` names an
    installed app's origin (``<name>.localhost``) goes to ``app_origins`` first
    (:mod:`statebus.http.app_origin`), which hands its key requests back here marked as that app's.

    Args:
        keys: the ASGI app serving key requests (also reachable through ``key_route``).
        key_route: the catch-all route of ``keys`` in ``routes`` (left out of the prefixes).
        middleware_count: how many middleware the short way stands in for (``user_middleware``).
        **kwargs: Starlette's.
    """

    def __init__(
        self,
        *,
        keys: ASGIApp,
        key_route: BaseRoute,
        middleware_count: int,
        app_origins: AppOrigins | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hold: asyncio.Event | None = None
        """While set to an unset event, requests wait for it (a first start on a terminal serves
        nothing until the owner pressed Enter under the recovery phrase; statebus.server.phrase)."""
        self.app_origins = app_origins
        self.keys = keys
        self.key_route = key_route
        self._middleware_count = middleware_count
        self._prefixes = _literal_prefixes(self.router.routes, key_route)

    def reserved_prefixes(self) -> tuple[str, ...] | None:
        """The literal prefixes of every route but the key route (None: some route has none)."""
        return self._prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hold = self.hold
        if hold is not None and scope["type"] != "lifespan" and not hold.is_set():
            await hold.wait()
        origins = self.app_origins
        if origins is not None and scope["type"] != "lifespan" and APP_SCOPE not in scope:
            name = origins.app_of(scope)  # an installed app's own origin (statebus.http.app_origin)
            if name is not None:
                await origins(scope, receive, send, name)
                return
        if scope["type"] == "http" and len(self.user_middleware) == self._middleware_count:
            prefixes = self._prefixes
            if prefixes is not None and not scope["path"].startswith(prefixes):
                scope["app"] = self
                await self.keys(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _server_error() -> Response:
    return error_response(500, "internal_error", "the server failed to handle this request")


def _literal_prefixes(routes: Sequence[BaseRoute], key_route: BaseRoute) -> tuple[str, ...] | None:
    prefixes: list[str] = []
    for route in routes:
        if route is key_route:
            continue
        path = getattr(route, "path", None)
        prefix = path.split("{", 1)[0] if isinstance(path, str) else ""
        if prefix in ("", "/"):
            return None
        prefixes.append(prefix)
    return tuple(prefixes)


def build_app(
    node: Node,
    settings: Settings,
    *,
    owner_token: str | None,
    access: AccessControl,
    extra_routes: Sequence[BaseRoute] = (),
    static_dir: Path | None = STATIC_DIR,
    close_node: bool = True,
    apps: AppDirectory | None = None,
) -> Starlette:
    """The Starlette app serving ``node``.

    Args:
        node: the node (its streams and storage are closed when the app shuts down if ``close_node``).
        settings: limits, buffer sizes, ping interval.
        owner_token: the token that makes a request the owner's (None: no owner, read-only public).
        access: the node's one :class:`AccessControl` (rates, signatures, rules), shared with every
            other transport of the node.
        extra_routes: routes served before the node's own (the peer endpoints); a route cannot be
            added to the app later.
        static_dir: the folder of ``index.html`` / ``statebus.js``, if any.
        close_node: close ``node`` in the lifespan's shutdown.
        apps: the installed apps, each served on its own origin (``app.state.app_origins``; swap the
            directory later with its ``use``).

    The app's ``state`` holds ``node``, ``settings``, ``streams`` (a :class:`StreamRegistry`; call
    ``close_all()`` before a graceful shutdown so open streams end), ``encode_cache`` and ``auth`` (the
    :class:`OwnerAuth`; the connection layer asks it who carries the owner token).
    """
    auth = OwnerAuth(owner_token, access=access, origins=OriginPolicy.of(settings))
    registry = StreamRegistry(
        stall_timeout=settings.stream_stall_timeout, max_client_bytes=settings.max_stream_bytes_per_client
    )
    cache = EncodeCache()
    static = static_dir if static_dir is not None and static_dir.is_dir() else None
    index = static / "index.html" if static is not None else None
    keys = KeyEndpoint(node, settings, auth, registry, cache, index_file=index)
    metrics = NodeMetrics(node, settings, streams=registry)

    async def login_route(request: Request) -> Response:
        return await login(request, auth)

    script_file = static / "statebus.js" if static is not None else None
    app_origins = AppOrigins(settings, auth, apps, script_file)
    routes: list[BaseRoute] = [*extra_routes, Route("/login", login_route, methods=["GET"])]
    routes.extend(app_origins.routes())
    if static is not None:
        script = static / "statebus.js"
        if script.is_file():

            async def statebus_js(request: Request) -> Response:
                return FileResponse(script, media_type="text/javascript; charset=utf-8")

            routes.append(Route("/statebus.js", statebus_js, methods=["GET", "HEAD"]))
        icon = static / "favicon.ico"
        if icon.is_file():

            async def favicon(request: Request) -> Response:  # browsers ask every page for it
                return FileResponse(icon, media_type="image/x-icon", headers={"cache-control": ICON_CACHE})

            routes.append(Route("/favicon.ico", favicon, methods=["GET", "HEAD"]))
        routes.append(Mount("/static", StaticFiles(directory=static), name="static"))
    routes.extend(websocket_routes(node, settings, auth))
    routes.extend(y_websocket_routes(node, settings, auth))
    routes.extend(openapi_routes())
    routes.extend(metrics.routes(auth))
    gated = access.gate(keys)
    key_route = Route("/{path:path}", gated)
    routes.append(key_route)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        install_log_filter()  # at start-up, not at import (statebus.http.pump rule 2)
        log.info("statebus node %s serving", node.local)
        try:
            yield
        finally:
            registry.close_all()
            if close_node:
                await node.aclose()
            log.info("statebus node %s stopped; every acknowledged write is on disk", node.local)

    middleware = [metrics.middleware()]
    app = NodeApp(
        keys=RequestCounter(gated, metrics, on_error=_server_error),
        key_route=key_route,
        middleware_count=len(middleware),
        app_origins=app_origins,
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
    )
    metrics.state = app.state
    app_origins.node_app = app
    app.state.app_origins = app_origins
    app.state.node = node
    app.state.settings = settings
    app.state.streams = registry
    app.state.encode_cache = cache
    app.state.metrics = metrics
    app.state.auth = auth
    return app
