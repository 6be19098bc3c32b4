"""HTTP Message Signatures (RFC 9421) with Ed25519, transport-agnostic.

The signature base is built by the ``http-message-signatures`` package; this module only chooses the
policy. A request signed here carries::

    Content-Digest: sha-256=:…:                      (RFC 9530; only when there is a body)
    Signature-Input: sb=("@method" "@target-uri" "content-digest");created=…;keyid="<pubkey>";
                     alg="ed25519";nonce="…";tag="statebus"
    Signature: sb=:<base64 Ed25519 signature>:

``keyid`` is the signer's 52-character public key, so no key lookup is needed. :func:`verify_request`
requires ``@method`` and ``@target-uri`` to be covered (and ``content-digest`` when a body is present),
checks the body against the digest, rejects a ``created`` older than ``max_age`` or more than
``max_skew`` seconds ahead (default :data:`MAX_SKEW`, two minutes: clocks kept by NTP, or drifting for
a while without it, differ by less), and asks ``seen_nonce`` whether the nonce was used before. A
signature is thus accepted for ``max_age + max_skew`` seconds of the verifier's time: remember its
nonce that long.

Use from httpx: ``request.headers.update(sign_request(request.method, str(request.url),
request.headers, request.content, identity))``. From Starlette: ``verify_request(request.method,
asgi_target_uri(request.scope), request.headers, await request.body(), now)`` (not
``str(request.url)``, whose path is decoded). Behind a reverse proxy, pass the URL the client used.
"""

from __future__ import annotations

import datetime
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureAlgorithm,
    HTTPSignatureKeyResolver,
    InvalidSignature,
)

from statebus.errors import BadSignature
from statebus.identity.keys import Identity
from statebus.keys import decode_pubkey, is_pubkey
from statebus.types import PubKey

LABEL = "sb"
TAG = "statebus"
COVERED = ("@method", "@target-uri")
MAX_SKEW = 120
"""Default bound, in seconds, on how far a signer's clock may run ahead of the verifier's."""
SeenNonce = Callable[[PubKey, str], bool]
"""``seen_nonce(pubkey, nonce)`` returns True when that nonce was already used (and records it)."""


class _Ed25519(HTTPSignatureAlgorithm):
    """Ed25519 through PyNaCl; keys are raw 32-byte public keys (verification only)."""

    algorithm_id = "ed25519"

    def __init__(self, public_key: Any = None, private_key: Any = None) -> None:
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise HTTPMessageSignaturesException("an Ed25519 public key is 32 raw bytes")
        self._key = nacl.signing.VerifyKey(public_key)

    def sign(self, message: bytes) -> bytes:  # pragma: no cover - signing goes through Identity
        raise HTTPMessageSignaturesException("this algorithm object only verifies")

    def verify(self, signature: bytes, message: bytes) -> None:
        try:
            self._key.verify(message, signature)
        except nacl.exceptions.BadSignatureError:
            raise InvalidSignature("signature does not verify for its keyid") from None


class _PubkeyResolver(HTTPSignatureKeyResolver):
    def resolve_public_key(self, key_id: str) -> bytes:
        if not isinstance(key_id, str) or not is_pubkey(key_id):
            raise InvalidSignature("keyid is not a statebus public key (52 base32 characters)")
        return decode_pubkey(key_id)

    def resolve_private_key(self, key_id: str) -> bytes:  # pragma: no cover
        raise HTTPMessageSignaturesException("private keys never pass through the resolver")


class _Headers:
    """Header field lines in order (repeats kept), with the writes the signer needs."""

    def __init__(self, lines: Iterable[tuple[str, str]]) -> None:
        self.lines = [(str(k), str(v)) for k, v in lines]

    def items(self) -> list[tuple[str, str]]:
        return list(self.lines)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k for k, _ in self.lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(k.lower() == name.lower() for k, _ in self.lines)

    def __setitem__(self, name: str, value: str) -> None:
        del self[name]
        self.lines.append((name, value))

    def __delitem__(self, name: str) -> None:
        self.lines = [(k, v) for k, v in self.lines if k.lower() != name.lower()]


@dataclass
class _Request:
    method: str
    url: str
    headers: _Headers


def _lines(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Iterable[tuple[str, str]]:
    if isinstance(headers, Mapping):
        multi = getattr(headers, "multi_items", None)
        return multi() if callable(multi) else headers.items()
    return headers


class _Verifier(HTTPMessageVerifier):
    """The package's verifier with a caller-given clock (it reads the wall clock otherwise)."""

    def __init__(self, now: float, max_skew: float) -> None:
        super().__init__(signature_algorithm=_Ed25519, key_resolver=_PubkeyResolver())
        self.now = now
        self.max_skew = max_skew
        self.max_clock_skew = datetime.timedelta(seconds=max_skew)

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        created = sig_input.params.get("created")
        if type(created) is not int:
            raise InvalidSignature('signature has no integer "created" parameter')
        if created > self.now + self.max_skew:
            raise InvalidSignature(
                f"signature was created {created - self.now:.0f}s in the future; clocks may differ by at "
                f"most {self.max_skew:.0f}s (set the signer's clock, e.g. with NTP)"
            )
        if max_age is not None and created < self.now - max_age.total_seconds():
            raise InvalidSignature(
                f"signature is too old (created more than {max_age.total_seconds():.0f}s ago)"
            )
        expires = sig_input.params.get("expires")
        if expires is not None and (type(expires) is not int or expires < self.now - self.max_skew):
            raise InvalidSignature("signature has expired")


def asgi_target_uri(scope: Mapping[str, Any]) -> str:
    """The request URL as the client sent it (still percent-encoded), from an ASGI scope.

    Starlette's ``str(request.url)`` decodes the path, which breaks ``@target-uri``; use
    ``asgi_target_uri(request.scope)`` instead. The authority comes from the ``Host`` header (else the
    scope's ``server``), the path from ``raw_path`` (else ``path``, re-quoted), then ``query_string``.
    """
    scheme = str(scope.get("scheme") or "http")
    host = ""
    for name, value in scope.get("headers") or ():
        if bytes(name).lower() == b"host":
            host = bytes(value).decode("latin-1")
            break
    if not host:
        server = scope.get("server")
        if server:
            h, port = server[0], server[1]
            default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(scheme)
            host = str(h) if port in (None, default) else f"{h}:{port}"
    raw = scope.get("raw_path")
    path = bytes(raw).decode("latin-1") if raw else urllib.parse.quote(str(scope.get("path") or "/"))
    query = bytes(scope.get("query_string") or b"").decode("latin-1")
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


def sign_request(
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes | None,
    identity: Identity,
    created: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Sign a request; return the headers to add (``Signature-Input``, ``Signature``, ``Content-Digest``).

    Args:
        method: the HTTP method (any case; signed upper case).
        url: the absolute, encoded URL the request goes to.
        headers: the request's headers (not changed).
        body: the body bytes; ``None`` or ``b""`` means no body and no digest.
        identity: the signer; its pubkey becomes ``keyid``.
        created: Unix time of signing (default now).
        nonce: a unique string (default 16 random bytes, urlsafe base64).

    Raises:
        BadSignature: the request cannot be signed (a malformed URL or header).
    """
    msg = _Request(method.upper(), url, _Headers(_lines(headers)))
    before = {k.lower() for k in msg.headers}
    when = datetime.datetime.fromtimestamp(created if created is not None else time.time(), datetime.UTC)
    signer = HTTPMessageSigner(signature_algorithm=_Ed25519)
    try:
        prepared = signer.prepare(
            msg,
            key_id=identity.pubkey,
            created=when,
            nonce=nonce if nonce is not None else secrets.token_urlsafe(16),
            label=LABEL,
            tag=TAG,
            covered_component_ids=COVERED,
            body=body if body else None,
            use_existing_digest=bool(body) and "content-digest" in before,
        )
        signer.apply(msg, prepared, identity.sign(prepared.signature_base))
    except HTTPMessageSignaturesException as exc:
        raise BadSignature(f"cannot sign request: {exc}") from None
    wanted = {"signature-input", "signature", "content-digest"}
    return {k: v for k, v in msg.headers.items() if k.lower() in wanted}


def verify_request(
    method: str,
    url: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes | None,
    now: float,
    max_age: float = 300,
    seen_nonce: SeenNonce | None = None,
    max_skew: float = MAX_SKEW,
) -> PubKey:
    """Verify a request's ``sb`` signature; return the signer's public key.

    ``created`` may be up to ``max_age`` seconds in the past and ``max_skew`` seconds in the future of
    ``now`` (the signer's clock may run ahead of ours).

    Raises:
        BadSignature: missing or malformed signature, a keyid that is not a pubkey, a bad signature, a
            body that does not match its Content-Digest, a ``created`` too old or in the future, a
            missing or replayed nonce (when ``seen_nonce`` is given), or required parts not covered.
    """
    msg = _Request(method.upper(), url, _Headers(_lines(headers)))
    verifier = _Verifier(now, max_skew)
    required = list(COVERED) + (["content-digest"] if body else [])
    try:
        results = verifier.verify(
            msg,
            max_age=datetime.timedelta(seconds=max_age),
            expect_tag=TAG,
            expect_label=LABEL,
            require_components=required,
        )
        if body:
            results = verifier.verify_body(msg, results, body)
    except (InvalidSignature, HTTPMessageSignaturesException) as exc:
        raise BadSignature(f"request signature: {exc}") from None
    params = results[0].parameters
    keyid = params.get("keyid")
    if not isinstance(keyid, str) or not is_pubkey(keyid):
        raise BadSignature("request signature: keyid is not a statebus public key")
    if seen_nonce is not None:
        nonce = params.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise BadSignature("request signature: a nonce is required")
        if seen_nonce(keyid, nonce):
            raise BadSignature("request signature: nonce already used (replay)")
    return keyid
