"""The invite routes of a running node: the owner's (make, list, revoke, rotate) and the joiner's.

    GET    /join                                    the page a link opens (the payload stays in the
    GET    /join.js                                 fragment: the page reads it in the browser)
    POST   /.well-known/statebus/invites            owner: {app?, uses?, expires?, note?, back?}
                                                    → {id, link, payload, exp, uses, qr_svg}
    GET    /.well-known/statebus/invites            owner: {"invites": [record, …]}
    DELETE /.well-known/statebus/invites/<id>       owner: revoke
    POST   /.well-known/statebus/invites/rotate     owner: a new invite secret (old links stop)
    POST   /.well-known/statebus/invites/check      {invite, joiner?} → live? uses, the app
    POST   /.well-known/statebus/invites/bundle     {invite, joiner?} → the app's bundle bytes,
                                                    its signature (base64 JSON) in a header
    POST   /.well-known/statebus/invites/redeem     {invite, joiner, sig, addrs?} → the DHT, follows
    POST   /.well-known/statebus/invites/join       owner: {link} → this running node joins with it:
                                                    4xx for a refused link, else NDJSON events
                                                    {"state": "fetching", "done", "total"} …, then
                                                    {"state": "ready", "ticket", "app"} (or {"error"})
    POST   /.well-known/statebus/invites/join/<t>   owner: the owner consented: redeem and write
                                                    (:mod:`statebus.invites.node_join`) → what it did
    GET    /.well-known/statebus/invites/joins      owner: {"joins": [{id, by, app, state, done,
                                                    total, at}, …]}, the joins' progress (the page)

Rules:
    1. Owner routes answer 403 ``forbidden`` to anyone else before reading a body.
    2. The joiner's routes take the payload in a POST body, never in a URL, so it reaches no access
       log. They change nothing but the redeem (:mod:`statebus.invites.ledger`, rules 1-3).
    3. Bodies are bounded (16 KiB); every refusal is JSON ``{error, detail}`` with a 4xx status.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from statebus.errors import Forbidden, InvalidValue, NotFound, StatebusError, TooLarge
from statebus.http.auth import OwnerAuth
from statebus.http.errors import error_response, status_of
from statebus.invites.ledger import Ledger
from statebus.invites.payload import parse_duration

INVITES_PATH = "/.well-known/statebus/invites"
BUNDLE_TYPE = "application/vnd.statebus.bundle"
SIGNATURE_HEADER = "statebus-bundle-signature"
MAX_JSON = 16 * 1024
STATIC = Path(__file__).resolve().parent / "static"
PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def qr_svg(text: str) -> str:
    """An SVG QR code of ``text`` (our own markup: no user content inside but the encoded modules)."""
    import segno

    svg: str = segno.make(text, error="l", boost_error=False).svg_inline(scale=3, border=2)
    return svg


async def _json(request: Request) -> dict[str, Any]:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_JSON:
            raise TooLarge(f"the request body is over {MAX_JSON} bytes")
    try:
        value = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidValue("the body is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidValue("the body is a JSON object")
    return value


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidValue(f"{name} is a string")
    return value


class NodeJoins(Protocol):
    """How a running node joins with a link (``statebus.invites.node_join.NodeJoins``, which this
    module does not import: it imports ``join``, which imports this module's constants)."""

    progress: dict[str, dict[str, Any]]

    async def prepare(self, link: str) -> Any: ...

    def fetch(self, pending: Any) -> AsyncIterator[dict[str, Any]]: ...

    async def finish(self, ticket: str) -> dict[str, Any]: ...


class InviteRoutes:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.joins: NodeJoins | None = None
        """How this node joins with a link while it runs (set once the node runs; None: 404)."""

    def _owner(self, request: Request) -> None:
        auth: OwnerAuth = request.app.state.auth
        if not auth.authenticate(request).owner:
            raise Forbidden("only the node's owner manages its invites")

    async def _run(self, request: Request, handler: Any, *, owner: bool) -> Response:
        try:
            if owner:
                self._owner(request)
            result = await handler(request)
        except StatebusError as exc:
            return error_response(status_of(exc), exc.code, exc.detail or exc.code)
        if isinstance(result, Response):
            return result
        return JSONResponse(result)

    async def create(self, request: Request) -> Response:
        async def run(req: Request) -> Any:
            body = await _json(req)
            uses = body.get("uses", 1)
            if not isinstance(uses, int) or isinstance(uses, bool):
                raise InvalidValue("uses is a whole number")
            expires = body.get("expires", "7d")
            ttl = float(expires) if isinstance(expires, int | float) else parse_duration(str(expires))
            invite = await self.ledger.create(
                app=_text(body, "app", required=False),
                uses=uses,
                ttl=ttl,
                note=_text(body, "note", required=False) or "",
                back=body.get("back") is True,
            )
            link = invite.link()
            return {
                "id": invite.id,
                "link": link,
                "payload": invite.text,
                "exp": invite.exp,
                "uses": invite.uses,
                "app": invite.app.name if invite.app else None,
                "qr_svg": qr_svg(link),
            }

        return await self._run(request, run, owner=True)

    async def list_invites(self, request: Request) -> Response:
        async def run(_: Request) -> Any:
            return {"invites": self.ledger.list()}

        return await self._run(request, run, owner=True)

    async def revoke(self, request: Request) -> Response:
        async def run(req: Request) -> Any:
            return await self.ledger.revoke(req.path_params["id"])

        return await self._run(request, run, owner=True)

    async def rotate(self, request: Request) -> Response:
        async def run(_: Request) -> Any:
            self.ledger.rotate()
            return {"rotated": True}

        return await self._run(request, run, owner=True)

    async def check(self, request: Request) -> Response:
        async def run(req: Request) -> Any:
            body = await _json(req)
            return self.ledger.check(str(_text(body, "invite")), _text(body, "joiner", required=False))

        return await self._run(request, run, owner=False)

    async def bundle(self, request: Request) -> Response:
        async def run(req: Request) -> Any:
            body = await _json(req)
            data, sig = self.ledger.bundle(str(_text(body, "invite")), _text(body, "joiner", required=False))
            header = base64.b64encode(json.dumps(sig.to_json()).encode()).decode()
            return Response(data, media_type=BUNDLE_TYPE, headers={SIGNATURE_HEADER: header})

        return await self._run(request, run, owner=False)

    async def redeem(self, request: Request) -> Response:
        async def run(req: Request) -> Any:
            body = await _json(req)
            try:
                sig = base64.b64decode(str(_text(body, "sig")), validate=True)
            except ValueError:
                raise InvalidValue("sig is base64") from None
            addrs = body.get("addrs", [])
            if not isinstance(addrs, list) or not all(isinstance(a, str) for a in addrs):
                raise InvalidValue("addrs is a list of URLs")
            return await self.ledger.redeem(
                str(_text(body, "invite")), str(_text(body, "joiner")), sig, addrs
            )

        return await self._run(request, run, owner=False)

    def _joins(self) -> NodeJoins:
        if self.joins is None:
            raise NotFound("this node does not join with links while it runs (it has no DHT or federation)")
        return self.joins

    async def join(self, request: Request) -> Response:
        async def run(req: Request) -> Any:
            body = await _json(req)
            joins = self._joins()
            pending = await joins.prepare(str(_text(body, "link")))

            async def lines() -> AsyncIterator[bytes]:
                try:
                    async for event in joins.fetch(pending):
                        yield json.dumps(event).encode() + b"\n"
                except StatebusError as exc:
                    yield json.dumps({"error": exc.code, "detail": exc.detail or exc.code}).encode() + b"\n"

            return StreamingResponse(
                lines(), media_type="application/x-ndjson", headers={"cache-control": "no-store"}
            )

        return await self._run(request, run, owner=True)

    async def join_progress(self, request: Request) -> Response:
        async def run(_: Request) -> Any:
            return {"joins": list(self.joins.progress.values()) if self.joins is not None else []}

        return await self._run(request, run, owner=True)

    async def join_finish(self, request: Request) -> Response:
        async def run(req: Request) -> Any:
            return await self._joins().finish(req.path_params["ticket"])

        return await self._run(request, run, owner=True)

    async def page(self, request: Request) -> Response:
        name = "join.js" if request.url.path.endswith(".js") else "join.html"
        path = STATIC / name
        if not path.is_file():
            return error_response(404, NotFound().code, "no join page")
        kind = "text/javascript; charset=utf-8" if name.endswith(".js") else "text/html; charset=utf-8"
        return FileResponse(path, media_type=kind, headers=PAGE_HEADERS)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/join", self.page, methods=["GET", "HEAD"]),
            Route("/join.js", self.page, methods=["GET", "HEAD"]),
            Route(INVITES_PATH, self.create, methods=["POST"]),
            Route(INVITES_PATH, self.list_invites, methods=["GET"]),
            Route(f"{INVITES_PATH}/rotate", self.rotate, methods=["POST"]),
            Route(f"{INVITES_PATH}/check", self.check, methods=["POST"]),
            Route(f"{INVITES_PATH}/bundle", self.bundle, methods=["POST"]),
            Route(f"{INVITES_PATH}/redeem", self.redeem, methods=["POST"]),
            Route(f"{INVITES_PATH}/join", self.join, methods=["POST"]),
            Route(f"{INVITES_PATH}/joins", self.join_progress, methods=["GET"]),
            Route(INVITES_PATH + "/join/{ticket}", self.join_finish, methods=["POST"]),
            Route(INVITES_PATH + "/{id}", self.revoke, methods=["DELETE"]),
        ]


__all__ = ["BUNDLE_TYPE", "INVITES_PATH", "SIGNATURE_HEADER", "InviteRoutes", "qr_svg"]
