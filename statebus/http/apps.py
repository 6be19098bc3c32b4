"""The owner's app routes: check, install, list and remove hosted apps on a running node.

    GET    /.well-known/statebus/apps               {"apps": [{name, version, hash, author, …, granted}]}
    POST   /.well-known/statebus/apps/check         a bundle (body) + its signature (header), or
                                                    {"source": "/<author>/.apps/<name>", "via": [...]}
                                                    → what it is and what it asks for (staged)
    POST   /.well-known/statebus/apps/install       {"hash": …, "grant": {read, write, read_others}}
    POST   /.well-known/statebus/apps/publish       a bundle (body) + its signature (header): publish it
                                                    at /~/.apps/<name>, its bytes as a blob
    DELETE /.well-known/statebus/apps/<name>        uninstall (its data keys stay)

Rules:
    1. Owner only: every route answers 403 ``forbidden`` to anyone else (an app's capability
       included), before reading a body. A login-cookie write must come from the node's own origin.
    2. ``check`` installs nothing (:mod:`statebus.apps.install`): the owner sees the permissions,
       then ``install`` names the checked bundle by its hash with the grant the owner gave.
    3. Bodies are bounded: a bundle by ``app_bundle_max_bytes``, JSON by 64 KiB.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from statebus.apps.bundle import Bundle, Signature
from statebus.apps.install import AppService, parse_source_key
from statebus.apps.manifest import NAME_RE, permission_lines
from statebus.apps.registry import InstalledApp, parse_grants
from statebus.errors import Forbidden, InvalidBundle, InvalidValue, NotFound, StatebusError, TooLarge
from statebus.http.auth import OwnerAuth
from statebus.http.errors import error_response, status_of

APPS_PATH = "/.well-known/statebus/apps"
SIGNATURE_HEADER = "statebus-bundle-signature"
BUNDLE_TYPE = "application/vnd.statebus.bundle"
MAX_JSON = 64 * 1024


def app_json(app: InstalledApp) -> dict[str, Any]:
    m = app.manifest
    return {
        "name": m.name,
        "version": m.version,
        "hash": app.bundle_hash,
        "size": app.bundle.size,
        "author": m.author,
        "description": m.description,
        "permissions": m.permissions.to_json(),
        "granted": app.granted.to_json(),
        "installed_at_seq": app.installed_at_seq,
        "web": m.web is not None,
    }


def checked_json(bundle: Bundle, current: InstalledApp | None) -> dict[str, Any]:
    m = bundle.manifest
    return {
        "name": m.name,
        "version": m.version,
        "hash": bundle.hash,
        "size": bundle.size,
        "author": m.author,
        "signer": bundle.signature.signer,
        "description": m.description,
        "permissions": m.permissions.to_json(),
        "permission_lines": [line.strip() for line in permission_lines(m.permissions)],
        "installed": app_json(current) if current is not None else None,
        "asks_more": current is not None and not current.granted.covers(m.permissions),
    }


async def _body(request: Request, limit: int) -> bytes:
    out = bytearray()
    async for chunk in request.stream():
        out += chunk
        if len(out) > limit:
            raise TooLarge(f"the request body is over {limit} bytes")
    return bytes(out)


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidValue("the body is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidValue("the body is a JSON object")
    return value


class AppRoutes:
    """The routes above for one node's :class:`AppService`."""

    def __init__(self, service: AppService) -> None:
        self.service = service

    def _owner(self, request: Request) -> None:
        auth: OwnerAuth = request.app.state.auth
        if not auth.authenticate(request).owner:
            raise Forbidden("only the node's owner manages its apps")

    async def _run(self, request: Request, handler: Any) -> Response:
        try:
            self._owner(request)
            result = await handler(request)
        except StatebusError as exc:
            return error_response(status_of(exc), exc.code, exc.detail or exc.code)
        return JSONResponse(result)

    async def list_apps(self, request: Request) -> Response:
        async def run(_: Request) -> Any:
            return {"apps": [app_json(a) for a in self.service.list()]}

        return await self._run(request, run)

    async def _bundle(self, req: Request) -> tuple[bytes, Signature]:
        """A bundle in the body and its signature in :data:`SIGNATURE_HEADER`."""
        data = await _body(req, self.service.max_bytes)
        sig_text = req.headers.get(SIGNATURE_HEADER)
        if not sig_text:
            raise InvalidBundle(f"send the bundle's signature in {SIGNATURE_HEADER} (base64 of its JSON)")
        try:
            return data, Signature.parse(base64.b64decode(sig_text, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidBundle(f"{SIGNATURE_HEADER} is not base64") from None

    async def check(self, request: Request) -> Response:
        async def run(req: Request) -> Any:
            if req.headers.get("content-type", "").split(";")[0].strip() == BUNDLE_TYPE:
                bundle = self.service.check(*await self._bundle(req))
            else:
                body = _json(await _body(req, MAX_JSON))
                author, name = parse_source_key(str(body.get("source", "")))
                via = body.get("via", [])
                if not isinstance(via, list) or not all(isinstance(v, str) for v in via):
                    raise InvalidValue("via is a list of node URLs")
                bundle = await self.service.check_published(author, name, via)
            current = self.service.registry.get(bundle.manifest.name)
            return checked_json(bundle, current)

        return await self._run(request, run)

    async def publish(self, request: Request) -> Response:
        async def run(req: Request) -> Any:
            bundle = await self.service.publish(*await self._bundle(req))
            m = bundle.manifest
            return {"name": m.name, "version": m.version, "hash": bundle.hash, "size": bundle.size}

        return await self._run(request, run)

    async def install(self, request: Request) -> Response:
        async def run(req: Request) -> Any:
            body = _json(await _body(req, MAX_JSON))
            hash_ = body.get("hash")
            if not isinstance(hash_, str):
                raise InvalidValue("name the checked bundle by its hash")
            app = await self.service.install(hash_, parse_grants(body.get("grant")))
            return app_json(app)

        return await self._run(request, run)

    async def remove(self, request: Request) -> Response:
        async def run(req: Request) -> Any:
            name = req.path_params["name"]
            if not NAME_RE.match(name):
                raise NotFound(f"no app named {name[:40]!r} is installed")
            await self.service.remove(name)
            return {"removed": name}

        return await self._run(request, run)

    def routes(self) -> list[BaseRoute]:
        return [
            Route(APPS_PATH, self.list_apps, methods=["GET"]),
            Route(f"{APPS_PATH}/check", self.check, methods=["POST"]),
            Route(f"{APPS_PATH}/install", self.install, methods=["POST"]),
            Route(f"{APPS_PATH}/publish", self.publish, methods=["POST"]),
            Route(APPS_PATH + "/{name}", self.remove, methods=["DELETE"]),
        ]


__all__ = ["APPS_PATH", "SIGNATURE_HEADER", "AppRoutes", "app_json", "checked_json"]
