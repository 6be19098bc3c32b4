"""The shipped guestbook (apps/guestbook), installed from its signed bundle, used in real headless
Chromium on its own origin: signing the form shows the entry and the derived count live; an entry the
app's validator refuses shows the node's reason and is not stored."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from statebus.testing.live_server import live_server
from tests.support.apps import install_guestbook
from tests.support.node_harness import browser_available, run_browser

pytestmark = pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium")

GRANT = {"read": ["guestbook/"], "write": ["guestbook/"], "read_others": ["guestbook/"]}

SIGN = """
(async () => {
  const r = {};
  const sleep = ms => new Promise(res => setTimeout(res, ms));
  const until = async f => { for (let i = 0; i < 200 && !f(); i++) await sleep(50) };
  const sign = async (name, text) => {
    document.querySelector('[name=name]').value = name;
    document.querySelector('[name=text]').value = text;
    document.getElementById('sign').requestSubmit();
  };
  await statebus.ready;
  await sign('ann', 'hello from the browser');
  await until(() => document.querySelectorAll('#entries li').length === 1
                    && document.getElementById('count').textContent === '1 entry');
  await until(() => document.querySelector('#entries .badge.verified'));
  r.entries = [...document.querySelectorAll('#entries li')]
    .map(li => [...li.children].map(c => c.textContent));
  r.badge = document.querySelector('#entries .badge').title;
  r.count = document.getElementById('count').textContent;
  document.querySelector('[name=text]').removeAttribute('maxlength');
  await sign('bob', 'x'.repeat(501));
  await until(() => document.getElementById('status').textContent !== '');
  r.refused = document.getElementById('status').textContent;
  r.after = document.querySelectorAll('#entries li').length;
  window.__result = r;
  window.__done = true;
})()
"""


def test_the_guestbook_page_signs_and_shows_entries(tmp_path: Path) -> None:
    with live_server(tmp_path / "node", timeout=60) as srv:
        install_guestbook(srv.url, srv.auth, tmp_path, GRANT)
        port = srv.url.rsplit(":", 1)[1]
        before = [f"{srv.url}/login?token={srv.token}", f"{srv.url}/launch/guestbook"]
        out = run_browser(f"http://guestbook.localhost:{port}/", SIGN, timeout=90, before=before)
        stored = httpx.get(f"{srv.url}/~/guestbook/entries/", headers=srv.auth).json()["children"]
    assert out["ok"], out
    r = out["result"]
    assert r["entries"] == [["ann", "verified", "hello from the browser"]] and r["count"] == "1 entry", r
    assert r["badge"] == "signed by its author", r  # its signature was checked in the page (issue 19)
    assert r["refused"].startswith("app guestbook: guestbook/entries/"), r  # the node's reason, shown
    assert r["after"] == 1 and len(stored) == 1, (r, stored)
