"""``POST /.well-known/statebus/blob-fetch?target=KEY|SHA256``: the owner asks its node to fetch a blob now.

What ``statebus blob fetch`` calls. The node fetches it as its followers do (``Federation.fetch_blob``:
its swarm first, with the offer of the node the pointer came from and the DHT's seeders, then HTTP),
checked against the signed pointer, and keeps it (and seeds it, with a swarm). The answer streams
one JSON object a line (``application/x-ndjson``)::

    {"done": 1048576, "total": 3145728, "peers": 2}                     progress, about 4 a second
    {"hash": "<sha256>", "size": 3145728, "via": "swarm"}               the last line: local, swarm or http
    {"error": "bad_blob", "detail": "..."}                              or the last line: it failed

Rules:

1. The owner only (403 otherwise). A target that is neither a key pointing to a blob nor a sha256 is
   refused before the stream starts, with the usual JSON error and a 4xx; nothing is fetched.
2. A failure after the stream started is its last line; nothing of a failed fetch is kept.
3. The client going away cancels the fetch (nothing is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from statebus.blobs import BlobInfo, BlobPointer
from statebus.errors import Forbidden, InvalidValue, StatebusError
from statebus.http.auth import OwnerAuth
from statebus.http.errors import statebus_error_response

BLOB_FETCH_PATH = "/.well-known/statebus/blob-fetch"
Progress = Callable[[int, int, int], None]
"""``progress(done_bytes, total_bytes, peers)``."""
PROGRESS_EVERY = 0.25
"""Seconds between two progress lines."""


class BlobFetchService(Protocol):
    """What the route needs of federation (``statebus.federation.service.Federation``)."""

    def blob_target(self, target: str) -> tuple[str, BlobPointer, str | None]: ...

    async def fetch_blob(self, target: str, progress: Progress | None = None) -> tuple[BlobInfo, str]: ...


def _line(obj: dict[str, object]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class BlobFetchRoute:
    def __init__(self, service: BlobFetchService) -> None:
        self.service = service

    async def fetch(self, request: Request) -> Response:
        try:
            auth: OwnerAuth = request.app.state.auth
            if not auth.authenticate(request).owner:
                raise Forbidden("only the node's owner asks it to fetch blobs")
            target = request.query_params.get("target", "")
            if not target:
                raise InvalidValue("name the blob: ?target=<key that points to it> or ?target=<sha256>")
            self.service.blob_target(target)  # rule 1: refused before the stream starts
        except StatebusError as exc:
            return statebus_error_response(exc)
        return StreamingResponse(self._stream(target), media_type="application/x-ndjson")

    async def _stream(self, target: str) -> AsyncIterator[bytes]:
        lines: asyncio.Queue[bytes] = asyncio.Queue()
        shown = 0.0

        def progress(done: int, total: int, peers: int) -> None:
            nonlocal shown
            now = time.monotonic()
            if now - shown >= PROGRESS_EVERY or (total and done >= total):
                shown = now
                lines.put_nowait(_line({"done": done, "total": total, "peers": peers}))

        async def run() -> None:
            try:
                info, via = await self.service.fetch_blob(target, progress)
                lines.put_nowait(_line({"hash": info.hash, "size": info.size, "via": via}))
            except StatebusError as exc:
                lines.put_nowait(_line({"error": exc.code, "detail": exc.detail or exc.code}))

        task = asyncio.ensure_future(run())
        try:
            while not task.done() or not lines.empty():
                getter = asyncio.ensure_future(lines.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
        finally:  # rule 3: the client went away
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def blob_fetch_routes(service: BlobFetchService) -> list[BaseRoute]:
    """The route above; give it to ``build_app(extra_routes=…)``."""
    return [Route(BLOB_FETCH_PATH, BlobFetchRoute(service).fetch, methods=["POST"])]
