"""NodeApp: key requests take the short way past Starlette's stack; everything else does not."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from statebus.access.control import AccessControl
from statebus.config import Settings
from statebus.http.app import NodeApp, build_app
from statebus.server import build_node, create_app, owner_token

Message = MutableMapping[str, Any]
Headers = list[tuple[bytes, bytes]]


async def call(
    app: NodeApp, method: str, path: str, body: bytes = b"", headers: Headers | None = None
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request straight into the ASGI app: (status, headers, body)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 5000),
        "headers": [(b"host", b"127.0.0.1:8000"), *(headers or [])],
    }
    sent = False
    out: list[Message] = []

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        out.append(message)

    await app(scope, receive, send)
    start = out[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in out[1:])


def run_with_app(
    tmp_path: Path,
    test: Callable[[NodeApp, Headers], Awaitable[None]],
    extra_routes: Sequence[BaseRoute] = (),
) -> None:
    """Run ``test`` on the app ``statebus serve`` ships (with ``extra_routes`` given to ``build_app``)."""
    settings = Settings(data_dir=tmp_path / "node")

    async def main() -> None:
        if extra_routes:
            node = build_node(settings)
            app: Any = build_app(
                node,
                settings,
                owner_token=owner_token(settings),
                access=AccessControl(node, settings),
                extra_routes=extra_routes,
            )
        else:
            app = create_app(settings)
        assert isinstance(app, NodeApp)
        auth = [(b"authorization", b"Bearer " + owner_token(settings).encode())]
        try:
            await test(app, auth)
        finally:
            await app.state.node.aclose()

    asyncio.run(main())


def test_key_requests_do_not_build_starlettes_stack(tmp_path: Path) -> None:
    async def test(app: NodeApp, auth: Headers) -> None:
        status, _, body = await call(app, "PUT", "/~/a/b", b'{"x": 1}', auth)
        assert status == 200, body
        assert json.loads(body)["seq"] >= 1
        status, _, body = await call(app, "GET", "/~/a/b", headers=auth)
        assert (status, json.loads(body)) == (200, {"x": 1})
        assert app.middleware_stack is None  # never needed: both went the short way
        assert app.state.metrics.requests == {("PUT", "2xx"): 1, ("GET", "2xx"): 1}
        status, _, _ = await call(app, "GET", "/metrics", headers=auth)
        assert status == 200
        assert app.middleware_stack is not None
        assert app.state.metrics.requests[("GET", "2xx")] == 2

    run_with_app(tmp_path, test)


def test_other_routes_and_extra_routes_are_served_by_them(tmp_path: Path) -> None:
    async def special(request: Request) -> Response:
        return PlainTextResponse("special")

    async def test(app: NodeApp, auth: Headers) -> None:
        prefixes = app.reserved_prefixes()
        assert prefixes is not None and "/login" in prefixes and "/metrics" in prefixes
        assert "/~/special" in prefixes
        status, _, body = await call(app, "GET", "/~/special", headers=auth)
        assert (status, body) == (200, b"special")
        status, _, body = await call(app, "GET", "/login")  # no token: the login route's 401
        assert status == 401 and "login link" in json.loads(body)["detail"]
        status, _, body = await call(app, "PUT", "/~/a", b"1", auth)
        assert status == 200, body

    run_with_app(tmp_path, test, [Route("/~/special", special)])


def test_a_route_without_a_literal_prefix_turns_the_short_way_off(tmp_path: Path) -> None:
    async def other(request: Request) -> Response:
        return PlainTextResponse("other")

    async def test(app: NodeApp, auth: Headers) -> None:
        assert app.reserved_prefixes() is None
        status, _, body = await call(app, "GET", "/x/other", headers=auth)
        assert (status, body) == (200, b"other")
        status, _, body = await call(app, "PUT", "/~/a", b"1", auth)
        assert status == 200, body
        assert app.middleware_stack is not None

    run_with_app(tmp_path, test, [Route("/{name}/other", other)])


def test_an_unexpected_error_is_a_json_500_counted_and_raised(tmp_path: Path) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("a bug")

    async def test(app: NodeApp, auth: Headers) -> None:
        app.keys.app.app = broken  # type: ignore[attr-defined]  # behind the counter and the gate
        out: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"1", "more_body": False}

        async def send(message: Message) -> None:
            out.append(message)

        scope = {"type": "http", "method": "PUT", "path": "/~/a", "headers": auth, "query_string": b""}
        with pytest.raises(ValueError, match="a bug"):  # raised on, as Starlette's stack does
            await app(scope, receive, send)
        assert app.state.metrics.requests == {("PUT", "5xx"): 1}
        assert out[0]["status"] == 500
        assert json.loads(out[1]["body"]) == {
            "error": "internal_error",
            "detail": "the server failed to handle this request",
        }

    run_with_app(tmp_path, test)
