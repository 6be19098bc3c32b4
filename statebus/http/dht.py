"""The node's DHT record over HTTP: what it published, and lookups of other public keys.

    GET /.well-known/statebus/dht            this node's record as published, with when and to how
                                             many DHT nodes it was stored (anyone; ``{"dht": null,
                                             "record": null}`` when the node is in no DHT)
    GET /.well-known/statebus/dht/<pubkey>   the newest record of ``pubkey`` the DHT holds (anyone,
                                             rate-limited; 400 ``invalid_key`` for a malformed key,
                                             404 when the DHT has none, 429 past the lookup cap)

Both are public: the DHT serves the same signed records to any member. Each request counts against
the client's rate (``rate_limit_per_ip``; the owner is exempt) before any lookup, and lookups are
capped by :class:`DhtService`. This module does not import ``statebus.federation`` (layering): the
server passes the service (``statebus.federation.dht_view.DhtView``).

Rules:
    1. Nothing here writes: a request reads the directory's state or asks the DHT, nothing more.
    2. Every refusal is JSON ``{error, detail}`` with a 4xx status (a slow DHT is 502).
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from statebus.errors import NotFound, StatebusError
from statebus.http.auth import OwnerAuth
from statebus.http.errors import statebus_error_response
from statebus.values import dumps_json

DHT_PATH = "/.well-known/statebus/dht"
_HEADERS = {"cache-control": "no-store"}


class DhtService(Protocol):
    """What the routes read (``statebus.federation.dht_view.DhtView``)."""

    def own(self) -> dict[str, Any]:
        """This node's record as published, with the publisher's counters."""
        ...

    async def lookup(self, pubkey: str) -> dict[str, Any] | None:
        """The newest record of ``pubkey`` in the DHT, or None."""
        ...


def routes(service: DhtService | None) -> list[BaseRoute]:
    """The DHT routes; ``service`` None: the node is in no DHT (a null record; lookups 404)."""

    def client(request: Request) -> DhtService | None:
        auth: OwnerAuth = request.app.state.auth
        auth.authenticate(request)  # counts the request against its rate (the owner is exempt)
        return service

    async def own(request: Request) -> Response:
        try:
            dht = client(request)
        except StatebusError as exc:
            return statebus_error_response(exc)
        body: dict[str, Any] = dht.own() if dht is not None else {"dht": None, "record": None}
        return Response(dumps_json(body), media_type="application/json", headers=_HEADERS)

    async def lookup(request: Request) -> Response:
        pubkey = request.path_params["pubkey"]
        try:
            dht = client(request)
            if dht is None:
                raise NotFound("this node is in no DHT (it runs without one)")
            found = await dht.lookup(pubkey)
            if found is None:
                raise NotFound(f"the DHT holds no record of {pubkey}")
        except StatebusError as exc:
            return statebus_error_response(exc)
        return Response(dumps_json(found), media_type="application/json", headers=_HEADERS)

    return [
        Route(DHT_PATH, own, methods=["GET", "HEAD"]),
        Route(DHT_PATH + "/{pubkey}", lookup, methods=["GET"]),
    ]
