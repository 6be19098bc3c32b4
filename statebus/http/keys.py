"""HTTP on keys: the URL path is the key (percent-decoded; ``/~/…`` is the local namespace).

    GET     a key → its value (JSON, or bytes with their content type), ``Version`` and ``ETag``;
            a subtree (path ending in ``/``) → its children, paginated, and ``seq``, the node's cursor as
            of the listing (a stream opened with ``?since=<seq>`` gets every change after it); with ``Accept:
            text/event-stream`` or ``Subscribe`` → a live stream (see :mod:`statebus.http.subscribe`);
            with ``Version`` (or ``?version=``) → the value at that past version, 410 once compacted;
            ``?history`` → the key's versions, paginated; ``Range: bytes=…`` on a binary value →
            206 (see :mod:`statebus.http.byte_ranges`)
    PUT     replace the value, or patch it (``Content-Range: json <range>`` or ``Patches: N``)
    PATCH   patch a JSON value, or merge a Yjs update (``Content-Type: application/vnd.yjs.update``)
    DELETE  delete the key

Every failure is a 4xx JSON error raised before anything changes (see :mod:`statebus.http.errors`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import sys
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import HTTPConnection
from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from statebus.access.control import OP_MEDIA_TYPE
from statebus.access.gate import read_all
from statebus.blobs import BLOB_TYPE, BlobInfo, BlobPointer, check_hash
from statebus.bus import Change
from statebus.config import Settings
from statebus.errors import (
    InvalidKey,
    InvalidOp,
    InvalidRange,
    InvalidValue,
    NotAcceptable,
    NotFound,
    PreconditionFailed,
    RangeNotSatisfiable,
    StatebusError,
    TooLarge,
    Unauthorized,
)
from statebus.http import braid
from statebus.http.auth import Client, OwnerAuth, require_read, require_write
from statebus.http.blobs import (
    BLOBS_PATH,
    DOWNLOAD_PARAM,
    declared_length,
    download_header,
    receive_value,
    serve_blob,
)
from statebus.http.byte_ranges import (
    ACCEPT_RANGES,
    content_range,
    if_range_holds,
    multipart,
    parse_byte_ranges,
)
from statebus.http.encode import EncodeCache
from statebus.http.errors import (
    error_response,
    internal_error_response,
    login_page,
    method_not_allowed,
    statebus_error_response,
    wants_html,
)
from statebus.http.proofs import PROOF_PARAM, proof_of
from statebus.http.pump import StreamRegistry
from statebus.http.subscribe import serve_braid, serve_sse
from statebus.http.value_headers import (
    FALLBACK_TYPE,
    NOSNIFF,
    PAGE_HEADERS,
    VIEW_PARAM,
    served_type,
    value_headers,
)
from statebus.http.yjs import (
    YjsFeed,
    accepts_yjs,
    state_vector_of,
    stream_mode,
    yjs_body,
    yjs_response,
)
from statebus.keys import is_subtree
from statebus.merge import MERGE_TYPES
from statebus.runtime import Node
from statebus.types import JSON, Key, Version
from statebus.values import dumps_json, get_range, loads_json, parse_range

ALLOW = "GET, HEAD, PUT, PATCH, DELETE, OPTIONS"
YJS_TYPES = ("application/vnd.yjs.update", "application/octet-stream")
MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100
MAX_STREAM_KEYS = 256
JSON_TYPE = "application/json"
HISTORY_PARAM = "history"
"""The query parameter that asks for a key's history listing (``GET /key?history``)."""
METHODS = frozenset(ALLOW.split(", "))
WRITTEN_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    *((name.encode("latin-1"), value.encode("latin-1")) for name, value in braid.RANGE_HEADERS),
    (NOSNIFF[0].encode("latin-1"), NOSNIFF[1].encode("latin-1")),
    (b"content-type", JSON_TYPE.encode("latin-1")),
)
"""The headers of every answer to a write, before ``content-length`` and ``version``."""


def _range_headers() -> dict[str, str]:
    return dict(braid.RANGE_HEADERS)


def _json_headers() -> dict[str, str]:
    """The headers of a JSON answer that is not a value (a listing, the node's summary)."""
    return {**dict(braid.RANGE_HEADERS), NOSNIFF[0]: NOSNIFF[1]}


def _utf8(text: str, name: str) -> str:
    """``text`` if it is valid Unicode (a ``\\ud800`` escape decodes to a lone surrogate, which no
    UTF-8 encoder can store or send)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue(
            f"{name} header holds a lone surrogate (\\ud800-\\udfff), which is not text"
        ) from None
    return text


def stream_client(client: Client) -> str | None:
    """Who a stream's unsent bytes count for: the client's key, else ``ip:<address>``; None for the
    owner (exempt, as from the subscription count)."""
    if client.owner:
        return None
    if client.app is not None:
        return sys.intern(f"app:{client.app.app}")
    return client.pubkey or sys.intern(f"ip:{client.address}")


def version_list(header: str, name: str) -> tuple[Version, ...]:
    """A ``Version``/``Parents`` header (see :func:`statebus.http.braid.parse_version_list`), text only."""
    return tuple(_utf8(v, name) for v in braid.parse_version_list(header, name=name))


def parse_peer(header: str | None) -> str | None:
    """A ``Peer`` header (see :func:`statebus.http.braid.parse_peer`), text only."""
    peer = braid.parse_peer(header)
    return None if peer is None else _utf8(peer, "Peer")


def etag_of(version: Sequence[Version], rng: str | None = None) -> str | None:
    """A strong ETag derived from a version frontier (and the range read), or None without a version."""
    if not version:
        return None
    h = hashlib.sha256(
        "\x00".join(version).encode("utf-8", "surrogatepass")
        + b"\x01"
        + (rng or "").encode("utf-8", "surrogatepass")
    )
    return '"' + h.hexdigest()[:32] + '"'


def _etag_matches(header: str, etag: str) -> bool:
    for item in header.split(","):
        tag = item.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _etag_matches_strong(header: str, etag: str) -> bool:
    """``If-Match`` compares strongly (RFC 9110 13.1.1): a weak tag never matches."""
    return any(item.strip() in ("*", etag) for item in header.split(","))


def check_preconditions(current: Change | None, headers: Mapping[str, str]) -> None:
    """``If-Match`` / ``If-None-Match`` of a write against the key's ``current`` state (its ETag is
    the GET's: :func:`etag_of` of the whole value's version). ``If-Match: *`` needs a value;
    ``If-None-Match: *`` needs none (create only).

    Raises:
        PreconditionFailed: a condition does not hold (412; nothing is written).
    """
    etag = etag_of(current.version) if current is not None and current.exists else None
    if_match = headers.get("if-match")
    if if_match is not None and (etag is None or not _etag_matches_strong(if_match, etag)):
        raise PreconditionFailed(
            f"If-Match {if_match.strip()!r} does not match the key's ETag {etag or '(no value)'}"
        )
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None and etag is not None and _etag_matches(if_none_match, etag):
        raise PreconditionFailed(f"If-None-Match {if_none_match.strip()!r}: the key has a value ({etag})")


def _utf8_header(text: str, name: str) -> str:
    """A header's text as the client sent it, UTF-8 (the ASGI server hands over bytes that
    :func:`request_headers` decodes as latin-1, so ``.café`` would arrive as ``.cafÃ©``).

    Raises:
        InvalidRange: the bytes are not UTF-8.
    """
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRange(f"the {name} header is not UTF-8") from None


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers by (lowercase) name, decoded as latin-1; the first of repeated ones,
    as Starlette's ``Headers.get`` gives. Built once per request instead of searching the raw list
    for each header read."""
    out: dict[str, str] = {}
    for name, value in reversed(scope["headers"]):
        out[name.decode("latin-1")] = value.decode("latin-1")
    return out


class WrittenResponse:
    """The answer to a write: ``{"version": [own], "frontier": [...], "seq": N}`` with ``Version:
    own`` and the range headers. ``own`` is the version of the writer's op (of the op already
    stored, for a retry naming its ``Version``); ``frontier`` the key's versions after the write
    (more than one when it has concurrent branches). Without an op to name (a retry with no
    ``Version``), ``version`` is the frontier.

    Its bytes are what ``Response(dumps_json(...), media_type=JSON_TYPE, headers=...)`` sends,
    built without Starlette's header normalisation (every name and value here is fixed or ASCII).
    """

    __slots__ = ("body", "headers")

    def __init__(self, change: Change, own: Version | None = None) -> None:
        frontier = change.version
        op = change.op
        if op is not None:
            own = op.version
        listed = ",".join(map(encode_basestring, frontier))
        if own is None or frontier == (own,):  # the common answer: one version, the writer's
            version, mine = frontier, listed
        else:
            version, mine = (own,), encode_basestring(own)
        self.body = (
            '{"version":[' + mine + '],"frontier":[' + listed + '],"seq":' + str(change.seq) + "}"
        ).encode("utf-8")
        headers = [*WRITTEN_HEADERS, (b"content-length", str(len(self.body)).encode("latin-1"))]
        if version:
            headers.append((b"version", braid.format_version_list(version).encode("latin-1")))
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def media_type(headers: Mapping[str, str]) -> str | None:
    """The request's content type without parameters, lowercased; None when absent."""
    raw = headers.get("content-type")
    if raw is None:
        return None
    return raw.split(";", 1)[0].strip().lower() or None


def parse_range_header(header: str) -> str:
    """``Range: json .a.b`` → ``.a.b``.

    Raises:
        InvalidRange: another unit, or a malformed range.
    """
    unit, _, rng = header.strip().partition(" ")
    if unit.lower() != "json":
        raise InvalidRange("Range must be 'json <range>', e.g. Range: json .a.b")
    rng = rng.strip()
    parse_range(rng)
    return rng


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """Read the request body, refusing (413) more than ``limit`` bytes before reading them all.

    Raises:
        TooLarge: the declared or actual length is over ``limit``.
        InvalidValue: a malformed Content-Length.
    """
    declared = headers.get("content-length")
    if declared is not None:
        text = declared.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 15:
            raise InvalidValue("Content-Length must be a whole number")
        if int(text) > limit:
            raise TooLarge(f"the body is {int(text)} bytes; the limit is {limit}")
    return await read_all(receive, limit)


class KeyEndpoint:
    """The ASGI app behind every key path (methods dispatched here, so unknown ones get JSON 405)."""

    def __init__(
        self,
        node: Node,
        settings: Settings,
        auth: OwnerAuth,
        registry: StreamRegistry,
        cache: EncodeCache,
        index_file: Path | None = None,
    ) -> None:
        self.node = node
        self._parse = node.keys.parse  # the node's key memo, called directly on every request
        self.settings = settings
        self.auth = auth
        self.registry = registry
        self.cache = cache
        self.index_file = index_file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            response = await self.dispatch(HTTPConnection(scope), scope, receive, send)
        except Unauthorized as exc:  # a browser opening a private key: a page that says how to log in
            response = login_page(exc, scope["path"]) if wants_html(scope) else statebus_error_response(exc)
        except StatebusError as exc:
            response = statebus_error_response(exc)
        except Exception as exc:
            response = internal_error_response(exc)
        if response is not None:
            await response(scope, receive, send)

    # ------------------------------------------------------------------ dispatch

    async def dispatch(
        self, conn: HTTPConnection, scope: Scope, receive: Receive, send: Send
    ) -> Response | WrittenResponse | None:
        method = scope["method"].upper()
        if method not in METHODS:
            return method_not_allowed(method, ALLOW)
        if method == "OPTIONS":
            return Response(status_code=204, headers={"allow": ALLOW, **_range_headers()})
        path: str = scope["path"]
        headers = request_headers(scope)
        client = self.auth.authenticate_scope(scope, headers)
        if method in ("GET", "HEAD"):
            streaming = braid.parse_subscribe(headers.get("subscribe")) or (
                "text/event-stream" in headers.get("accept", "")
            )
            if streaming and method == "GET":
                return await self.stream(conn, headers, client, path, receive, send)
            if path == "/":
                return self.index(client)
            if path.startswith(BLOBS_PATH):
                return self.get_blob(client, path, conn.query_params, headers)
            key = self.parse_key(path)
            require_read(client, key)
            if is_subtree(key):
                return self.list_children(key, conn.query_params, client)
            return self.get(key, conn, headers)
        key = self.parse_key(path)
        if is_subtree(key):
            raise InvalidKey("writes name one key, not a subtree (no trailing '/')")
        require_write(client, key)
        ctype = media_type(headers)
        conditional = "if-match" in headers or "if-none-match" in headers
        if client.access is not None and (not client.writes_as_owner or ctype == OP_MEDIA_TYPE):
            body = await read_body(receive, headers, self.settings.max_body_bytes)
            if conditional:
                check_preconditions(self.node.fetch_or_none(key), headers)
            return WrittenResponse(
                await client.access.submit(client.pubkey, method, ctype, key, body, client.address)
            )
        if method == "DELETE":
            opts = self.write_options(headers, merge=False)
            self.check_parents(key, opts)
            if conditional:
                check_preconditions(self.node.fetch_or_none(key), headers)
            return WrittenResponse(await self.node.delete(key, **opts), opts.get("version"))
        if method == "PUT" and self.is_blob_put(ctype, headers):
            return await self.put_blob(key, headers, receive, conditional)
        body = await read_body(receive, headers, self.settings.max_body_bytes)
        if conditional:
            check_preconditions(self.node.fetch_or_none(key), headers)
        if method == "PUT":
            return await self.put(key, headers, ctype, body)
        return await self.patch(key, headers, ctype, body)

    def parse_key(self, path: str) -> Key:
        """The key a request path names, within the node's key limits (the parse itself is the bus's,
        remembered there for every caller: :class:`~statebus.keys.KeyMemo`)."""
        limit = self.settings.max_key_bytes
        if len(path) * 4 > limit and len(path.encode("utf-8", "replace")) > limit:  # ≤ 4 bytes a char
            raise InvalidKey(f"a key is at most {limit} bytes")
        key = self._parse(path)
        depth = key.count("/")
        if depth > self.settings.max_key_depth and depth - key.endswith("/") > self.settings.max_key_depth:
            raise InvalidKey(f"a key has at most {self.settings.max_key_depth} segments")
        return key

    # ------------------------------------------------------------------ reads

    def index(self, client: Client) -> Response:
        if self.index_file is not None and self.index_file.is_file():
            return FileResponse(
                self.index_file, media_type="text/html; charset=utf-8", headers=dict(PAGE_HEADERS)
            )
        body: dict[str, JSON] = {"statebus": True, "node": self.node.local, "owner": client.owner}
        return Response(dumps_json(body), media_type=JSON_TYPE, headers=_json_headers())

    def get(self, key: Key, conn: HTTPConnection, headers: Mapping[str, str]) -> Response:
        query = conn.query_params
        if HISTORY_PARAM in query:
            return self.history(key, query)
        rng: str | None = None
        byte_range: str | None = None
        if "range" in query:
            rng = query["range"]
            parse_range(rng)
        elif headers.get("range") is not None:
            raw = headers["range"]
            if raw.lstrip(" \t")[:5].lower() == "bytes":
                byte_range = raw
            else:
                rng = parse_range_header(_utf8_header(raw, "Range"))
        self.node.check_complete(key)  # never the owner's version with a value that is not the owner's
        if PROOF_PARAM in query:
            return self.proven(key)
        want_yjs, json_ok = accepts_yjs(headers.get("accept"))
        if want_yjs:
            answer = self.get_yjs(key, query, headers, json_ok=json_ok, ranged=bool(rng or byte_range))
            if answer is not None:
                return answer
        versions = self.asked_version(query, headers)
        if versions:
            change = self.node.fetch_version(key, versions)
            if rng:
                if change.content_type is not None:
                    raise InvalidRange("a range applies to JSON values, not to bytes")
                change = dataclasses.replace(change, value=get_range(change.value, rng))
        else:
            change = self.node.fetch(key, rng or None)
        if byte_range is not None and change.content_type is None:
            raise InvalidRange("byte ranges apply to binary values; a JSON value takes Range: json <range>")
        pointer = BlobPointer.decode(change.value) if change.content_type == BLOB_TYPE else None
        out = _range_headers()
        if change.version:
            out["version"] = braid.format_version_list(change.version)
        etag = etag_of(change.version, rng)
        if etag is not None:
            out["etag"] = etag
            inm = headers.get("if-none-match")
            if inm is not None and _etag_matches(inm, etag):
                return Response(status_code=304, headers=out)
        status = 200
        if rng is not None:
            status = 206
            out["content-range"] = f"json {rng}"
        stored_type = pointer.type if pointer is not None else change.content_type
        out.update(value_headers(stored_type, view=VIEW_PARAM in query))
        if DOWNLOAD_PARAM in query:
            name, value = download_header(key)
            out[name] = value
        if stored_type is not None:
            out[ACCEPT_RANGES[0]] = ACCEPT_RANGES[1]
            ctype = served_type(stored_type)
            if pointer is not None:
                honour = byte_range is not None and if_range_holds(headers.get("if-range"), etag)
                return serve_blob(self.node.blobs, pointer, ctype, out, byte_range if honour else None)
            data = bytes(change.value)
            if byte_range is not None and if_range_holds(headers.get("if-range"), etag):
                return self.byte_ranges(data, ctype, byte_range, out)
            return Response(data, status_code=status, media_type=ctype, headers=out)
        return Response(dumps_json(change.value), status_code=status, media_type=JSON_TYPE, headers=out)

    def get_blob(self, client: Client, path: str, query: QueryParams, headers: Mapping[str, str]) -> Response:
        """``GET /.blobs/<sha256>?key=<key>``: the bytes of a blob, for a reader of ``key`` while
        ``key``'s value points to it (how a replica fetches the bytes a pointer op names)."""
        digest = check_hash(path[len(BLOBS_PATH) :])
        raw = query.get("key")
        if not raw:
            raise InvalidKey("name the key that points to the blob: /.blobs/<sha256>?key=<key>")
        key = self.parse_key(raw)
        if is_subtree(key):
            raise InvalidKey("a blob is read through one key, not a subtree")
        require_read(client, key)
        self.node.check_complete(key)
        change = self.node.fetch(key)
        if change.content_type != BLOB_TYPE or BlobPointer.decode(change.value).hash != digest:
            raise NotFound(f"{key} does not point to blob {digest} (now)")
        pointer = BlobPointer.decode(change.value)
        out = {**_json_headers(), ACCEPT_RANGES[0]: ACCEPT_RANGES[1]}
        out.update(value_headers(pointer.type))
        raw_range = headers.get("range")
        return serve_blob(self.node.blobs, pointer, FALLBACK_TYPE, out, raw_range)

    def get_yjs(
        self, key: Key, query: QueryParams, headers: Mapping[str, str], *, json_ok: bool, ranged: bool
    ) -> Response | None:
        """A GET asking for Yjs updates (see :mod:`statebus.http.yjs`); None when the key is not
        Yjs and the Accept also takes its JSON view."""
        versions = self.asked_version(query, headers)
        change = self.node.fetch_version(key, versions) if versions else self.node.fetch(key)
        if change.merge != "yjs" and json_ok:
            return None
        parents = self.asked_parents(query, headers)
        state_vector = state_vector_of(query, headers)
        if parents is not None and (versions or state_vector is not None):
            raise InvalidValue("a Yjs read names one of Parents, a state vector or a Version")
        body, tag = yjs_body(self.node, change, state_vector=state_vector, parents=parents)
        out = _range_headers()
        if change.version:
            out["version"] = braid.format_version_list(change.version)
        etag = etag_of(change.version, tag)
        if etag is not None:
            out["etag"] = etag
            inm = headers.get("if-none-match")
            if inm is not None and _etag_matches(inm, etag):
                return Response(status_code=304, headers=out)
        return yjs_response(body, out, ranged=ranged)

    @staticmethod
    def asked_parents(query: QueryParams, headers: Mapping[str, str]) -> tuple[Version, ...] | None:
        """The versions a Yjs read wants the updates after: ``Parents`` or ``?parents=`` (a Braid
        version list, or bare ids separated by commas); None when neither is given."""
        raw = headers.get("parents")
        if raw is not None:
            return version_list(raw, "Parents")
        raw = query.get("parents")
        if raw is None:
            return None
        if raw.lstrip().startswith('"'):
            return version_list(raw, "parents")
        return version_list(
            ", ".join(encode_basestring(v.strip()) for v in raw.split(",") if v.strip()), "parents"
        )

    def proven(self, key: Key) -> Response:
        """``GET /key?proof``: the value with its signature material (:mod:`statebus.http.proofs`)."""
        change = self.node.fetch(key)
        body: dict[str, JSON] = {"key": change.key, "version": list(change.version)}
        if change.content_type is None:
            body["value"] = change.value
        body["proof"] = proof_of(self.node, change)
        return Response(dumps_json(body), media_type=JSON_TYPE, headers=_json_headers())

    @staticmethod
    def asked_version(query: QueryParams, headers: Mapping[str, str]) -> tuple[Version, ...]:
        """The past version a read names: the ``Version`` header, or ``?version=`` (a Braid version
        list, or bare ids separated by commas); empty for the current state."""
        raw = headers.get("version")
        if raw is not None:
            return version_list(raw, "Version")
        raw = query.get("version")
        if raw is None or not raw.strip():
            return ()
        if raw.lstrip().startswith('"'):
            return version_list(raw, "version")
        quoted = ", ".join(encode_basestring(v.strip()) for v in raw.split(",") if v.strip())
        return version_list(quoted, "version")

    @staticmethod
    def byte_ranges(data: bytes, ctype: str, header: str, out: dict[str, str]) -> Response:
        """206 with the ranges of ``data`` that ``header`` asks for, 416 when none lies inside it, or
        the whole value when the header is to be ignored (see :mod:`statebus.http.byte_ranges`)."""
        size = len(data)
        try:
            ranges = parse_byte_ranges(header, size)
        except RangeNotSatisfiable as exc:
            hdrs = [(k, v) for k, v in out.items() if k in ("version", "etag", ACCEPT_RANGES[0])]
            hdrs.append(("content-range", f"bytes */{size}"))
            return error_response(416, exc.code, exc.detail, hdrs)
        if ranges is None:
            return Response(data, media_type=ctype, headers=out)
        if len(ranges) == 1:
            first, last = ranges[0]
            out["content-range"] = content_range(ranges[0], size)
            return Response(data[first : last + 1], status_code=206, media_type=ctype, headers=out)
        body, multi_type = multipart(data, ranges, ctype)
        return Response(body, status_code=206, media_type=multi_type, headers=out)

    def history(self, key: Key, query: QueryParams) -> Response:
        """``GET /key?history[&after=SEQ][&limit=N]``: the versions of ``key`` in its history, oldest
        first, a page at a time, with the compaction horizon below which they were folded."""
        after_raw = query.get("after", "0") or "0"
        if not after_raw.isascii() or not after_raw.isdigit() or len(after_raw) > 18:
            raise InvalidValue("after must be a cursor (a whole number) from an earlier page")
        raw = query.get("limit", str(DEFAULT_LIST_LIMIT))
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST_LIMIT:
            raise InvalidValue(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}")
        page = self.node.history_page(key, int(after_raw), int(raw))
        body: dict[str, Any] = {
            "key": page.key,
            "versions": [
                {
                    "version": r.version,
                    "parents": list(r.parents),
                    "seq": r.seq,
                    "author": r.author,
                    "clock": r.clock,
                    "kind": r.kind,
                }
                for r in page.versions
            ],
            "horizon": {"seq": page.horizon_seq, "frontier": list(page.horizon_frontier)},
            "next": page.versions[-1].seq if page.more else None,
        }
        return Response(dumps_json(body), media_type=JSON_TYPE, headers=_json_headers())

    def list_children(self, key: Key, query: QueryParams, client: Client | None = None) -> Response:
        after = query.get("after", "")
        raw = query.get("limit", str(DEFAULT_LIST_LIMIT))
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST_LIMIT:
            raise InvalidValue(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}")
        limit = int(raw)
        if len(after.encode("utf-8", "replace")) > 1024:
            raise InvalidValue("after is at most 1024 bytes")
        seq = self.node.durable_seq  # read first: the names hold at least every change up to it
        if client is not None and client.access is not None:
            names = client.access.children(client.pubkey, key, after, limit + 1)
        else:
            names = self.node.children(key, after, limit + 1)
        more = len(names) > limit
        names = names[:limit]
        body: dict[str, Any] = {
            "key": key,
            "children": names,
            "next": names[-1] if more else None,
            "seq": seq,
        }
        if not key.startswith(f"/{self.node.local}/"):  # a replica: name the keys it cannot rebuild
            gaps = [n for n in names if not n.endswith("/") and self.node.incomplete(key + n) is not None]
            if gaps:
                body["incomplete"] = gaps
        return Response(dumps_json(body), media_type=JSON_TYPE, headers=_json_headers())

    # ------------------------------------------------------------------ streams

    def stream_patterns(self, path: str, query: QueryParams) -> list[Key]:
        raw: list[str] = [] if path == "/" else [path]
        for item in query.getlist("keys"):
            raw.extend(k for k in item.split(",") if k)
        raw.extend(query.getlist("key"))
        if not raw:
            raise InvalidKey("name a key or a subtree to stream: the path, ?keys=/a,/b or ?key=…")
        if len(raw) > MAX_STREAM_KEYS:
            raise InvalidValue(f"a stream follows at most {MAX_STREAM_KEYS} keys")
        out: list[Key] = []
        for item in raw:
            key = self.parse_key(item)
            if key not in out:
                out.append(key)
        return out

    async def stream(
        self,
        conn: HTTPConnection,
        headers: Mapping[str, str],
        client: Client,
        path: str,
        receive: Receive,
        send: Send,
    ) -> Response | None:
        settings = self.settings
        if braid.parse_subscribe(headers.get("subscribe")):
            if path == "/":
                raise InvalidKey("a Braid subscription names one key in the path")
            key = self.parse_key(path)
            require_read(client, key)
            self.node.check_complete(key)  # a subscription to a key this node cannot rebuild: 503
            raw_parents = headers.get("parents")
            parents = version_list(raw_parents, "Parents") if raw_parents is not None else None
            raw_beats = headers.get("heartbeats")
            beats = braid.parse_heartbeats(raw_beats)
            yjs = self.braid_yjs(key, conn.query_params, headers)
            await serve_braid(
                send,
                receive,
                node=self.node,
                events=client.open_events(self.node),
                registry=self.registry,
                cache=self.cache,
                key=key,
                parents=parents or None,
                peer=parse_peer(headers.get("peer")),
                heartbeats=(beats, raw_beats.strip())
                if beats is not None and raw_beats is not None
                else None,
                buffer=settings.subscriber_buffer,
                ping_interval=settings.sse_ping_interval,
                client=stream_client(client),
                yjs=yjs,
                proof=functools.partial(proof_of, self.node) if PROOF_PARAM in conn.query_params else None,
            )
            return None
        patterns = self.stream_patterns(path, conn.query_params)
        for key in patterns:
            require_read(client, key)
        yjs_feed = None
        if stream_mode(conn.query_params):
            state_vector = state_vector_of(conn.query_params, headers, since=False)
            if state_vector is not None and (len(patterns) != 1 or is_subtree(patterns[0])):
                raise InvalidValue("a state vector is one document's: stream one Yjs key with it")
            yjs_feed = YjsFeed(self.node, state_vector)
        await serve_sse(
            send,
            receive,
            events=client.open_events(self.node),
            registry=self.registry,
            cache=self.cache,
            patterns=patterns,
            since=self.resume_cursor(conn, headers),
            buffer=settings.subscriber_buffer,
            ping_interval=settings.sse_ping_interval,
            client=stream_client(client),
            yjs=yjs_feed,
            proof=functools.partial(proof_of, self.node) if PROOF_PARAM in conn.query_params else None,
        )
        return None

    def braid_yjs(self, key: Key, query: QueryParams, headers: Mapping[str, str]) -> YjsFeed | None:
        """The feed of a Braid subscription that asks for Yjs updates (its Accept lists
        ``application/vnd.yjs.update``), or None. A key that is not Yjs is 406 unless the Accept
        takes JSON too (then it streams JSON)."""
        want_yjs, json_ok = accepts_yjs(headers.get("accept"))
        if not want_yjs:
            return None
        current = self.node.fetch_or_none(key, durable=True)
        if current is not None and current.merge != "yjs":
            if json_ok:
                return None
            raise NotAcceptable(
                f"{key} is a {current.merge} key: subscribe to its JSON view (application/json)"
            )
        return YjsFeed(self.node, state_vector_of(query, headers, since=False))

    @staticmethod
    def resume_cursor(conn: HTTPConnection, headers: Mapping[str, str]) -> int | None:
        raw = headers.get("last-event-id")
        what = "Last-Event-ID"
        if raw is None or not raw.strip():
            raw, what = conn.query_params.get("since"), "since"
        if raw is None or not raw.strip():
            return None
        text = raw.strip()
        if not text.isascii() or not text.isdigit() or len(text) > 18:
            raise InvalidValue(f"{what} must be a cursor (a whole number) from an earlier event id")
        return int(text)

    # ------------------------------------------------------------------ writes

    def write_options(self, headers: Mapping[str, str], *, merge: bool) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        raw_version = headers.get("version")
        if raw_version is not None:
            versions = version_list(raw_version, "Version")
            if len(versions) > 1:
                raise InvalidValue("a write names one Version")
            if versions:
                opts["version"] = versions[0]
        raw_parents = headers.get("parents")
        if raw_parents is not None:
            opts["parents"] = version_list(raw_parents, "Parents")
        raw_merge = headers.get("merge-type")
        if raw_merge is not None:
            name = raw_merge.strip().lower()
            if name not in MERGE_TYPES:
                raise InvalidOp(f"Merge-Type must be one of {', '.join(MERGE_TYPES)}")
            if merge:
                opts["merge"] = name
        opts["peer"] = parse_peer(headers.get("peer"))
        return opts

    def check_parents(self, key: Key, opts: Mapping[str, Any]) -> None:
        """A write naming ``Parents`` names versions the node has and, on an ``lww`` key, its current
        frontier (409 ``stale_parents`` otherwise): the rule a delegate's signed op meets too
        (:meth:`~statebus.runtime.Node.check_parents`; docs/data-model.md)."""
        parents = opts.get("parents")
        if parents:
            self.node.check_parents(key, parents, opts.get("version"))

    def patches_of(self, headers: Mapping[str, str], body: bytes) -> list[Any] | None:
        content_range = headers.get("content-range")
        if content_range is not None:
            content_range = _utf8_header(content_range, "Content-Range")
        return braid.parse_patch_request(
            body,
            content_range=content_range,
            patches=headers.get("patches"),
            max_bytes=self.settings.max_value_bytes,
        )

    async def put(
        self, key: Key, headers: Mapping[str, str], ctype: str | None, body: bytes
    ) -> WrittenResponse:
        opts = self.write_options(headers, merge=True)
        self.check_parents(key, opts)
        patches = self.patches_of(headers, body)
        if patches is not None:
            merge = opts.pop("merge", None)
            self.check_merge(key, merge)
            change = await self.node.patch(key, patches, **opts)
        elif opts.get("merge") == "yjs" and ctype in YJS_TYPES:
            change = await self.node.crdt_update(key, body, **opts)
        elif ctype is None or ctype == JSON_TYPE or ctype.endswith("+json"):
            value = loads_json(
                body, max_bytes=self.settings.max_value_bytes, max_depth=self.settings.max_json_depth
            )
            change = await self.node.save(key, value, **opts)  # fresh and checked: the bus keeps it as is
        else:
            if len(body) > self.settings.max_value_bytes:
                raise TooLarge(
                    f"the value is {len(body)} bytes; the limit is {self.settings.max_value_bytes}"
                )
            change = await self.node.save(key, body, content_type=headers["content-type"].strip(), **opts)
        return WrittenResponse(change, opts.get("version"))

    async def patch(
        self, key: Key, headers: Mapping[str, str], ctype: str | None, body: bytes
    ) -> WrittenResponse:
        opts = self.write_options(headers, merge=True)
        self.check_parents(key, opts)
        if ctype in YJS_TYPES and headers.get("content-range") is None and headers.get("patches") is None:
            if not body:
                raise InvalidOp("a Yjs update is not empty")
            opts.setdefault("merge", "yjs")
            change = await self.node.crdt_update(key, body, **opts)
            return WrittenResponse(change, opts.get("version"))
        patches = self.patches_of(headers, body)
        if patches is None:
            raise InvalidOp("PATCH needs Content-Range: json <range>, Patches: N, or a Yjs update body")
        self.check_merge(key, opts.pop("merge", None))
        change = await self.node.patch(key, patches, **opts)
        return WrittenResponse(change, opts.get("version"))

    def is_blob_put(self, ctype: str | None, headers: Mapping[str, str]) -> bool:
        """Whether a PUT may be a blob: a binary value (not JSON, not a patch, not a Yjs update) whose
        declared length is over ``blob_threshold_bytes``, or not declared (chunked)."""
        if self.node.blobs is None or ctype is None or ctype == JSON_TYPE or ctype.endswith("+json"):
            return False
        if "content-range" in headers or "patches" in headers:
            return False
        if ctype in YJS_TYPES and headers.get("merge-type", "").strip().lower() == "yjs":
            return False
        declared = declared_length(headers)
        return declared is None or declared > self.settings.blob_threshold_bytes

    async def put_blob(
        self, key: Key, headers: Mapping[str, str], receive: Receive, conditional: bool
    ) -> WrittenResponse:
        """A binary PUT, streamed: into the blob store past the threshold (the op then holds the
        pointer), an ordinary value below it (:mod:`statebus.http.blobs`, rule 1). Every check that
        does not need the body runs before a byte of it is read."""
        assert self.node.blobs is not None
        opts = self.write_options(headers, merge=True)
        self.check_parents(key, opts)
        if conditional:
            check_preconditions(self.node.fetch_or_none(key), headers)
        ctype = headers["content-type"].strip()
        got = await receive_value(
            receive,
            headers,
            self.node.blobs,
            self.settings.blob_threshold_bytes,
            self.settings.max_value_bytes,
        )
        if isinstance(got, BlobInfo):
            pointer = BlobPointer(got.hash, got.size, ctype)
            if got.size >= self.settings.swarm_min_bytes and not self.node.blobs.sealed:
                from statebus.swarm.torrent import signed_pointer  # libtorrent, for big blobs only

                path = self.node.blobs.path(got.hash)  # the signed pointer names its torrent too
                pointer = await asyncio.to_thread(signed_pointer, pointer, path)
            change = await self.node.save(key, pointer.encode(), content_type=BLOB_TYPE, **opts)
        else:
            change = await self.node.save(key, got, content_type=ctype, **opts)
        return WrittenResponse(change, opts.get("version"))

    def check_merge(self, key: Key, merge: str | None) -> None:
        """Range patches apply to ``lww`` JSON keys: refuse a Merge-Type that says otherwise."""
        if merge is not None and merge != "lww":
            raise InvalidOp(f"range patches apply to Merge-Type lww keys, not {merge!r}")


__all__ = ["KeyEndpoint", "error_response", "etag_of", "parse_range_header", "read_body"]
