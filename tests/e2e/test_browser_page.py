"""The node's page in real headless Chromium (issue 20, item 5): keys in natural order, a real favicon,
the value pane follows a put made with the form, and a private key opened without the login cookie
is a page that says how to log in (API clients keep the JSON 401)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from statebus.errors import CLIENT_DOCS
from statebus.testing.live_server import live_server
from tests.support.node_harness import browser_available, run_browser

pytestmark = pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium")

PAGE_SCRIPT = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const $ = id => document.getElementById(id);
  const until = async (f, what) => {
    for (let i = 0; i < 600; i++) { if (f()) return; await sleep(50); }
    throw new Error('timed out waiting for ' + what);
  };
  const keys = () => [...document.querySelectorAll('#tree li[data-key]')].map(li => li.dataset.key);
  try {
    await until(() => keys().length === 4, 'the four keys');
    const order = keys();
    document.querySelector('#tree li[data-key="/~/notes/10"]').click();
    await until(() => $('selected').textContent === '/~/notes/10', 'the clicked key');
    $('put-key').value = 'notes/new';                      // a bare key, as statebus.put takes it
    $('put-value').value = '{"from": "the form"}';
    $('put-form').requestSubmit();
    await until(() => $('selected').textContent === '/~/notes/new', 'the value pane to follow the put');
    await until(() => $('value').textContent.includes('the form'), 'the value put');
    const icon = await fetch('/favicon.ico');
    const bytes = new Uint8Array(await icon.arrayBuffer());
    window.__result = {
      order,
      selected: $('selected').textContent,
      value: JSON.parse($('value').textContent),
      status: $('put-status').className,
      icon: {status: icon.status, type: icon.headers.get('content-type'),
             cache: icon.headers.get('cache-control'), head: [...bytes.slice(0, 4)], size: bytes.length},
      link: document.querySelector('link[rel=icon]').href,
    };
  } catch (e) { window.__result = {error: String(e)}; }
  window.__done = true;
})()
"""


def test_the_page_sorts_naturally_has_an_icon_and_follows_the_form(tmp_path: Path) -> None:
    with live_server(tmp_path / "data", timeout=60) as srv:
        for name in ("10", "2", "1", "sub/x"):
            httpx.put(f"{srv.url}/~/notes/{name}", json={"n": name}, headers=srv.auth).raise_for_status()
        out = run_browser(f"{srv.url}/login?token={srv.token}", PAGE_SCRIPT, timeout=60)
        stored = httpx.get(f"{srv.url}/~/notes/new", headers=srv.auth).json()
    assert out["ok"], out
    result = out["result"]
    assert "error" not in result, result
    assert result["order"] == ["/~/notes/1", "/~/notes/2", "/~/notes/10", "/~/notes/sub/x"]  # not 1, 10, 2
    assert result["selected"] == "/~/notes/new" and result["value"] == {"from": "the form"} == stored
    assert result["status"] == "status ok"
    icon = result["icon"]
    assert icon["status"] == 200 and icon["type"] == "image/x-icon" and icon["head"] == [0, 0, 1, 0]
    assert "max-age=31536000" in icon["cache"] and 100 < icon["size"] < 10_000
    assert result["link"] == f"{srv.url}/favicon.ico"
    assert out["page_errors"] == []
    assert not [m for m in out["console"] if m["type"] == "error"], out["console"]  # no 400 for the icon


def test_a_private_key_in_a_browser_without_the_cookie_says_how_to_log_in(tmp_path: Path) -> None:
    with live_server(tmp_path / "data", timeout=60) as srv:
        httpx.put(f"{srv.url}/~/notes/secret", json="psst", headers=srv.auth).raise_for_status()
        key = f"{srv.url}/~/notes/secret"
        out = run_browser(
            f"{srv.url}/",
            None,
            timeout=60,
            wait=None,
            extra_args=["--visit", key, "--visit-probe", "document.body.innerText"],
        )
        api = httpx.get(key)  # an API client (Accept: */*): the JSON 401, as before
        json_asked = httpx.get(key, headers={"Accept": "application/json"})
        written = httpx.put(key, json="x", headers={"Accept": "text/html"})  # only reads get the page
    assert out["ok"], out
    (visit,) = out["visits"]
    assert visit["status"] == 401 and visit["headers"]["content-type"].startswith("text/html")
    assert "script-src" not in visit["headers"]["content-security-policy"]  # the page runs no script
    text = visit["probe"]
    assert "This key is private" in text and "/login?token=" in text and "statebus token" in text
    assert "psst" not in text and srv.token not in text
    for r in (api, json_asked, written):
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", r.text
        assert CLIENT_DOCS in r.json()["detail"]
