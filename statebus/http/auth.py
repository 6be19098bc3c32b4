"""Who is asking, and what they may do: the owner (by token) or an anonymous client.

The owner presents the owner token (``<data>/identity/owner_token``) as
``Authorization: Bearer <token>`` or in the ``statebus_token`` cookie that ``GET /login?token=…`` sets
(HttpOnly, SameSite=Strict). Tokens are compared in constant time and never logged or echoed.

With an :class:`~statebus.access.control.AccessControl` (``OwnerAuth(token, access=…)``, as the app
builds it) a client is also identified by its request signature (the gate in
:mod:`statebus.access.gate` verifies it), counted against the rate limits, and every decision is the
namespace's ACL (docs/access-control.md). Without one (unit tests), the placeholder rule holds: the
owner may do anything; anyone may read keys under ``/<namespace>/public/``; nobody else may write.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import HTTPConnection, Request, cookie_parser
from starlette.responses import RedirectResponse, Response

from statebus.access.control import AccessControl
from statebus.access.gate import ADDRESS_COUNTED, SIGNER
from statebus.errors import Forbidden
from statebus.http.errors import statebus_error_response
from statebus.keys import segments
from statebus.runtime import Node
from statebus.types import Key, PubKey

COOKIE_NAME = "statebus_token"
COOKIE_MAX_AGE = 30 * 24 * 3600
PUBLIC_SEGMENT = "public"
MAX_TOKEN_CHARS = 512
OWNER_CLIENTS = 256
"""Addresses whose owner :class:`Client` is kept for reuse (then the cache starts over)."""


@dataclass(frozen=True, slots=True)
class Client:
    """The party behind a request."""

    owner: bool = False
    """True when the request carried the owner token (or was signed with the node key)."""
    pubkey: PubKey | None = None
    """The client's key: the node key for the owner, the signer of a signed request, else None."""
    address: str | None = None
    """The remote IP address (rate limits and subscription counts of anonymous clients)."""
    access: AccessControl | None = field(default=None, compare=False, repr=False)
    """The node's access control (None: the placeholder rule below)."""

    @property
    def anonymous(self) -> bool:
        return not self.owner and self.pubkey is None

    def stream_node(self, node: Node) -> Node:
        """The node this client's streams are opened on: ACL-filtered and counted under access control."""
        if self.access is None:
            return node
        counted = None if self.owner else self.pubkey or f"ip:{self.address}"
        return self.access.node_for(self.pubkey, counted)


ANONYMOUS = Client(owner=False)
OWNER = Client(owner=True)


class OwnerAuth:
    """Checks requests for the owner token.

    Args:
        token: the owner token, or None when the node has none (then nobody is the owner).
    """

    def __init__(self, token: str | None, access: AccessControl | None = None) -> None:
        self._token = token.encode("utf-8") if token else None
        self.access = access
        self._owners: dict[str | None, Client] = {}

    def __repr__(self) -> str:
        return "OwnerAuth(token=***)" if self._token else "OwnerAuth(token=None)"

    def check_token(self, presented: str) -> bool:
        """Constant-time comparison of ``presented`` with the owner token."""
        if self._token is None or not presented or len(presented) > MAX_TOKEN_CHARS:
            return False
        return hmac.compare_digest(self._token, presented.encode("utf-8", "replace"))

    def owner_client(self, address: str | None = None) -> Client:
        """The owner as a client (with the access control, when there is one)."""
        if self.access is None:
            return OWNER
        client = self._owners.get(address)  # a Client is immutable: one per address will do
        if client is None:
            if len(self._owners) >= OWNER_CLIENTS:
                self._owners.clear()
            client = Client(owner=True, pubkey=self.access.local, address=address, access=self.access)
            self._owners[address] = client
        return client

    def authenticate(self, conn: HTTPConnection) -> Client:
        """The client of a request or websocket, counted against the rate limits (owner exempt).

        Raises:
            Forbidden: (401) an ``Authorization`` header that is not a valid owner token. A stale
                cookie is ignored (the client is anonymous) so public pages keep working.
            RateLimited: (429) the client's key or address is over its rate.
        """
        return self.authenticate_scope(conn.scope, conn.headers)

    def authenticate_scope(self, scope: Mapping[str, Any], headers: Mapping[str, str]) -> Client:
        """:meth:`authenticate` for an ASGI ``scope`` whose ``headers`` the caller already read
        (lowercase names; the first value of a repeated header)."""
        owner = self._is_owner(headers)
        if self.access is None:
            return OWNER if owner else ANONYMOUS
        peer = scope.get("client")
        address: str | None = peer[0] if peer else None
        signer = scope.get(SIGNER)
        pubkey = self.access.local if owner else signer if isinstance(signer, str) else None
        self.access.hit(pubkey, None if scope.get(ADDRESS_COUNTED) else address)
        if pubkey == self.access.local:
            return self.owner_client(address)
        return Client(owner=False, pubkey=pubkey, address=address, access=self.access)

    def presents_owner_token(self, headers: Mapping[str, str]) -> bool:
        """Whether ``headers`` (lowercase names) carry the owner token; a wrong one is just False.
        The connection layer asks this to let the owner in on the connections kept for them."""
        try:
            return self._is_owner(headers)
        except Forbidden:
            return False

    def _is_owner(self, headers: Mapping[str, str]) -> bool:
        header = headers.get("authorization")
        if header is not None:
            scheme, _, credentials = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not self.check_token(credentials.strip()):
                raise Forbidden("the Authorization header does not hold a valid owner token", status_hint=401)
            return True
        raw = headers.get("cookie")
        cookie = cookie_parser(raw).get(COOKIE_NAME) if raw else None
        return bool(cookie and self.check_token(cookie))


def is_public(key: Key) -> bool:
    """Whether ``key`` (normalised) lies under ``/<namespace>/public/``."""
    parts = segments(key)
    return len(parts) >= 2 and parts[1] == PUBLIC_SEGMENT and (len(parts) > 2 or key.endswith("/"))


def can_read(client: Client, key: Key) -> bool:
    """May ``client`` read ``key`` (``list`` rights for a subtree)? The namespace's ACL decides."""
    if client.access is not None:
        return client.access.may_read(client.pubkey, key)
    return client.owner or is_public(key)


def can_write(client: Client, key: Key) -> bool:
    """May ``client`` write ``key`` (ops authored by its key)? The namespace's ACL decides."""
    if client.access is not None:
        return client.access.may_write(client.pubkey, key)
    return client.owner


def _denied(client: Client, what: str) -> Forbidden:
    if client.anonymous:
        return Forbidden(f"sign in to {what}: send Authorization: Bearer <owner token>", status_hint=401)
    return Forbidden(f"this client may not {what}")


def require_read(client: Client, key: Key) -> None:
    """Raise Forbidden (401 anonymous, 403 otherwise) unless ``client`` may read ``key``."""
    if client.access is not None:
        client.access.require(client.access.action_of(key), client.pubkey, key)
    elif not can_read(client, key):
        raise _denied(client, f"read {key}")


def require_write(client: Client, key: Key) -> None:
    """Raise Forbidden (401 anonymous, 403 otherwise) unless ``client`` may write ``key``."""
    if client.access is not None:
        client.access.require("write", client.pubkey, key)
    elif not can_write(client, key):
        raise _denied(client, f"write {key}")


async def login(request: Request, auth: OwnerAuth) -> Response:
    """``GET /login?token=…``: a valid token sets the ``statebus_token`` cookie and redirects to ``/``.

    A wrong token gets 401 and no cookie; the token is never echoed.
    """
    values = parse_qs(request.url.query, keep_blank_values=True).get("token", [])
    token = values[0] if len(values) == 1 else ""
    if not auth.check_token(token):
        return statebus_error_response(
            Forbidden("the login link is not valid (wrong or old token)", status_hint=401)
        )
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "no-referrer"
    return response
