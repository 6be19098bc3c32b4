"""The ASGI gate in front of the key routes (and the websocket): verify signed requests first.

A request carrying ``Signature-Input`` must verify (:class:`~statebus.access.signatures.RequestVerifier`):
its body is read first (at most ``max_body`` bytes, else 413), checked against the signature's
``Content-Digest``, and replayed to the app unchanged. The signer's pubkey goes into the scope as
``scope["statebus.signer"]``, where the HTTP layer's authentication finds it. A request that fails
gets a JSON error (401, 413 or 429) and never reaches the app. Unsigned requests pass untouched.
A websocket handshake may be signed the same way (method ``GET``, the ``ws://`` URL, no body); a
bad signature closes it with 1008 before it is accepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statebus.access.signatures import RequestVerifier, is_signed
from statebus.errors import InvalidValue, RateLimited, StatebusError, TooLarge

SIGNER = "statebus.signer"
"""The scope entry holding the verified signer of a request."""
WS_CLOSE_POLICY = 1008
ADDRESS_COUNTED = "statebus.address_counted"
"""Set in the scope when the gate already counted the request against its address's rate."""


async def read_all(receive: Receive, limit: int) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes (TooLarge)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidValue("the client went away while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then defers to the real one (disconnects)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def send_error(send: Send, exc: StatebusError) -> None:
    """A JSON error response ``{"error", "detail"}`` with the status of ``exc``."""
    status = exc.status_hint if 400 <= exc.status_hint <= 599 else 400
    body = json.dumps({"error": exc.code, "detail": exc.detail or exc.code}).encode("utf-8")
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Signature realm="statebus"'))
    if isinstance(exc, RateLimited):
        headers.append((b"retry-after", str(max(1, round(exc.retry_after))).encode("ascii")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class SignatureGate:
    """Wraps an ASGI app (the key routes) with request-signature verification.

    Args:
        app: the wrapped app.
        verifier: the node's request verifier (nonces, authority, max age).
        max_body: the largest body read for verification (``settings.max_body_bytes``).
        count_address: counts a signed request against its remote address's rate *before* the
            body is read and the signature checked (raises RateLimited), so floods of bad
            signatures are throttled too.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: RequestVerifier,
        max_body: int,
        count_address: Callable[[str | None], None] | None = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.max_body = max_body
        self.count_address = count_address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not is_signed(scope):
            await self.app(scope, receive, send)
            return
        websocket = scope["type"] == "websocket"
        try:
            if self.count_address is not None:
                client = scope.get("client")
                self.count_address(str(client[0]) if client else None)
            body = b"" if websocket else await read_all(receive, self.max_body)
            signer = self.verifier.verify(scope, body)
        except StatebusError as exc:
            if websocket:  # refuse the handshake (the server answers 403)
                await send({"type": "websocket.close", "code": WS_CLOSE_POLICY, "reason": exc.code})
            else:
                await send_error(send, exc)
            return
        if websocket:
            inner_ws: dict[str, Any] = dict(scope)
            inner_ws[SIGNER] = signer
            inner_ws[ADDRESS_COUNTED] = self.count_address is not None
            await self.app(inner_ws, receive, send)
            return
        inner: dict[str, Any] = dict(scope)
        inner[SIGNER] = signer
        inner[ADDRESS_COUNTED] = self.count_address is not None
        await self.app(inner, replay(body, receive), send)
