"""Every error the HTTP layer answers, as JSON: ``{"error": <code>, "detail": <reason>}``.

One exception: a browser that opens a private key without the login cookie (a ``GET`` whose ``Accept``
names ``text/html``, as a navigation's does) gets the 401 as a small HTML page that says how to log
in (:func:`login_page`); API clients (``Accept: */*``, JSON) keep the JSON body.

A :class:`~statebus.errors.StatebusError` becomes its ``status_hint`` (always 4xx or 5xx) with its
``code`` and ``detail``; anything else becomes a 500 whose detail says nothing about the cause (the
traceback goes to the log, never to the client). Details never hold secrets: the errors raised below
the HTTP layer are written that way, and this module adds nothing from the request.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.responses import Response

from statebus.errors import RateLimited, StatebusError, Unauthorized
from statebus.http.braid import RANGE_HEADERS

log = logging.getLogger("statebus.http")

MAX_DETAIL_CHARS = 500


def error_body(code: str, detail: str) -> bytes:
    """The JSON body of an error response."""
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[:MAX_DETAIL_CHARS] + "…"
    return json.dumps({"error": code, "detail": detail}, ensure_ascii=False).encode("utf-8")


def error_response(status: int, code: str, detail: str, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A JSON error response with the Braid range headers every response carries."""
    hdrs = dict(RANGE_HEADERS)
    hdrs.update(headers)
    return Response(error_body(code, detail), status_code=status, media_type="application/json", headers=hdrs)


def status_of(exc: StatebusError) -> int:
    """The HTTP status of a statebus error: its hint when that is an error status, else 400."""
    status = exc.status_hint
    return status if 400 <= status <= 599 else 400


def statebus_error_response(exc: StatebusError) -> Response:
    """The response for a statebus error (401 adds ``WWW-Authenticate``, 429 ``Retry-After``)."""
    status = status_of(exc)
    headers: list[tuple[str, str]] = []
    if status == 401:
        headers.append(("www-authenticate", 'Bearer realm="statebus"'))
    if status == 405:  # DerivedKey: its value is computed, so it is only read
        headers.append(("allow", "GET, HEAD, OPTIONS"))
    if isinstance(exc, RateLimited):
        headers.append(("retry-after", str(max(1, round(exc.retry_after)))))
    return error_response(status, exc.code, exc.detail or exc.code, headers)


LOGIN_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<link rel="icon" href="/favicon.ico"><title>Log in to see this key</title></head>
<body style="font: 16px/1.5 system-ui, sans-serif; max-width: 42em; margin: 3em auto; padding: 0 1em">
<h1>This key is private</h1>
<p>You are not logged in to this node, so it does not show you <code>{key}</code>.</p>
<p>To log in as the owner, open the login link that <code>statebus serve</code> printed when it started
(<code>http://&hellip;/login?token=&hellip;</code>). Or run <code>statebus token</code> on the node's
machine and open <code>/login?token=</code> followed by the token. The link sets a login cookie in
this browser and takes you to the <a href="/">node's page</a>; then open this key again.</p>
<p>Programs send the token instead: <code>Authorization: Bearer &lt;token&gt;</code>.</p>
<p style="color: #666">{detail}</p>
</body>
</html>
"""


LOGIN_PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
"""The login page runs no script at all; its one style is inline."""


def wants_html(scope: Mapping[str, Any]) -> bool:
    """Whether a request is a browser's page load: ``GET``/``HEAD`` with ``text/html`` in ``Accept``."""
    if scope.get("method") not in ("GET", "HEAD"):
        return False
    return any(name == b"accept" and b"text/html" in value for name, value in scope.get("headers", ()))


def login_page(exc: Unauthorized, path: str) -> Response:
    """The 401 a browser gets for a private key: a page saying how to log in (no script, no secret)."""
    body = LOGIN_PAGE.format(key=html.escape(path), detail=html.escape(exc.detail or exc.code))
    headers = {"content-security-policy": LOGIN_PAGE_POLICY, "x-content-type-options": "nosniff"}
    headers["www-authenticate"] = 'Bearer realm="statebus"'
    headers["cache-control"] = "no-store"
    return Response(body, status_code=401, media_type="text/html; charset=utf-8", headers=headers)


def internal_error_response(exc: BaseException) -> Response:
    """A 500 for an unexpected exception: logged here with its traceback, told to nobody."""
    log.error("unhandled error in a request: %s", type(exc).__name__, exc_info=exc)
    return error_response(500, "internal_error", "the server failed to handle this request")


def method_not_allowed(method: str, allow: str) -> Response:
    """405 with ``Allow`` (also the answer to braid-http's ``MULTIPLEX``, so clients fall back)."""
    shown = method if method.isascii() and method.isalpha() and len(method) <= 20 else "this method"
    return error_response(
        405, "method_not_allowed", f"{shown} is not supported here; allowed: {allow}", [("allow", allow)]
    )
