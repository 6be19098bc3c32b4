"""statebus.js verifies every value it shows as someone's (issue 19), in real headless Chromium.

The page is served through a man-in-the-middle proxy that rewrites one value of a followed author in
transit (as an altered node or relay would). ``statebus.getVerified`` must flag it, with the reason,
and keep it out of ``statebus.state``; a genuine value of that author, and the owner's own
(batch-signed) value, verify.
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

from statebus.identity import Identity, sign_op, sign_request
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


@contextlib.contextmanager
def tampering_proxy(upstream: str, path: str, forged: object) -> Iterator[str]:
    """A loopback HTTP proxy in front of ``upstream`` that replaces the value of ``GET path?proof``."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", *HOP_BY_HOP)}
            with httpx.Client(timeout=10) as http:
                r = http.get(upstream + self.path, headers=headers, follow_redirects=False)
            body = r.content
            if self.path.split("?")[0] == path and "proof" in self.path:
                data = r.json()
                data["value"] = forged
                body = json.dumps(data).encode()
            self.send_response(r.status_code)
            for k, v in r.headers.multi_items():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the browser may hang up
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
  try {
    await statebus.ready
    const out = {}
    for (const key of %s) {
      out[key] = await statebus.getVerified(key)
      out[key].kept = key in statebus.state || ('/~' + key.slice(53)) in statebus.state
    }
    window.__result = out
  } catch (e) {
    window.__result = {error: String(e && e.stack || e)}
  }
  window.__done = true
})()
"""


def test_a_value_rewritten_in_transit_is_flagged_and_a_genuine_one_verifies(tmp_path: Path) -> None:
    author = Identity.generate()
    genuine, altered = f"/{author.pubkey}/chirp/1", f"/{author.pubkey}/chirp/2"
    with live_server(tmp_path / "node", timeout=60) as srv:
        with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as owner:
            assert owner.put("/~/.acl/.host", json=[author.pubkey]).status_code == 200
            assert owner.put("/~/notes/1", json={"text": "the owner's own"}).status_code == 200
        for key, text in ((genuine, "hello from the author"), (altered, "what the author wrote")):
            r = plant_json(srv.url, author, key, {"text": text})
            assert r.status_code == 200, r.text
        own = f"/{srv.local}/notes/1"
        with tampering_proxy(srv.url, altered, {"text": "rewritten by the node"}) as proxy:
            page = run_browser(
                f"{proxy}/",  # the node's page, which loads statebus.js, through the proxy
                PAGE_SCRIPT % json.dumps([genuine, altered, own]),
                timeout=90,
                before=[f"{proxy}/login?token={srv.token}"],
            )
    assert page["ok"], page
    result = page["result"]
    assert "error" not in result, result
    assert result[genuine]["verified"] is True, result[genuine]
    assert result[genuine]["value"] == {"text": "hello from the author"}
    assert result[genuine]["reason"].startswith(f"signed by {author.pubkey}")
    assert result[own]["verified"] is True, result[own]  # a batch-signed local write
    assert result[altered]["verified"] is False, result[altered]
    assert result[altered]["reason"] == "the value differs from the one its author signed"
    assert result[altered]["kept"] is False  # never shown as the author's
