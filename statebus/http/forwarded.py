"""The client's address and scheme behind trusted reverse proxies, written into the ASGI scope.

Every per-address limit (request rates, open streams, the websocket's budgets) reads
``scope["client"]``. Behind nginx that is the proxy's address for everyone, so one client's streams
would count against every other client. :class:`ForwardedClient` replaces it, for requests that
arrive from a trusted proxy only, with the client named by ``X-Forwarded-For`` (the right-most
address that is not a trusted proxy), and the scheme with ``X-Forwarded-Proto``. From any other
peer both headers are ignored.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from statebus.access.proxies import TrustedProxies


class ForwardedClient:
    """ASGI middleware: ``scope["client"]`` and ``scope["scheme"]`` as the trusted proxies report them."""

    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            peer_addr = scope.get("client")
            peer: str | None = peer_addr[0] if peer_addr else None
            if self.proxies.trusts(peer):
                forwarded: list[str] = []
                proto: str | None = None
                for name, value in scope["headers"]:
                    if name == b"x-forwarded-for":
                        forwarded.append(value.decode("latin-1"))
                    elif name == b"x-forwarded-proto":
                        proto = value.decode("latin-1")
                scope = dict(scope)
                client = self.proxies.client(peer, forwarded)
                scope["client"] = (client, 0) if client is not None else None
                scheme = self.proxies.scheme(peer, proto)
                if scheme is not None:
                    scope["scheme"] = scheme if scope["type"] == "http" else scheme.replace("http", "ws")
        await self.app(scope, receive, send)
