"""The calling side of the server-to-server protocol: signed requests to another node.

Every request is signed with this node's identity (RFC 9421, ``statebus.identity.httpsig``). Nothing a
peer answers is trusted: ops go to :class:`statebus.federation.ingest.Ingest`, which verifies each one.
A 429 becomes :class:`~statebus.errors.RateLimited` carrying the peer's ``Retry-After`` (bounded), so a
follower waits that long instead of counting it as a failure; a 503 ``shed`` (the peer's stream slots
are full) becomes :class:`~statebus.errors.Shed`, which carries the peer's relay list as it came
(unverified: the follower checks its signature). With ``relay_url`` set (setting ``relay``), every
ops stream this node opens offers to relay at that address.
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from statebus.errors import InvalidValue, PeerUnavailable, RateLimited, RemoteError, Shed, TooLarge
from statebus.federation.sync import MAX_MESSAGE_BYTES, MAX_OP_BYTES, SyncRequest, SyncResponse, SyncSession
from statebus.identity import Identity, sign_request
from statebus.keys import is_pubkey
from statebus.types import PubKey, Seq

WELL_KNOWN = "/.well-known/statebus"
MAX_LINE = MAX_OP_BYTES + 64 * 1024
"""The longest ops stream line: any op anti-entropy carries fits one."""
MAX_SYNC_ROUNDS = 80
"""Rounds an exchange may take to settle (pages of ops it fetches do not count: no cap on the total)."""

OnPage = Callable[[list[bytes]], Awaitable[None]]
"""Awaited with each page of ops an exchange brings (``SyncSession.take``), before the next round."""
MAX_INFO = 64 * 1024
MAX_OFFER = 4 * 1024 * 1024
"""Largest swarm offer read (a hybrid torrent of 1 GiB is about 400 KB, base64 a third more)."""
MAX_RETRY_AFTER = 600.0
"""The longest a peer's ``Retry-After`` is honoured (a hostile peer cannot park a follower for days)."""
DEFAULT_RETRY_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One line of an ops stream: ``kind`` is "op", "live", "ping" or "reset"."""

    kind: str
    seq: Seq
    op: bytes = b""
    reason: str = ""


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_line(line: bytes) -> StreamItem:
    """Parse one NDJSON line of an ops stream. Raises InvalidValue."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise InvalidValue("an ops stream line is not JSON") from None
    if not isinstance(obj, dict):
        raise InvalidValue("an ops stream line is a JSON object")
    seq = obj.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise InvalidValue("an ops stream line carries a cursor 'seq'")
    if isinstance(obj.get("op"), dict):
        return StreamItem("op", seq, _dumps(obj["op"]))
    if obj.get("live") is True:
        return StreamItem("live", seq)
    if obj.get("ping") is True:
        return StreamItem("ping", seq)
    if isinstance(obj.get("reset"), str):
        return StreamItem("reset", seq, reason=obj["reset"])
    raise InvalidValue("an ops stream line is an op, live, ping or reset")


def retry_after(header: str | None) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds only; an HTTP date or anything
    unreadable counts as :data:`DEFAULT_RETRY_AFTER`), at most :data:`MAX_RETRY_AFTER`."""
    text = (header or "").strip()
    if not text.isdigit() or len(text) > 10:
        return DEFAULT_RETRY_AFTER
    return min(MAX_RETRY_AFTER, float(int(text)))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One default TLS context per process (loading the CA store costs ~0.15 s each time)."""
    return ssl.create_default_context()


class PeerClient:
    """Signed HTTP calls from this node to other nodes.

    Args:
        identity: this node's key (signs every request).
        timeout: connect timeout; ``read_timeout`` bounds the wait for a stream line (pings keep a
            healthy stream well inside it).
        transport: an httpx transport to send through instead of the network (tests pass an
            ``httpx.MockTransport``).

    Raises (from every call): :class:`PeerUnavailable` when the peer cannot be reached,
    :class:`RateLimited` for its 429 and :class:`RemoteError` (with its status and error code) for
    any other error answer.
    """

    def __init__(
        self,
        identity: Identity,
        *,
        timeout: float = 5.0,
        read_timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.identity = identity
        self.relay_url: str | None = None
        """Our own address, offered on every ops stream as a relay (None: we do not relay)."""
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout, read=read_timeout),
            follow_redirects=False,
            trust_env=False,
            verify=_tls_context(),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _signed(
        self, method: str, url: str, params: dict[str, str | list[str]] | None, body: bytes
    ) -> httpx.Request:
        headers = {"content-type": "application/json"} if body else {}
        request = self._http.build_request(method, url, params=params, content=body or None, headers=headers)
        request.headers.update(
            sign_request(request.method, str(request.url), request.headers, body, self.identity)
        )
        return request

    @staticmethod
    def _unavailable(url: str, exc: BaseException) -> PeerUnavailable:
        return PeerUnavailable(f"{url}: {type(exc).__name__}")

    @staticmethod
    def _check(response: httpx.Response, body: bytes) -> None:
        if response.status_code != 200:
            detail = code = ""
            relays: object = None
            try:
                answer = json.loads(body)
                detail, code = str(answer.get("detail", "")), str(answer.get("error") or "")
                relays = answer.get("relays")
            except (ValueError, AttributeError):
                pass
            text = f"peer answered {response.status_code}: {detail}"[:300]
            if response.status_code == 503 and code == "shed":
                wait = retry_after(response.headers.get("retry-after"))
                raise Shed(text, retry_after=wait, relays=relays)
            if response.status_code == 429:
                raise RateLimited(text, retry_after=retry_after(response.headers.get("retry-after")))
            raise RemoteError(text, status_hint=response.status_code, remote_code=code)

    async def _fetch(self, base: str, request: httpx.Request, limit: int) -> bytes:
        """Send ``request``; read at most ``limit`` bytes of the answer (a hostile peer cannot make us
        buffer more); raise the peer's error for a non-200 answer."""
        try:
            response = await self._http.send(request, stream=True)
            try:
                body = b""
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > limit:
                        raise TooLarge(f"{base} answered more than {limit} bytes")
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise self._unavailable(base, exc) from None
        self._check(response, body)
        return body

    async def put_op(self, base: str, key: str, encoded: bytes) -> None:
        """PUT a signed op (its canonical bytes) at ``key`` on the node at ``base``, as a signed
        client of that node (``application/vnd.statebus.op+json``); its error answer is raised."""
        url = base.rstrip("/") + key
        headers = {"content-type": "application/vnd.statebus.op+json"}
        request = self._http.build_request("PUT", url, content=encoded, headers=headers)
        request.headers.update(
            sign_request(request.method, str(request.url), request.headers, encoded, self.identity)
        )
        await self._fetch(base, request, MAX_INFO)

    async def node_info(self, base: str) -> PubKey:
        """The public key the node at ``base`` says it has (unverified: a hint, not a proof)."""
        request = self._http.build_request("GET", base.rstrip("/") + f"{WELL_KNOWN}/node")
        body = await self._fetch(base, request, MAX_INFO)
        try:
            pk = json.loads(body).get("pubkey")
        except (ValueError, AttributeError):
            pk = None
        if not isinstance(pk, str) or not is_pubkey(pk):
            raise PeerUnavailable(f"{base} is not a statebus node")
        return pk

    async def ops(
        self, base: str, patterns: Sequence[str], since: Seq, *, live: bool = True
    ) -> AsyncGenerator[list[StreamItem], None]:
        """The signed ops stream of ``patterns`` after cursor ``since``: the lines as they arrive, in
        batches (every complete line received so far)."""
        params: dict[str, str | list[str]] = {
            "pattern": list(patterns),
            "since": str(since),
            "live": "1" if live else "0",
        }
        if self.relay_url is not None:
            params["relay"] = self.relay_url
        request = self._signed("GET", base.rstrip("/") + f"{WELL_KNOWN}/ops", params, b"")
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unavailable(base, exc) from None
        try:
            if response.status_code != 200:
                body = await response.aread()
                self._check(response, body)
            buf = b""
            async for chunk in response.aiter_raw():
                buf += chunk
                if b"\n" in buf:
                    lines, _, buf = buf.rpartition(b"\n")
                    yield [parse_line(line) for line in lines.split(b"\n") if line]
                if len(buf) > MAX_LINE:
                    raise InvalidValue("an ops stream line is too long")
        except httpx.HTTPError as exc:
            raise self._unavailable(base, exc) from None
        finally:
            await response.aclose()

    async def blob(self, base: str, key: str, digest: str, seeder: str = "") -> AsyncGenerator[bytes, None]:
        """The bytes of blob ``digest`` that ``key`` points to on the node at ``base``, as they
        arrive (unverified: the caller checks the sha256 against the signed pointer). ``seeder``:
        our swarm address, if we swarm (a hot blob is then answered ``blob_swarmed``)."""
        url = base.rstrip("/") + f"{WELL_KNOWN}/blob/{digest}"
        request = self._signed("GET", url, {"key": key, **({"seeder": seeder} if seeder else {})}, b"")
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unavailable(base, exc) from None
        try:
            if response.status_code != 200:
                body = b""
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > MAX_INFO:
                        break
                self._check(response, body)
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise self._unavailable(base, exc) from None
        finally:
            await response.aclose()

    async def swarm_offer(
        self, base: str, key: str, digest: str, seeder: str, *, pattern: str | None = None
    ) -> dict[str, Any]:
        """The torrent and seeders of blob ``digest`` (that ``key`` points to, or the newest signed
        snapshot of ``pattern`` is) on the node at ``base``; ``seeder`` is our own swarm address, so
        the origin lists us to the next fetcher."""
        url = base.rstrip("/") + f"{WELL_KNOWN}/swarm/{digest}"
        which = {"pattern": pattern} if pattern is not None else {"key": key}
        req = self._signed("GET", url, {**which, "seeder": seeder}, b"")
        body = await self._fetch(base, req, MAX_OFFER)
        try:
            offer = json.loads(body)
        except ValueError:
            raise InvalidValue("the swarm offer is not JSON") from None
        if not isinstance(offer, dict):
            raise InvalidValue("the swarm offer is not an object")
        return offer

    async def snapshot(self, base: str, pattern: str, limit: int) -> bytes:
        """The newest signed snapshot of ``pattern`` the node at ``base`` holds (at most ``limit``
        bytes; unverified: ``statebus.federation.subtree.unpack`` checks it)."""
        url = base.rstrip("/") + f"{WELL_KNOWN}/snapshot"
        return await self._fetch(base, self._signed("GET", url, {"pattern": pattern}, b""), limit)

    async def snapshot_info(self, base: str, pattern: str) -> dict[str, Any]:
        """``{"hash", "size", "type"}`` of the newest signed snapshot of ``pattern`` at ``base``
        (unverified: a hint of what to fetch over the swarm)."""
        url = base.rstrip("/") + f"{WELL_KNOWN}/snapshot"
        body = await self._fetch(
            base, self._signed("GET", url, {"pattern": pattern, "info": "1"}, b""), MAX_INFO
        )
        try:
            info = json.loads(body)
        except ValueError:
            raise InvalidValue("the snapshot info is not JSON") from None
        if not isinstance(info, dict):
            raise InvalidValue("the snapshot info is not an object")
        return info

    async def sync_round(self, base: str, request: SyncRequest) -> tuple[SyncResponse, int]:
        """One anti-entropy round; returns the answer and its size on the wire."""
        body = request.encode()
        req = self._signed("POST", base.rstrip("/") + f"{WELL_KNOWN}/sync", None, body)
        answer = await self._fetch(base, req, MAX_MESSAGE_BYTES)
        return SyncResponse.decode(answer), len(answer)

    async def sync(self, base: str, session: SyncSession, on_page: OnPage | None = None) -> SyncSession:
        """Run a whole exchange; ``session.received`` then holds the ops this side lacked, or, with
        ``on_page``, each page of them is handed to it as it arrives (and ``received`` is empty)."""
        request: SyncRequest | None = session.start()
        while request is not None:
            if session.settling_rounds >= MAX_SYNC_ROUNDS:
                raise InvalidValue("anti-entropy did not settle (peer misbehaving?)")
            response, size = await self.sync_round(base, request)
            request = session.receive(response, size)
            if on_page is not None and session.received:
                await on_page(session.take())
        return session
