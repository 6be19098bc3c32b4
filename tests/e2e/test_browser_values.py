"""Planted pages in real headless Chromium: values written by a stranger with an ACL write grant, and by
a peer whose namespace the node stores, are opened by the owner, logged in with the cookie. Their
script tries to read ``/~/secret/x``, write ``/~/pwned`` and report the loot to a collector on another
loopback port; it must get nowhere (docs/trust-model.md, hardening 1)."""

from __future__ import annotations

import secrets
from pathlib import Path

import httpx
import pytest

from statebus.identity import Identity
from statebus.testing.live_server import live_server
from statebus.testing.planted import assert_sandboxed, collector, html_page, plant, svg_image, visit_args
from tests.support.node_harness import browser_available, run_browser

pytestmark = pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium")


OWNER_PAGE_SCRIPT = """
(() => {
  const inline = document.createElement('script');
  inline.textContent = 'window.__inline = true';
  document.head.append(inline);  // markup injected into the owner's page: its policy refuses to run it
  window.__result = {inline: window.__inline === true, role: document.getElementById('role').textContent};
  window.__done = true;
})()
"""


def test_planted_pages_can_do_nothing_as_the_owner(tmp_path: Path) -> None:
    stranger, peer = Identity.generate(), Identity.generate()
    secret = "owner-only-" + secrets.token_hex(8)
    with collector() as loot, live_server(tmp_path / "node", timeout=60) as srv:
        with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as owner:
            assert owner.put("/~/secret/x", json={"secret": secret}).status_code == 200
            # a stranger may write into the inbox; the peer may store its own namespace here
            assert owner.put("/~/.acl/inbox", json={"write": [stranger.pubkey]}).status_code == 200
            assert owner.put("/~/.acl/.host", json=[peer.pubkey]).status_code == 200
        planted = {
            f"/{srv.local}/inbox/page": (stranger, html_page(loot.url), "text/html; charset=utf-8"),
            f"/{srv.local}/inbox/picture": (stranger, svg_image(loot.url), "image/svg+xml"),
            f"/{peer.pubkey}/site/index": (peer, html_page(loot.url), "text/html"),
        }
        for key, (who, body, ctype) in planted.items():
            r = plant(srv.url, who, key, body, ctype)
            assert r.status_code == 200, r.text
        urls = [url for key in planted for url in (f"{srv.url}{key}", f"{srv.url}{key}?view")]
        out = run_browser(
            f"{srv.url}/login?token={srv.token}", OWNER_PAGE_SCRIPT, timeout=120, extra_args=visit_args(urls)
        )
        with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as owner:
            pwned = owner.get("/~/pwned")
            assert owner.get("/~/secret/x").json() == {"secret": secret}  # the owner still reads it
    assert out["ok"], out
    assert out["url"] == f"{srv.url}/"  # logged in: the login link set the cookie and redirected
    assert out["result"]["inline"] is False, out["result"]  # the owner's page runs only its own files
    assert loot.loot == [], f"a planted page reported back: {loot.loot}"
    assert pwned.status_code == 404, f"a planted page wrote /~/pwned: {pwned.text}"
    assert_sandboxed(out["visits"], urls)
