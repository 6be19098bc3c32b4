"""Reference servers on the same uvicorn options as the node (``python -m bench.reference KIND``).

* ``hello`` — a raw-ASGI hello world: the ceiling of a request on this machine with uvicorn,
  uvloop and httptools. Every node figure is also given as a ratio to its request rate.
* ``pubsub`` — a minimal Starlette + sse-starlette pub/sub: ``PUT /pub`` (a JSON body) goes to
  every ``GET /sub`` stream as ``id: <n>`` + ``data: <body>``. No storage, no durability: the
  fan-out the node is compared with.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from bench.procs import raise_fd_limit
from bench.serve_common import UVICORN_OPTIONS, announce, listen

HELLO = b"Hello, world!"
HELLO_HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(HELLO)).encode())]


async def hello_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Raw ASGI: answer every request with 13 bytes; drain a request body if there is one."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["method"] in ("PUT", "POST"):
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HELLO_HEADERS})
    await send({"type": "http.response.body", "body": HELLO})


def pubsub_app() -> Any:
    """Starlette + sse-starlette: one asyncio.Queue per subscriber, PUT /pub puts into each."""
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    queues: set[asyncio.Queue[tuple[int, str]]] = set()
    counter = [0]

    async def pub(request: Request) -> Response:
        body = (await request.body()).decode()
        counter[0] += 1
        for q in queues:
            q.put_nowait((counter[0], body))
        return Response(b'{"ok":true}', media_type="application/json")

    async def sub(request: Request) -> EventSourceResponse:
        q: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
        queues.add(q)

        async def events() -> AsyncIterator[dict[str, Any]]:
            try:
                yield {"id": str(counter[0]), "data": '{"seq":0,"ts":0}'}
                while True:
                    n, body = await q.get()
                    yield {"id": str(n), "data": body}
            finally:
                queues.discard(q)

        return EventSourceResponse(events(), ping=15)

    return Starlette(routes=[Route("/pub", pub, methods=["PUT"]), Route("/sub", sub)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["hello", "pubsub"])
    args = parser.parse_args()
    raise_fd_limit()
    app = hello_app if args.kind == "hello" else pubsub_app()
    sock = listen()
    config = uvicorn.Config(app, lifespan="on" if args.kind == "hello" else "off", **UVICORN_OPTIONS)
    server = uvicorn.Server(config)
    announce(sock)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
