"""The Starlette app of a node: routes for keys, streams, login, static files and extensions.

:func:`build_app` wires a :class:`~statebus.runtime.Node` and :class:`~statebus.config.Settings` into
routes; the server (``statebus.server.create_app``) builds the node and calls it. Hooks for other
transports:

* ``statebus/http/static/index.html`` is served at ``/`` and ``statebus/http/static/statebus.js`` at
  ``/statebus.js`` when the files exist (everything in that folder also under ``/static/``);
* if the module ``statebus.http.websocket`` exists, its ``routes(node, settings)`` are mounted first.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from statebus.access.control import access_control
from statebus.config import Settings
from statebus.http.auth import OwnerAuth, login
from statebus.http.encode import EncodeCache
from statebus.http.keys import KeyEndpoint
from statebus.http.metrics import NodeMetrics
from statebus.http.openapi import routes as openapi_routes
from statebus.http.subscribe import StreamRegistry
from statebus.runtime import Node

log = logging.getLogger("statebus.http")

STATIC_DIR = Path(__file__).resolve().parent / "static"


def extension_routes(node: Node, settings: Settings) -> list[BaseRoute]:
    """Routes of ``statebus.http.websocket`` (``routes(node, settings)``) when that module exists."""
    if importlib.util.find_spec("statebus.http.websocket") is None:
        return []
    module = importlib.import_module("statebus.http.websocket")
    make: Callable[[Node, Settings], list[BaseRoute]] | None = getattr(module, "routes", None)
    return list(make(node, settings)) if make is not None else []


def build_app(
    node: Node,
    settings: Settings,
    *,
    owner_token: str | None,
    static_dir: Path | None = STATIC_DIR,
    close_node: bool = True,
) -> Starlette:
    """The Starlette app serving ``node``.

    Args:
        node: the node (its streams and storage are closed when the app shuts down if ``close_node``).
        settings: limits, buffer sizes, ping interval.
        owner_token: the token that makes a request the owner's (None: no owner, read-only public).
        static_dir: the folder of ``index.html`` / ``statebus.js``, if any.
        close_node: close ``node`` in the lifespan's shutdown.

    The app's ``state`` holds ``node``, ``settings``, ``streams`` (a :class:`StreamRegistry`; call
    ``close_all()`` before a graceful shutdown so open streams end) and ``encode_cache``.
    """
    access = access_control(node, settings)
    auth = OwnerAuth(owner_token, access=access)
    registry = StreamRegistry()
    cache = EncodeCache()
    static = static_dir if static_dir is not None and static_dir.is_dir() else None
    index = static / "index.html" if static is not None else None
    keys = KeyEndpoint(node, settings, auth, registry, cache, index_file=index)
    metrics = NodeMetrics(node, settings, streams=registry)

    async def login_route(request: Request) -> Response:
        return await login(request, auth)

    routes: list[BaseRoute] = [Route("/login", login_route, methods=["GET"])]
    if static is not None:
        script = static / "statebus.js"
        if script.is_file():

            async def statebus_js(request: Request) -> Response:
                return FileResponse(script, media_type="text/javascript; charset=utf-8")

            routes.append(Route("/statebus.js", statebus_js, methods=["GET", "HEAD"]))
        routes.append(Mount("/static", StaticFiles(directory=static), name="static"))
    routes.extend(extension_routes(node, settings))
    routes.extend(openapi_routes())
    routes.extend(metrics.routes(auth))
    routes.append(Route("/{path:path}", access.gate(keys)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info("statebus node %s serving", node.local)
        try:
            yield
        finally:
            registry.close_all()
            if close_node:
                await node.aclose()
            log.info("statebus node %s stopped; every acknowledged write is on disk", node.local)

    app = Starlette(routes=routes, lifespan=lifespan, middleware=[metrics.middleware()])
    metrics.state = app.state
    app.state.node = node
    app.state.settings = settings
    app.state.streams = registry
    app.state.encode_cache = cache
    app.state.metrics = metrics
    return app
