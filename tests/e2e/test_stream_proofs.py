"""Braid subscriptions and the websocket carry each value's signature material on request (issue 19).

``GET /key?proof`` with ``Subscribe: true`` puts a ``Proof`` header on every update of a value; a
websocket ``get`` with ``"proof": true`` puts a ``proof`` object on every frame of a value. Both are the
object ``GET ?proof`` answers (docs/wire-protocol.md, "Proofs"), checked here from its bytes alone, as a
browser would: the Ed25519 signature (one op's, or a batch commit's with its Merkle path) over
``signed``, and the key, author and value inside ``signed``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from statebus.http.websocket import WS_PATH
from statebus.identity.keys import verify_signature
from statebus.oplog.codec import SIGNING_DOMAIN
from statebus.testing.braid_stream import BraidStreamParser, StreamUpdate
from statebus.testing.live_server import LiveServer, live_server

JS_DIR = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("proofs")) as s:
        yield s


def opened(proof: dict[str, Any]) -> dict[str, Any]:
    """The op inside ``proof["signed"]``, once its signature verifies (the documented formats)."""
    signed, sig = base64.b64decode(proof["signed"]), base64.b64decode(proof["sig"])
    assert signed.startswith(SIGNING_DOMAIN)
    if len(sig) == 64:
        assert verify_signature(proof["author"], signed, sig)
    else:  # "C1" | commit signature | n | i | siblings; leaf sha256(0 | sha256(signed))
        assert sig[:2] == b"C1"
        n, i = struct.unpack(">II", sig[66:74])
        node = hashlib.sha256(b"\0" + hashlib.sha256(signed).digest()).digest()
        width, index = n, i
        siblings = [sig[j : j + 32] for j in range(74, len(sig), 32)]
        while width > 1:
            if index % 2 == 1:
                node = hashlib.sha256(b"\1" + siblings.pop(0) + node).digest()
            elif index + 1 < width:
                node = hashlib.sha256(b"\1" + node + siblings.pop(0)).digest()
            width, index = (width + 1) // 2, index // 2
        assert not siblings
        message = b"statebus-commit-v1\n" + struct.pack(">I", n) + node
        assert verify_signature(proof["author"], message, sig[2:66])
    op: dict[str, Any] = json.loads(signed[len(SIGNING_DOMAIN) :])
    return op


def braid_updates(srv: LiveServer, path: str, n: int, *, then: Any = None) -> list[StreamUpdate]:
    """The first ``n`` updates of a Braid subscription to ``path``; ``then()`` runs after the first."""
    parser, got = BraidStreamParser(), []
    headers = {**srv.auth, "Subscribe": "true"}
    with httpx.stream("GET", srv.url + path, headers=headers, timeout=10) as r:
        assert r.status_code == 209
        chunks = r.iter_raw()
        while len(got) < n:
            got += parser.feed(next(chunks))
            if then is not None and got:
                then()
                then = None
    return got


def test_braid_updates_carry_a_proof_header_when_asked(srv: LiveServer) -> None:
    key = f"/{srv.local}/proofs/braid"
    assert httpx.put(srv.url + key, json={"text": "first"}, headers=srv.auth).status_code == 200
    later = lambda: httpx.put(srv.url + key, json={"text": "second"}, headers=srv.auth)  # noqa: E731
    first, second = braid_updates(srv, key + "?proof", 2, then=later)
    for update, text in ((first, "first"), (second, "second")):
        assert json.loads(update.body or b"") == {"text": text}
        proof = json.loads(update.headers["proof"])
        op = opened(proof)
        assert (op["k"], op["a"], op["b"]) == (key, srv.local, {"text": text})
        assert proof["author"] == srv.local
    # the header holds what GET ?proof answers for the current value
    assert httpx.get(srv.url + key + "?proof", headers=srv.auth).json()["proof"] == proof
    # without ?proof, no header; a value built by a patch says why it cannot be verified
    (plain,) = braid_updates(srv, key, 1)
    assert "proof" not in plain.headers
    httpx.patch(srv.url + key, content=b'"third"', headers={**srv.auth, "Content-Range": "json .text"})
    (patched,) = braid_updates(srv, key + "?proof", 1)
    assert "patch" in json.loads(patched.headers["proof"])["unverifiable"]


def test_a_stock_braid_client_reads_updates_that_carry_proofs(srv: LiveServer) -> None:
    """braid-http's own parser (npm, 1.3) still reads the updates and keeps the header."""
    key = f"/{srv.local}/proofs/npm"
    httpx.put(srv.url + key, json=[1, 2], headers=srv.auth)
    script = (
        "const {fetch: bf} = require(require('path').resolve('node_modules/braid-http'));"
        "(async () => { const r = await bf(process.argv[1], {subscribe: true,"
        " headers: {Authorization: 'Bearer ' + process.argv[2]}});"
        " r.subscribe(u => { process.stdout.write(JSON.stringify({body: u.body_text,"
        " proof: (u.extra_headers || {}).proof})); process.exit(0) }, e => { throw e }) })()"
    )
    proc = subprocess.run(
        ["node", "-e", script, srv.url + key + "?proof", srv.token],
        cwd=JS_DIR, capture_output=True, timeout=30, check=True,
    )  # fmt: skip
    got = json.loads(proc.stdout)
    assert json.loads(got["body"]) == [1, 2]
    assert opened(json.loads(got["proof"]))["b"] == [1, 2]


def test_websocket_frames_carry_a_proof_when_asked(srv: LiveServer) -> None:
    key = f"/{srv.local}/proofs/ws"
    httpx.put(srv.url + key, json={"n": 1}, headers=srv.auth)
    httpx.put(f"{srv.url}/{srv.local}/proofs/plain", json={"n": 3}, headers=srv.auth)
    url = srv.url.replace("http://", "ws://") + WS_PATH + f"?token={srv.token}"

    async def main() -> None:
        async with connect(url) as ws:

            async def recv() -> dict[str, Any]:
                out: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
                return out

            await ws.send(json.dumps({"get": "proofs/ws", "proof": True}))
            first = await recv()
            assert first["set"] == {"key": "proofs/ws", "val": {"n": 1}}
            op = opened(first["proof"])
            assert (op["k"], op["a"], op["b"]) == (key, srv.local, {"n": 1})
            await asyncio.to_thread(httpx.put, srv.url + key, json={"n": 2}, headers=srv.auth)
            second = await recv()
            assert second["set"]["val"] == {"n": 2} and opened(second["proof"])["b"] == {"n": 2}
            await asyncio.to_thread(httpx.delete, srv.url + key, headers=srv.auth)
            assert await recv() == {"set": {"key": "proofs/ws"}}  # a deleted key: nothing to prove
            await ws.send(json.dumps({"get": "proofs/plain"}))
            plain = await recv()
            assert plain["set"] == {"key": "proofs/plain", "val": {"n": 3}} and "proof" not in plain
            await ws.send(json.dumps({"get": "proofs/other", "proof": "yes"}))
            assert await recv() == {
                "error": "invalid_value",
                "detail": "proof is true or false",
                "key": "proofs/other",
            }

    asyncio.run(main())
