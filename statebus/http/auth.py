"""Who is asking, and what they may do: the owner (by token) or an anonymous client.

The owner presents the owner token (``<data>/identity/owner_token``) as
``Authorization: Bearer <token>``, or the login cookie that ``GET /login?token=…`` sets (HttpOnly,
SameSite=Strict). The cookie is the node's own: its name is ``statebus_<first 16 characters of the
node's pubkey>`` (``__Host-statebus_…``, Secure, where the browser reaches the node over TLS), and its
value is derived from the token and the pubkey (:func:`cookie_value`), so two nodes on one host keep
separate logins and neither ever receives the other's token. A cookie-authenticated write (any
method but GET/HEAD/OPTIONS) must come from one of the node's own origins
(:class:`~statebus.http.origins.OriginPolicy`); the websocket checks ``Origin`` on every handshake.
Tokens are compared in constant time and never logged or echoed.

With an :class:`~statebus.access.control.AccessControl` (``OwnerAuth(token, access=…)``, as the app
builds it) a client is also identified by its request signature (the gate in
:mod:`statebus.access.gate` verifies it), counted against the rate limits, and every decision is the
namespace's ACL (docs/access-control.md). Without one (unit tests), the placeholder rule holds: the
owner may do anything; anyone may read keys under ``/<namespace>/public/``; nobody else may write.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import HTTPConnection, Request, cookie_parser
from starlette.responses import RedirectResponse, Response

from statebus.access.capabilities import Capability
from statebus.access.control import AccessControl
from statebus.access.gate import ADDRESS_COUNTED, SIGNER
from statebus.errors import SIGN_IN_HINT, Forbidden, OutsideGrant, Unauthorized
from statebus.http.errors import statebus_error_response
from statebus.http.origins import SAFE_METHODS, OriginPolicy
from statebus.keys import segments
from statebus.runtime import Node, OpenEvents
from statebus.types import Key, PubKey

COOKIE_PREFIX = "statebus_"
SECURE_PREFIX = "__Host-"
COOKIE_ID_CHARS = 16
LEGACY_COOKIE = "statebus_token"
"""The one cookie name every node used before (it carried the raw token to every node on a host):
login clears it."""
COOKIE_MAX_AGE = 30 * 24 * 3600
PUBLIC_SEGMENT = "public"
MAX_TOKEN_CHARS = 512
APP_SCOPE = "statebus.app"
"""ASGI scope entry naming the installed app whose origin a request reached (set by
:mod:`statebus.http.app_origin`): such a request is authenticated by that app's capability only."""
APP_COOKIE_PREFIX = "statebus_app_"
OWNER_CLIENTS = 256
"""Addresses whose owner :class:`Client` is kept for reuse (then the cache starts over)."""


def cookie_name(node: PubKey, *, secure: bool) -> str:
    """The login cookie's name on node ``node``: ``statebus_<16 chars>``, ``__Host-`` first over TLS."""
    return (SECURE_PREFIX if secure else "") + COOKIE_PREFIX + node[:COOKIE_ID_CHARS]


def cookie_value(token: str, node: PubKey) -> str:
    """The login cookie's value: an HMAC of ``node`` under the owner token (not the token itself)."""
    mac = hmac.new(token.encode("utf-8"), b"statebus login cookie\x00" + node.encode("utf-8"), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode("ascii")


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
    app: Capability | None = field(default=None, compare=False)
    """An installed app's page, acting with its capability: the owner's key, inside the app's grants
    only (:mod:`statebus.access.capabilities`); its writes are the owner's, signed by the node."""

    @property
    def anonymous(self) -> bool:
        return not self.owner and self.pubkey is None

    @property
    def writes_as_owner(self) -> bool:
        """Whether the node writes for this client as its owner (the owner, or an app's capability)."""
        return self.owner or self.app is not None

    def open_events(self, node: Node) -> OpenEvents:
        """How this client's streams are opened on ``node``: ACL-filtered and counted under access
        control (``node.events`` itself without it); an app's are cut when its capability is revoked."""
        if self.access is None:
            return node.events
        if self.app is not None:
            opener = self.access.opener(self.pubkey, f"app:{self.app.app}")
            return self.access.capabilities.opener(self.app, opener)
        counted = None if self.owner else self.pubkey or f"ip:{self.address}"
        return self.access.opener(self.pubkey, counted)


ANONYMOUS = Client(owner=False)
OWNER = Client(owner=True)


class OwnerAuth:
    """Checks requests for the owner token.

    Args:
        token: the owner token, or None when the node has none (then nobody is the owner).
    """

    def __init__(
        self,
        token: str | None,
        access: AccessControl | None = None,
        *,
        node: PubKey | None = None,
        origins: OriginPolicy | None = None,
    ) -> None:
        self._token = token.encode("utf-8") if token else None
        self.access = access
        self.node = node if node is not None else access.local if access is not None else None
        self.origins = origins if origins is not None else OriginPolicy()
        self._cookie = cookie_value(token, self.node).encode("ascii") if token and self.node else None
        self._owners: dict[str | None, Client] = {}

    def __repr__(self) -> str:
        return "OwnerAuth(token=***)" if self._token else "OwnerAuth(token=None)"

    def check_token(self, presented: str) -> bool:
        """Constant-time comparison of ``presented`` with the owner token."""
        if self._token is None or not presented or len(presented) > MAX_TOKEN_CHARS:
            return False
        return hmac.compare_digest(self._token, presented.encode("utf-8", "replace"))

    def check_cookie(self, presented: str) -> bool:
        """Constant-time comparison of ``presented`` with this node's login cookie value."""
        if self._cookie is None or not presented or len(presented) > MAX_TOKEN_CHARS:
            return False
        return hmac.compare_digest(self._cookie, presented.encode("utf-8", "replace"))

    def cookie_name(self, scope: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
        """The login cookie's name for this request (None: the node has no identity)."""
        if self.node is None:
            return None
        return cookie_name(self.node, secure=self.origins.is_secure(scope, headers))

    def check_origin(self, conn: HTTPConnection) -> None:
        """Refuse (Forbidden, 403) a request or websocket handshake from another origin's page."""
        if self.origins.foreign_origin(conn.scope, conn.headers):
            raise Forbidden(
                "this node accepts websockets from its own pages only (Origin is not this node's)"
            )

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
        app = scope.get(APP_SCOPE)
        if app is not None:
            return self.app_client(scope, headers, app)
        how = self._owner_by(scope, headers)
        if (
            how == "cookie"
            and scope.get("type") == "http"
            and str(scope.get("method", "GET")).upper() not in SAFE_METHODS
            and self.origins.foreign_origin(scope, headers)
        ):
            raise Forbidden(
                "a write with the login cookie must come from this node's own pages (the request came"
                " from another origin); other clients send Authorization: Bearer or sign the request"
            )
        owner = how is not None
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

    def app_cookie_name(self, scope: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
        """The capability cookie's name on an app's origin: ``statebus_app_<16 chars of the node's
        pubkey>`` (``__Host-`` first over TLS), so two nodes on one host keep their apps apart."""
        if self.node is None:
            return None
        secure = self.origins.is_secure(scope, headers)
        return (SECURE_PREFIX if secure else "") + APP_COOKIE_PREFIX + self.node[:COOKIE_ID_CHARS]

    def app_client(self, scope: Mapping[str, Any], headers: Mapping[str, str], app: str) -> Client:
        """The client of a request on installed app ``app``'s origin: its capability cookie, and
        nothing else (no owner token, no login cookie, no request signature), from that origin's own
        pages only.

        Raises:
            Forbidden: (401) no live capability, an ``Authorization`` header; (403) another origin.
            OutsideGrant: (403) the capability is another app's.
        """
        if self.access is None:
            raise Unauthorized("this node serves no apps (it has no access control)")
        if "authorization" in headers:
            raise Unauthorized(
                "an app's origin takes no Authorization header: its page acts with its capability only"
            )
        secure = self.origins.is_secure(scope, headers)  # behind a TLS proxy the page's origin is https
        if self.origins.foreign_origin({**scope, "scheme": "https"} if secure else scope, headers):
            raise Forbidden(f"app {app}'s origin answers its own pages only (the request came from another)")
        raw = headers.get("cookie")
        name = self.app_cookie_name(scope, headers)
        secret = cookie_parser(raw).get(name) if raw and name else None
        cap = self.access.capabilities.verify(secret) if secret else None
        if cap is None:
            raise Unauthorized(
                f"no live capability for app {app}: open it from the node's page (its launch link)"
            )
        if cap.app != app:
            raise OutsideGrant(f"this capability belongs to app {cap.app}, not to app {app}")
        peer = scope.get("client")
        address: str | None = peer[0] if peer else None
        self.access.hit(None, None if scope.get(ADDRESS_COUNTED) else address)
        return Client(owner=False, pubkey=self.access.local, address=address, access=self.access, app=cap)

    def presents_owner_token(self, headers: Mapping[str, str]) -> bool:
        """Whether ``headers`` (lowercase names) carry the owner token or the login cookie; a wrong
        one is just False. The connection layer asks this, before any ASGI scope exists, to let the
        owner in on the connections kept for them, so either name of the cookie counts."""
        try:
            if self._owner_by({"scheme": "http"}, headers) is not None:
                return True
        except Forbidden:
            return False
        raw = headers.get("cookie")
        if not raw or self._cookie is None or self.node is None:
            return False
        cookie = cookie_parser(raw).get(cookie_name(self.node, secure=True))
        return bool(cookie and self.check_cookie(cookie))

    def _owner_by(self, scope: Mapping[str, Any], headers: Mapping[str, str]) -> str | None:
        """How the request proves it is the owner's: ``"bearer"``, ``"cookie"``, or None."""
        header = headers.get("authorization")
        if header is not None:
            scheme, _, credentials = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not self.check_token(credentials.strip()):
                raise Unauthorized(
                    f"the Authorization header does not hold a valid owner token. {SIGN_IN_HINT}"
                )
            return "bearer"
        raw = headers.get("cookie")
        if not raw or self._cookie is None:
            return None
        name = self.cookie_name(scope, headers)
        cookie = cookie_parser(raw).get(name) if name is not None else None
        return "cookie" if cookie and self.check_cookie(cookie) else None


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
        return Unauthorized(f"sign in to {what}. {SIGN_IN_HINT}")
    return Forbidden(f"this client may not {what}")


def require_read(client: Client, key: Key) -> None:
    """Raise Forbidden (401 anonymous, 403 otherwise) unless ``client`` may read ``key``; an app's
    capability also needs ``key`` inside its read grants (403 ``outside_grant``)."""
    if client.app is not None and client.access is not None:
        client.access.capabilities.require(client.app, client.access.action_of(key), key)
    if client.access is not None:
        client.access.require(client.access.action_of(key), client.pubkey, key)
    elif not can_read(client, key):
        raise _denied(client, f"read {key}")


def require_write(client: Client, key: Key) -> None:
    """Raise Forbidden (401 anonymous, 403 otherwise) unless ``client`` may write ``key``; an app's
    capability also needs ``key`` inside its write grants (403 ``outside_grant``)."""
    if client.app is not None and client.access is not None:
        client.access.capabilities.require(client.app, "write", key)
    if client.access is not None:
        client.access.require("write", client.pubkey, key)
    elif not can_write(client, key):
        raise _denied(client, f"write {key}")


async def login(request: Request, auth: OwnerAuth) -> Response:
    """``GET /login?token=…``: a valid token sets the node's login cookie and redirects to ``/``.

    The cookie (see :func:`cookie_name`, :func:`cookie_value`) is HttpOnly, SameSite=Strict, Path=/,
    without Domain; over TLS it is ``__Host-`` and Secure. The old shared ``statebus_token`` cookie is
    cleared. A wrong token gets 401 and no cookie; the token is never echoed.
    """
    values = parse_qs(request.url.query, keep_blank_values=True).get("token", [])
    token = values[0] if len(values) == 1 else ""
    name = auth.cookie_name(request.scope, request.headers)
    if not auth.check_token(token) or name is None or auth.node is None:
        return statebus_error_response(
            Unauthorized(
                "the login link is not valid (wrong or old token): `statebus token` prints the current one"
            )
        )
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        name,
        cookie_value(token, auth.node),
        max_age=COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=name.startswith(SECURE_PREFIX),
    )
    if LEGACY_COOKIE in request.cookies:
        response.delete_cookie(LEGACY_COOKIE, path="/", httponly=True, samesite="strict")
    response.headers["cache-control"] = "no-store"
    response.headers["referrer-policy"] = "no-referrer"
    return response
