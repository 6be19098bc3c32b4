"""Who is asking, and what they may do: the owner (by token) or an anonymous client.

The owner presents the owner token (``<data>/identity/owner_token``) as
``Authorization: Bearer <token>`` or in the ``statebus_token`` cookie that ``GET /login?token=…`` sets
(HttpOnly, SameSite=Strict). Tokens are compared in constant time and never logged or echoed.

Until the ACL rules land, :func:`can_read` and :func:`can_write` are the whole policy: the owner may do
anything; anyone may read keys under ``/<namespace>/public/``; nobody else may write. The ACL work
replaces these two functions.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import parse_qs

from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response

from statebus.errors import Forbidden
from statebus.http.errors import statebus_error_response
from statebus.keys import segments
from statebus.types import Key

COOKIE_NAME = "statebus_token"
COOKIE_MAX_AGE = 30 * 24 * 3600
PUBLIC_SEGMENT = "public"
MAX_TOKEN_CHARS = 512


@dataclass(frozen=True, slots=True)
class Client:
    """The party behind a request."""

    owner: bool = False
    """True when the request carried the owner token."""

    @property
    def anonymous(self) -> bool:
        return not self.owner


ANONYMOUS = Client(owner=False)
OWNER = Client(owner=True)


class OwnerAuth:
    """Checks requests for the owner token.

    Args:
        token: the owner token, or None when the node has none (then nobody is the owner).
    """

    def __init__(self, token: str | None) -> None:
        self._token = token.encode("utf-8") if token else None

    def __repr__(self) -> str:
        return "OwnerAuth(token=***)" if self._token else "OwnerAuth(token=None)"

    def check_token(self, presented: str) -> bool:
        """Constant-time comparison of ``presented`` with the owner token."""
        if self._token is None or not presented or len(presented) > MAX_TOKEN_CHARS:
            return False
        return hmac.compare_digest(self._token, presented.encode("utf-8", "replace"))

    def authenticate(self, conn: HTTPConnection) -> Client:
        """The client of a request or websocket.

        Raises:
            Forbidden: (401) an ``Authorization`` header that is not a valid owner token. A stale
                cookie is ignored (the client is anonymous) so public pages keep working.
        """
        header = conn.headers.get("authorization")
        if header is not None:
            scheme, _, credentials = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not self.check_token(credentials.strip()):
                raise Forbidden("the Authorization header does not hold a valid owner token", status_hint=401)
            return OWNER
        cookie = conn.cookies.get(COOKIE_NAME)
        if cookie and self.check_token(cookie):
            return OWNER
        return ANONYMOUS


def is_public(key: Key) -> bool:
    """Whether ``key`` (normalised) lies under ``/<namespace>/public/``."""
    parts = segments(key)
    return len(parts) >= 2 and parts[1] == PUBLIC_SEGMENT and (len(parts) > 2 or key.endswith("/"))


def can_read(client: Client, key: Key) -> bool:
    """May ``client`` read ``key`` (a key or a subtree)? The ACL work replaces this."""
    return client.owner or is_public(key)


def can_write(client: Client, key: Key) -> bool:
    """May ``client`` write ``key``? The ACL work replaces this."""
    return client.owner


def _denied(client: Client, what: str) -> Forbidden:
    if client.anonymous:
        return Forbidden(f"sign in to {what}: send Authorization: Bearer <owner token>", status_hint=401)
    return Forbidden(f"this client may not {what}")


def require_read(client: Client, key: Key) -> None:
    """Raise Forbidden (401 anonymous, 403 otherwise) unless ``client`` may read ``key``."""
    if not can_read(client, key):
        raise _denied(client, f"read {key}")


def require_write(client: Client, key: Key) -> None:
    """Raise Forbidden (401 anonymous, 403 otherwise) unless ``client`` may write ``key``."""
    if not can_write(client, key):
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
