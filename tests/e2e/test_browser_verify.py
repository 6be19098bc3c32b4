"""statebus.js verifies every value it shows as someone's (issue 19), in real headless Chromium.

The page is served through a man-in-the-middle proxy that rewrites values in transit (as an altered
node or relay would), both in ``GET ?proof`` answers and in the lines of an SSE stream. The rewritten
values must be flagged, with the reason, and kept out of ``statebus.state``; genuine values of a
followed author, a value its delegate wrote and the owner's own (batch-signed) values verify, with
WebCrypto's Ed25519 and, in a browser without it, with the vendored ``@noble/ed25519``. The node's
page shows the state as a badge next to the value.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from statebus.identity import Identity, delegate, record_key, sign_op, sign_request
from statebus.oplog import Op, encode_op
from statebus.oplog.codec import mint_version
from statebus.testing.live_server import live_server
from tests.support.node_harness import browser_available, run_browser

pytestmark = pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium")

OP_TYPE = "application/vnd.statebus.op+json"
_CLOCK = itertools.count(int(time.time()))
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


def plant_json(base_url: str, who: Identity, key: str, value: object) -> httpx.Response:
    """Store ``value`` at ``key`` as ``who``'s signed op (a peer's namespace the node hosts)."""
    op = Op(key, "", (), who.pubkey, next(_CLOCK), "lww", "set", value)
    data = encode_op(sign_op(dataclasses.replace(op, version=mint_version(op)), who))
    with httpx.Client(base_url=base_url, timeout=10) as anon:
        req = anon.build_request("PUT", key, content=data, headers={"Content-Type": OP_TYPE})
        req.headers.update(sign_request(req.method, str(req.url), req.headers, req.content, who))
        return anon.send(req)


def _forge(line: bytes, forged: dict[str, object]) -> bytes:
    """An SSE ``data:`` line with its value replaced, if its key is one to forge."""
    if not line.startswith(b"data:"):
        return line
    try:
        event = json.loads(line[5:])
    except ValueError:
        return line
    if isinstance(event, dict) and event.get("key") in forged and "value" in event:
        event["value"] = forged[event["key"]]
        return b"data: " + json.dumps(event).encode()
    return line


@contextlib.contextmanager
def tampering_proxy(upstream: str, forged: dict[str, object]) -> Iterator[str]:
    """A loopback HTTP proxy in front of ``upstream`` that replaces the values of the keys in
    ``forged`` (full keys, and their ``/~/`` forms) in ``GET ?proof`` answers and SSE streams."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", *HOP_BY_HOP)}
            with contextlib.suppress(BrokenPipeError, ConnectionResetError), httpx.Client(timeout=30) as http:
                if "text/event-stream" in self.headers.get("accept", ""):
                    with http.stream("GET", upstream + self.path, headers=headers) as r:
                        self._head(r)
                        for line in r.iter_lines():
                            self.wfile.write(_forge(line.encode(), forged) + b"\n")
                            self.wfile.flush()
                    return
                r = http.get(upstream + self.path, headers=headers, follow_redirects=False)
                body = r.content
                path = self.path.split("?")[0]
                if path in forged and "proof" in self.path and r.status_code == 200:
                    data = r.json()
                    data["value"] = forged[path]
                    body = json.dumps(data).encode()
                self._head(r, len(body))
                self.wfile.write(body)

        def _head(self, r: httpx.Response, length: int | None = None) -> None:
            self.send_response(r.status_code)
            for k, v in r.headers.multi_items():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            if length is not None:
                self.send_header("content-length", str(length))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


PAGE_SCRIPT = """
(async () => {
  const out = {get: {}, subscribe: {}, badge: {}}
  try {
    await statebus.ready
    const [genuine, altered, own, delegated] = %s
    for (const key of [genuine, altered, own, delegated]) {
      out.get[key] = await statebus.getVerified(key)
      out.get[key].kept = key in statebus.state || ('/~' + key.slice(53)) in statebus.state
    }
    // a subscription with verify: each value arrives with its proof and is checked before the callback
    await new Promise(done => {
      const stop = statebus.subscribe(genuine.slice(0, genuine.lastIndexOf('/') + 1), (key, value, event) => {
        const kept = key in statebus.state
        out.subscribe[key] = {value, verified: event.verified, reason: event.reason, kept}
        if (Object.keys(out.subscribe).length === 3) { stop(); done() }
      }, {verify: true})
    })
    // the node's page: click a key of the tree, read the badge next to its value
    const wait = async cond => {
      for (let i = 0; i < 400 && !cond(); i++) await new Promise(r => setTimeout(r, 25))
    }
    for (const key of ['/~/notes/1', '/~/notes/2']) {
      await wait(() => document.querySelector(`li[data-key="${key}"]`))
      document.querySelector(`li[data-key="${key}"]`).click()
      await wait(() => !document.getElementById('verified').hidden)
      const el = document.getElementById('verified')
      const shown = document.getElementById('value').textContent
      out.badge[key] = {text: el.textContent, title: el.title, shown}
    }
  } catch (e) {
    out.error = String(e && e.stack || e)
  }
  window.__result = out
  window.__done = true
})()
"""


NO_WEBCRYPTO_ED25519 = """
const importKey = crypto.subtle.importKey.bind(crypto.subtle)
crypto.subtle.importKey = (format, data, alg, ...rest) =>
  (alg === 'Ed25519' || (alg && alg.name === 'Ed25519'))
    ? Promise.reject(new DOMException('Unrecognized name.', 'NotSupportedError'))
    : importKey(format, data, alg, ...rest)
"""

FALLBACK_SCRIPT = """
(async () => {
  const out = {}
  try {
    for (const key of %s) {
      const r = await statebus.getVerified(key)
      out[key] = {verified: r.verified, reason: r.reason}
    }
    out.ed25519 = statebus.ed25519
    // a signature with one bit flipped must not verify (the fallback really checks)
    const data = await (await fetch(%s + '?proof', {credentials: 'same-origin'})).json()
    const sig = Uint8Array.from(atob(data.proof.sig), c => c.charCodeAt(0))
    sig[10] ^= 1
    const flipped = {...data.proof, sig: btoa(String.fromCharCode(...sig))}
    out.flipped = await statebus.verifyProof(data.key, data.value, flipped)
  } catch (e) {
    out.error = String(e && e.stack || e)
  }
  window.__result = out
  window.__done = true
})()
"""


def test_values_rewritten_in_transit_are_flagged_and_genuine_ones_verify(tmp_path: Path) -> None:
    author, device = Identity.generate(), Identity.generate()
    genuine, altered = f"/{author.pubkey}/chirp/1", f"/{author.pubkey}/chirp/2"
    delegated = f"/{author.pubkey}/chirp/3"
    with live_server(tmp_path / "node", timeout=60) as srv:
        with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as owner:
            assert owner.put("/~/.acl/.host", json=[author.pubkey]).status_code == 200
            assert owner.put("/~/notes/1", json={"text": "the owner's own"}).status_code == 200
            assert owner.put("/~/notes/2", json={"text": "the owner's second"}).status_code == 200
        for key, text in ((genuine, "hello from the author"), (altered, "what the author wrote")):
            r = plant_json(srv.url, author, key, {"text": text})
            assert r.status_code == 200, r.text
        grant = delegate(author, device.pubkey, [f"/{author.pubkey}/chirp/"], issued=1).to_json()
        r = plant_json(srv.url, author, record_key(author.pubkey, device.pubkey), grant)
        assert r.status_code == 200, r.text
        r = plant_json(srv.url, device, delegated, {"text": "from the author's phone"})
        assert r.status_code == 200, r.text
        own, own2 = f"/{srv.local}/notes/1", f"/{srv.local}/notes/2"
        forged: dict[str, object] = {altered: {"text": "rewritten by the node"}}
        forged[own2] = forged["/~/notes/2"] = {"text": "rewritten too"}
        with tampering_proxy(srv.url, forged) as proxy:
            page = run_browser(
                f"{proxy}/",  # the node's page, which loads statebus.js, through the proxy
                PAGE_SCRIPT % json.dumps([genuine, altered, own, delegated]),
                timeout=90,
                before=[f"{proxy}/login?token={srv.token}"],
            )
            # a browser whose WebCrypto has no Ed25519: the vendored @noble/ed25519 checks instead
            fallback = run_browser(
                f"{proxy}/",
                FALLBACK_SCRIPT % (json.dumps([genuine, altered, own, delegated]), json.dumps(genuine)),
                timeout=90,
                before=[f"{proxy}/login?token={srv.token}"],
                extra_args=["--init-script", NO_WEBCRYPTO_ED25519],
            )
    assert fallback["ok"], fallback
    assert fallback["result"].pop("ed25519") == "noble", fallback["result"]
    flipped = fallback["result"].pop("flipped")
    assert flipped["verified"] is False and flipped["reason"].startswith("the signature does not verify"), (
        flipped
    )
    assert {k: v["verified"] for k, v in fallback["result"].items()} == {
        genuine: True,
        altered: False,
        own: True,
        delegated: True,
    }, fallback["result"]
    assert fallback["result"][altered]["reason"] == "the value differs from the one its author signed"
    assert page["ok"], page
    result = page["result"]
    assert "error" not in result, result
    got = result["get"]
    assert got[genuine]["verified"] is True, got[genuine]
    assert got[genuine]["value"] == {"text": "hello from the author"}
    assert got[genuine]["reason"].startswith(f"signed by {author.pubkey}")
    assert got[own]["verified"] is True, got[own]  # a batch-signed local write
    assert got[delegated]["verified"] is True, got[delegated]  # the owner's delegation op was checked
    assert got[delegated]["reason"] == f"signed by {device.pubkey} (a delegate of the owner)"
    assert got[altered]["verified"] is False, got[altered]
    assert got[altered]["reason"] == "the value differs from the one its author signed"
    assert got[altered]["kept"] is False  # never shown as the author's
    sub = result["subscribe"]
    assert sub[genuine]["verified"] is True and sub[genuine]["kept"] is True, sub
    assert sub[altered]["verified"] is False and sub[altered]["kept"] is False, sub
    assert sub[altered]["value"] == {"text": "rewritten by the node"}  # what came: flagged, not kept
    assert sub[altered]["reason"] == "the value differs from the one its author signed"
    badge = result["badge"]
    assert badge["/~/notes/1"]["text"] == "verified", badge
    assert badge["/~/notes/2"]["text"] == "not verified", badge
    assert "rewritten too" in badge["/~/notes/2"]["shown"]  # the page shows it, flagged
    assert badge["/~/notes/2"]["title"] == "the value differs from the one its author signed"
