"""Issue 13 on the node's page, in real headless Chromium: the owner makes an invite with the form and
gets the link and its QR code; the link opens the inviter's /join page, which reads the payload from
the fragment (never sent to the server) and shows the two commands."""

from __future__ import annotations

from pathlib import Path

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
