"""ASGI request scopes as uvicorn builds them, for driving a node's app in process (tests, bench)."""

from __future__ import annotations

from typing import Any

HOST = b"127.0.0.1:8765"


def http_scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The ASGI ``http`` scope of ``method path`` from 127.0.0.1 with ``headers`` (after ``host``)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8765),
        "client": ("127.0.0.1", 5555),
        "headers": [(b"host", HOST), *headers],
        "state": {},
    }


def sse_scope(path: str, token: str) -> dict[str, Any]:
    """An owner's ``GET path`` asking for Server-Sent Events."""
    return http_scope(
        "GET", path, [(b"accept", b"text/event-stream"), (b"authorization", b"Bearer " + token.encode())]
    )


def put_scope(path: str, token: str, body: bytes) -> dict[str, Any]:
    """An owner's ``PUT path`` of a JSON ``body``, as uvicorn builds it for the load generator."""
    return http_scope(
        "PUT",
        path,
        [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
            (b"authorization", b"Bearer " + token.encode()),
        ],
    )
