"""MirrorClient: signed HTTP calls from an owner (or its delegated device) to one mirror.

Every call is signed with RFC 9421 (``statebus.identity.httpsig``) by ``signer``; a device also
sends the owner's delegation record in ``Statebus-Delegation``. Errors: :class:`PeerUnavailable`
when the mirror cannot be reached, :class:`RateLimited` for its 429, :class:`RemoteError` (its status,
its ``remote_code`` and detail) for any other refusal.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from statebus.errors import PeerUnavailable, RateLimited, RemoteError, TooLarge
from statebus.identity.delegation import Record
from statebus.identity.httpsig import sign_request
from statebus.identity.keys import Identity
from statebus.mirror.crypto import MAX_SEALED
from statebus.types import PubKey

WELL_KNOWN = "/.well-known/statebus"
MAX_LISTING = 64 << 20


class MirrorClient:
    def __init__(
        self,
        base: str,
        owner: PubKey,
        signer: Identity,
        *,
        delegation: Record | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base = base.rstrip("/")
        self.owner = owner
        self.signer = signer
        self._delegation = (
            base64.urlsafe_b64encode(json.dumps(delegation.to_json()).encode()).decode().rstrip("=")
            if delegation is not None
            else None
        )
        self._http = httpx.AsyncClient(
            transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
        )
        self.bytes_sent = 0
        self.bytes_received = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> MirrorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _url(self, oid: str | None = None, suffix: str = "") -> str:
        url = f"{self.base}{WELL_KNOWN}/mirror/{self.owner}"
        return url + (f"/{oid}" if oid else "") + suffix

    async def _send(self, method: str, url: str, body: bytes = b"", limit: int = MAX_SEALED) -> bytes:
        headers = {"content-type": "application/octet-stream"} if body else {}
        request = self._http.build_request(method, url, content=body or None, headers=headers)
        request.headers.update(sign_request(method, str(request.url), request.headers, body, self.signer))
        if self._delegation is not None:
            request.headers["statebus-delegation"] = self._delegation
        try:
            response = await self._http.send(request, stream=True)
            try:
                data = b""
                async for chunk in response.aiter_raw():
                    data += chunk
                    if len(data) > limit:
                        raise TooLarge(f"{self.base} answered more than {limit} bytes")
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise PeerUnavailable(f"{self.base}: {type(exc).__name__}") from None
        self.bytes_sent += len(body)
        self.bytes_received += len(data)
        if response.status_code != 200:
            detail = code = ""
            try:
                answer = json.loads(data)
                detail, code = str(answer.get("detail", "")), str(answer.get("error") or "")
            except (ValueError, AttributeError):
                pass
            text = f"mirror answered {response.status_code}: {detail}"[:400]
            if response.status_code == 429:
                raise RateLimited(text, retry_after=float(response.headers.get("retry-after", "1") or 1))
            raise RemoteError(text, status_hint=response.status_code, remote_code=code)
        return data

    async def listing(self) -> dict[str, Any]:
        """``{"quota", "used", "objects": [[id, size, stored], …]}``."""
        out: dict[str, Any] = json.loads(await self._send("GET", self._url(), limit=MAX_LISTING))
        return out

    async def put(self, oid: str, data: bytes) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(await self._send("PUT", self._url(oid), data))
        return out

    async def get(self, oid: str) -> bytes:
        return await self._send("GET", self._url(oid))

    async def delete(self, oid: str) -> bool:
        return bool(json.loads(await self._send("DELETE", self._url(oid))).get("deleted"))

    async def proof(self, oid: str, nonce: bytes) -> str:
        body = json.dumps({"nonce": nonce.hex()}).encode()
        return str(json.loads(await self._send("POST", self._url(oid, "/proof"), body)).get("sha256", ""))
