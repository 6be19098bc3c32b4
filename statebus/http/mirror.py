"""The mirror's endpoints: ciphertext kept for the owners this node mirrors (:mod:`statebus.mirror`).

    GET    /.well-known/statebus/mirror/<owner>              {"quota", "used", "objects": [[id, size, t]]}
    PUT    /.well-known/statebus/mirror/<owner>/<id>         store a sealed object (the body)
    GET    /.well-known/statebus/mirror/<owner>/<id>         its bytes
    DELETE /.well-known/statebus/mirror/<owner>/<id>         drop it
    POST   /.well-known/statebus/mirror/<owner>/<id>/proof   {"nonce": hex} → {"sha256": hex}

Rules:

1. Every request carries an HTTP Message Signature (the node's one request verifier: authority, age,
   nonce) by ``<owner>`` itself, or by a device key the owner delegated the whole namespace to; the
   delegation record (``/<owner>/.keys/<device>``'s value, JSON) travels base64url-encoded in the
   ``Statebus-Delegation`` header and must be signed by the owner and valid now. Anyone else: 401/403.
2. Only owners in ``mirror_for`` are served (403), within ``mirror_quota_bytes`` (413 ``quota_exceeded``
   with the figures); each refusal is a JSON error that changes nothing.
3. Requests count against the address and key rates like every peer request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from statebus.access.control import AccessControl
from statebus.errors import BadSignature, Forbidden, InvalidValue, StatebusError, TooLarge
from statebus.http.errors import statebus_error_response
from statebus.identity.delegation import parse_record, record_key
from statebus.mirror.crypto import MAX_SEALED
from statebus.mirror.store import MirrorStore
from statebus.types import PubKey

WELL_KNOWN = "/.well-known/statebus"
DELEGATION_HEADER = "statebus-delegation"
MAX_PROOF_BODY = 1024


class MirrorEndpoints:
    def __init__(self, store: MirrorStore, access: AccessControl) -> None:
        self.store = store
        self.access = access

    async def _body(self, request: Request, limit: int) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise TooLarge(f"a mirror request body is at most {limit} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"a mirror request body is at most {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _authorize(self, request: Request, body: bytes) -> PubKey:
        """The owner this request is for, once its signer is the owner or a delegated device."""
        self.access.count_address(request.client.host if request.client is not None else None)
        owner: PubKey = request.path_params["owner"]
        signer = self.access.signatures.verify(request.scope, body)
        self.access.hit(signer, None)
        if not self.store.consents(owner):
            raise Forbidden(f"this node does not mirror for {owner} (not in its mirror_for setting)")
        if signer != owner:
            self._check_delegation(request, owner, signer)
        return owner

    def _check_delegation(self, request: Request, owner: PubKey, signer: PubKey) -> None:
        raw = request.headers.get(DELEGATION_HEADER)
        if raw is None:
            raise Forbidden(
                f"{signer} is not {owner}: only the owner or its delegated devices use its mirror"
            )
        try:
            value = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        except ValueError:
            raise BadSignature("Statebus-Delegation is not base64url JSON") from None
        record = parse_record(value, record_key(owner, signer))  # checks the owner's signature
        if record.revoked or f"/{owner}/" not in record.scopes:
            raise Forbidden(f"{signer} holds no delegation of the whole namespace of {owner}")
        why = record.check_time(time.time(), self.access.settings.max_clock_skew)
        if why is not None:
            raise Forbidden(f"the delegation of {signer}: {why}")

    async def listing(self, request: Request) -> Response:
        try:
            owner = await self._authorize(request, b"")
            objects = await asyncio.to_thread(self.store.listing, owner)
            used = await asyncio.to_thread(self.store.used, owner)
        except StatebusError as exc:
            return statebus_error_response(exc)
        return JSONResponse(
            {"quota": self.store.quota, "used": used, "objects": [[o.id, o.size, o.stored] for o in objects]}
        )

    async def put(self, request: Request) -> Response:
        try:
            body = await self._body(request, MAX_SEALED)
            owner = await self._authorize(request, body)
            info = await asyncio.to_thread(self.store.put, owner, request.path_params["oid"], body)
        except StatebusError as exc:
            return statebus_error_response(exc)
        return JSONResponse({"id": info.id, "size": info.size, "used": self.store.used(owner)})

    async def get(self, request: Request) -> Response:
        try:
            owner = await self._authorize(request, b"")
            data = await asyncio.to_thread(self.store.get, owner, request.path_params["oid"])
        except StatebusError as exc:
            return statebus_error_response(exc)
        return Response(data, media_type="application/octet-stream")

    async def delete(self, request: Request) -> Response:
        try:
            owner = await self._authorize(request, b"")
            gone = await asyncio.to_thread(self.store.delete, owner, request.path_params["oid"])
        except StatebusError as exc:
            return statebus_error_response(exc)
        return JSONResponse({"deleted": gone})

    async def proof(self, request: Request) -> Response:
        try:
            body = await self._body(request, MAX_PROOF_BODY)
            owner = await self._authorize(request, body)
            try:
                nonce = bytes.fromhex(json.loads(body)["nonce"])
            except (ValueError, KeyError, TypeError):
                raise InvalidValue('a proof request is {"nonce": "<hex>"}') from None
            digest = await asyncio.to_thread(self.store.proof, owner, request.path_params["oid"], nonce)
        except StatebusError as exc:
            return statebus_error_response(exc)
        return JSONResponse({"sha256": digest})


def routes(store: MirrorStore, access: AccessControl) -> list[BaseRoute]:
    """The mirror routes; give them to ``build_app(extra_routes=…)``."""
    ep = MirrorEndpoints(store, access)
    base = f"{WELL_KNOWN}/mirror/{{owner}}"
    return [
        Route(base, ep.listing, methods=["GET"]),
        Route(f"{base}/{{oid}}", ep.put, methods=["PUT"]),
        Route(f"{base}/{{oid}}", ep.get, methods=["GET"]),
        Route(f"{base}/{{oid}}", ep.delete, methods=["DELETE"]),
        Route(f"{base}/{{oid}}/proof", ep.proof, methods=["POST"]),
    ]
