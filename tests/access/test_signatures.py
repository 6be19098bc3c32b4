"""Request verification policy: the bounded nonce store, the authority check, the ASGI gate."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from statebus.access.gate import SIGNER, SignatureGate
from statebus.access.signatures import NonceStore, RequestVerifier
from statebus.errors import BadSignature, RateLimited
from statebus.identity import Identity, sign_request


def test_nonce_store_remembers_for_max_age_and_stays_bounded() -> None:
    now = [0.0]
    store = NonceStore(max_age=10, max_entries=3, clock=lambda: now[0])
    assert not store.seen("k", "a") and store.seen("k", "a")
    assert not store.seen("other", "a")  # nonces are per key
    assert not store.seen("k", "b")
    with pytest.raises(RateLimited) as info:  # full of live nonces: refuse, never forget one early
        store.seen("k", "c")
    assert info.value.retry_after >= 1
    assert store.seen("k", "a")  # still remembered
    now[0] = 10.5
    assert not store.seen("k", "c") and len(store) == 1
    assert not store.seen("k", "a")  # expired: its request is too old to verify anyway


def scope_for(
    url_host: str, server: tuple[str, int], headers: list[tuple[bytes, bytes]], path: bytes = b"/~/x"
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "PUT",
        "scheme": "http",
        "path": path.decode(),
        "raw_path": path,
        "query_string": b"",
        "server": server,
        "headers": [(b"host", url_host.encode()), *headers],
    }


def signed_headers(who: Identity, url: str, body: bytes) -> list[tuple[bytes, bytes]]:
    out = sign_request("PUT", url, {}, body, who)
    return [(k.lower().encode(), v.encode()) for k, v in out.items()]


def test_authority_must_be_the_nodes_own() -> None:
    v = RequestVerifier(public_addresses=["node.example:443"])
    own = ("127.0.0.1", 8000)
    assert v.authority_ok({"server": own}, "127.0.0.1:8000")
    assert v.authority_ok({"server": own}, "localhost:8000")
    assert not v.authority_ok({"server": own}, "127.0.0.1:8001")
    assert not v.authority_ok({"server": own}, "evil.example:8000")
    assert v.authority_ok({"server": own}, "node.example:443")
    assert v.authority_ok({"server": ("::1", 80)}, "[::1]")
    assert not v.authority_ok({}, "127.0.0.1:8000")


def test_verify_accepts_once_and_rejects_replays_and_tampering() -> None:
    who = Identity.generate()
    v = RequestVerifier(max_age=60)
    body = b'{"a":1}'
    headers = signed_headers(who, "http://127.0.0.1:8000/~/x", body)
    scope = scope_for("127.0.0.1:8000", ("127.0.0.1", 8000), headers)
    assert v.verify(scope, body) == who.pubkey
    with pytest.raises(BadSignature, match="replay"):
        v.verify(scope, body)
    fresh = signed_headers(who, "http://127.0.0.1:8000/~/x", body)
    with pytest.raises(BadSignature):
        v.verify(scope_for("127.0.0.1:8000", ("127.0.0.1", 8000), fresh), b'{"a":2}')
    with pytest.raises(BadSignature):
        v.verify(scope_for("127.0.0.1:8000", ("127.0.0.1", 8000), fresh, path=b"/~/y"), body)
    other = signed_headers(who, "http://127.0.0.1:9000/~/x", body)
    with pytest.raises(BadSignature, match="another host"):
        v.verify(scope_for("127.0.0.1:9000", ("127.0.0.1", 8000), other), body)


def test_a_signature_from_a_fast_clock_cannot_be_replayed_while_it_is_accepted() -> None:
    """A ``created`` ahead of our clock stays acceptable for max_age + the skew: its nonce must be
    kept that long, or the same request could be replayed once the nonce was forgotten."""
    who = Identity.generate()
    t = [1_000_000.0]
    v = RequestVerifier(max_age=10, clock=lambda: t[0], max_skew=100)
    v.nonces.clock = lambda: t[0]
    body = b'{"a":1}'
    url = "http://127.0.0.1:8000/~/x"
    out = sign_request("PUT", url, {}, body, who, created=t[0] + 90)  # the signer is 90 s fast
    scope = scope_for(
        "127.0.0.1:8000", ("127.0.0.1", 8000), [(k.lower().encode(), v.encode()) for k, v in out.items()]
    )
    assert v.verify(scope, body) == who.pubkey
    for later in (16, 60, 99):  # still inside created + max_age: the nonce is still remembered
        t[0] = 1_000_000.0 + later
        with pytest.raises(BadSignature, match="replay"):
            v.verify(scope, body)
    t[0] = 1_000_000.0 + 101  # created + max_age has passed: too old, whatever the nonce store says
    with pytest.raises(BadSignature, match="too old"):
        v.verify(scope, body)


def test_access_control_takes_the_skew_bound_from_the_settings() -> None:
    from statebus.config import Settings

    assert Settings().max_clock_skew >= 60  # NTP-level skew (a minute) must never stop federation
    assert RequestVerifier(max_skew=Settings().max_clock_skew).max_skew == Settings().max_clock_skew


def test_gate_passes_the_signer_and_replays_the_body() -> None:
    who = Identity.generate()
    body = b'{"a":1}'
    seen: dict[str, Any] = {}
    verifier = RequestVerifier()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["signer"] = scope.get(SIGNER)
        seen["body"] = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def run(scope: dict[str, Any], chunks: list[bytes]) -> list[dict[str, Any]]:
        queue = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return queue.pop(0) if queue else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await SignatureGate(app, verifier, max_body=100)(scope, receive, send)
        return sent

    headers = signed_headers(who, "http://127.0.0.1:8000/~/x", body)
    sent = asyncio.run(run(scope_for("127.0.0.1:8000", ("127.0.0.1", 8000), headers), [body[:3], body[3:]]))
    assert sent[0]["status"] == 200 and seen == {"signer": who.pubkey, "body": body}
    # a replayed (here: bad) signature never reaches the app: 401 JSON
    seen.clear()
    sent = asyncio.run(run(scope_for("127.0.0.1:8000", ("127.0.0.1", 8000), headers), [body]))
    assert sent[0]["status"] == 401 and not seen
    assert json.loads(sent[1]["body"])["error"] == "bad_signature"
    # too big: 413 before verifying
    big = b"x" * 200
    headers = signed_headers(who, "http://127.0.0.1:8000/~/x", big)
    sent = asyncio.run(run(scope_for("127.0.0.1:8000", ("127.0.0.1", 8000), headers), [big]))
    assert sent[0]["status"] == 413
    # unsigned requests pass untouched
    sent = asyncio.run(run(scope_for("127.0.0.1:8000", ("127.0.0.1", 8000), []), [body]))
    assert sent[0]["status"] == 200 and seen["signer"] is None
