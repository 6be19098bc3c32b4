"""``GET /.well-known/statebus``: who this node is (for the web page, the CLI's ``info`` and peers).

Anyone gets ``{"statebus": true, "node": <pubkey>, "owner": false, "version": <package version>}``;
the owner also gets ``keys`` (how many keys the node's namespace holds, counted up to
:data:`MAX_COUNT`; ``keys_truncated`` says when there are more), ``streams`` (open event streams) and
``storage``: ``"ok"``, ``"failing"`` (a commit failed, disk full: writes get 503 until one succeeds)
or ``"behind"`` (the store holds less than this node committed: local writes get 409 until a restore).
Nothing secret is ever in it.

Mount it with ``routes(node, settings)`` (a list of Starlette routes, placed before the key routes).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from statebus.config import Settings
from statebus.errors import NotFound, StatebusError
from statebus.http.auth import OwnerAuth
from statebus.http.errors import statebus_error_response
from statebus.http.origins import OriginPolicy
from statebus.identity import keystore
from statebus.runtime import Node
from statebus.types import PubKey
from statebus.values import dumps_json

INFO_PATH: Final = "/.well-known/statebus"
MAX_COUNT: Final = 100_000


def package_version() -> str:
    """The installed statebus version (``unknown`` when run from a source tree without metadata)."""
    try:
        return metadata.version("statebus-server")
    except metadata.PackageNotFoundError:
        return "unknown"


def owner_auth(settings: Settings, node: PubKey | None = None) -> OwnerAuth:
    """The owner check of the node in ``settings.data_dir`` (no owner if it has no token); ``node``
    is its pubkey (read from the identity there when not given), which names its login cookie."""
    origins = OriginPolicy.of(settings)
    if node is None:
        try:
            node = keystore.load(settings.data_dir).pubkey
        except NotFound:
            node = None
    try:
        return OwnerAuth(keystore.load_owner_token(settings.data_dir), node=node, origins=origins)
    except NotFound:
        return OwnerAuth(None, node=node, origins=origins)


def node_info(node: Node, *, owner: bool) -> dict[str, Any]:
    """The info document; ``owner`` adds the key and stream counts."""
    body: dict[str, Any] = {
        "statebus": True,
        "node": node.local,
        "owner": owner,
        "version": package_version(),
    }
    if owner:
        keys = node.walk(node.parse("/~/"), MAX_COUNT + 1)
        body["keys"] = min(len(keys), MAX_COUNT)
        body["keys_truncated"] = len(keys) > MAX_COUNT
        body["streams"] = node.stream_count
        body["storage"] = storage_state(node)
    return body


def storage_state(node: Node) -> str:
    """``ok``, ``failing`` (a commit failed and none succeeded since) or ``behind`` (a lost store)."""
    if not node.healthy:
        return "failing"
    if node.local_refused is not None:
        return "behind"
    return "ok"


def routes(node: Node, auth: OwnerAuth) -> list[BaseRoute]:
    """The info route for ``node``; ``auth`` (the app's) says who is the owner."""

    async def info(request: Request) -> Response:
        try:
            client = auth.authenticate(request)
        except StatebusError as exc:
            return statebus_error_response(exc)
        return Response(
            dumps_json(node_info(node, owner=client.owner)),
            media_type="application/json",
            headers={"cache-control": "no-store"},
        )

    return [Route(INFO_PATH, info, methods=["GET", "HEAD"])]
