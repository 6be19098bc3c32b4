"""Issue 13 on the node's page, in real headless Chromium: the owner makes an invite with the form and
gets the link and its QR code; the link opens the inviter's /join page, which reads the payload from
the fragment (never sent to the server) and shows the two commands."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from statebus.invites.payload import parse_link
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
  try {
    await until(() => !$('invite').hidden, 'the invite form');
    $('invite-uses').value = '3';
    $('invite-note').value = 'come <b>see</b>';
    $('invite-form').requestSubmit();
    await until(() => !$('invite-out').hidden, 'the link');
    const link = $('invite-link').value;
    const qr = $('invite-qr').querySelector('svg');
    const w = window.open(link);
    await until(() => w.document.readyState === 'complete' && w.document.getElementById('serve') &&
                      !w.document.getElementById('serve').textContent.includes('…'), 'the join page');
    window.__result = {
      link, qr: qr ? qr.getAttribute('width') : null, status: $('invite-status').className,
      serve: w.document.getElementById('serve').textContent,
      join: w.document.getElementById('join').textContent,
      details: w.document.getElementById('details').innerText,
      bold: w.document.querySelectorAll('b').length,
    };
  } catch (e) { window.__result = {error: String(e)}; }
  window.__done = true;
})()
"""


def test_the_page_makes_an_invite_and_the_link_opens_the_join_page(tmp_path: Path) -> None:
    with live_server(tmp_path / "data", timeout=60) as srv:
        out = run_browser(f"{srv.url}/login?token={srv.token}", PAGE_SCRIPT, timeout=60)
    assert out["ok"], out
    result = out["result"]
    assert "error" not in result, result
    invite = parse_link(result["link"], 0)
    assert result["link"] == f"{srv.url}/join#{invite.text}" and invite.uses == 3
    assert invite.by == srv.local and invite.note == "come <b>see</b>"
    assert result["qr"] and result["status"] == "status ok"
    assert result["serve"] == f"statebus serve --join '{result['link']}'"
    assert result["join"] == f"statebus join '{result['link']}'"
    assert "come <b>see</b>" in result["details"] and result["bold"] == 0  # the note is text, not markup
    assert out["page_errors"] == []


FOLLOWS_SCRIPT = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const row = () => document.querySelector('#follows-list tr');
  const text = cls => row() ? row().querySelector('.' + cls).textContent : '';
  const seen = [];
  try {
    const done = () => text('follow-state') === 'live' && Number(text('follow-applied')) >= 3;
    for (let i = 0; i < 600 && !done(); i++) {
      if (row()) seen.push(text('follow-state') + ' ' + text('follow-applied'));
      await sleep(50);
    }
    window.__result = {pattern: text('follow-pattern'), state: text('follow-state'),
                       applied: text('follow-applied'), url: text('follow-url'),
                       hidden: document.getElementById('node-pane').hidden, seen};
  } catch (e) { window.__result = {error: String(e)}; }
  window.__done = true;
})()
"""


def test_the_page_shows_how_far_each_follow_has_come(tmp_path: Path) -> None:
    with (
        live_server(tmp_path / "a", timeout=60) as a,
        live_server(tmp_path / "b", timeout=60, sse_ping_interval=0.3) as b,
    ):
        pattern = f"/{a.local}/chirp/"
        httpx.put(f"{a.url}/~/.shares/chirp", json={"pattern": pattern}, headers=a.auth).raise_for_status()
        for i in range(3):
            httpx.put(f"{a.url}/~/chirp/{i}", json={"n": i}, headers=a.auth).raise_for_status()
        follow = {"pattern": pattern, "added": 0, "via": [a.url]}
        httpx.put(f"{b.url}/~/.follows/f", json=follow, headers=b.auth).raise_for_status()
        out = run_browser(f"{b.url}/login?token={b.token}", FOLLOWS_SCRIPT, timeout=60)
    assert out["ok"], out
    result = out["result"]
    assert result["pattern"] == pattern and result["state"] == "live" and int(result["applied"]) >= 3, result
    assert result["url"] == a.url and result["hidden"] is False
