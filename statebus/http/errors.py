"""Every error the HTTP layer answers, as JSON: ``{"error": <code>, "detail": <reason>}``.

A :class:`~statebus.errors.StatebusError` becomes its ``status_hint`` (always 4xx or 5xx) with its
``code`` and ``detail``; anything else becomes a 500 whose detail says nothing about the cause (the
traceback goes to the log, never to the client). Details never hold secrets: the errors raised below
the HTTP layer are written that way, and this module adds nothing from the request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from starlette.responses import Response

from statebus.errors import RateLimited, StatebusError
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
