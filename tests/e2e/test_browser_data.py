"""The node's page as a data browser, in real headless Chromium (issue 12): search the live tree, a large
subtree closed until opened, a value rendered by its content type (JSON, text, an image), a key's
history and a past version read with ``?version=``, edit through the form, delete, a refused write's
reason, and the follows and rules of the node. Screenshots go to $STATEBUS_SCREENSHOTS when set."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import httpx
import pytest

from statebus.testing.live_server import live_server
from tests.support.node_harness import browser_available, run_browser

pytestmark = pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium")

# A 1x1 red PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)

OTHER = "a" * 52

SCRIPT = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const $ = id => document.getElementById(id);
  const until = async (f, what) => {
    for (let i = 0; i < 600; i++) { if (f()) return; await sleep(50); }
    throw new Error('timed out waiting for ' + what);
  };
  const keys = () => [...document.querySelectorAll('#tree li[data-key]')].map(li => li.dataset.key);
  const click = key => document.querySelector(`#tree li[data-key="${key}"]`).click();
  const r = {};
  try {
    await until(() => keys().includes('/~/notes/todo'), 'the tree');
    r.closed = [...document.querySelectorAll('#tree li.big')].map(li => li.textContent);
    r.bulkShown = keys().filter(k => k.startsWith('/~/bulk/')).length;
    $('search').value = 'pic';
    $('search').dispatchEvent(new Event('input'));
    await until(() => keys().length === 1, 'the search');
    r.search = keys();
    click('/~/pics/dot');
    const img = () => $('rendered').querySelector('img');
    await until(() => img() && img().naturalWidth === 1, 'the image');
    r.image = $('rendered').querySelector('.hint').textContent;
    $('search').value = '';
    $('search').dispatchEvent(new Event('input'));
    await until(() => keys().includes('/~/readme'), 'every key again');
    click('/~/readme');
    await until(() => $('rendered').querySelector('pre'), 'the text');
    r.text = $('rendered').querySelector('pre').textContent;
    document.querySelector('#tree li.big').click();             // its first page, listed when found
    await until(() => keys().filter(k => k.startsWith('/~/bulk/')).length === 100, 'the opened subtree');
    document.querySelector('#tree li[data-more="/~/bulk/"]').click();
    await until(() => keys().filter(k => k.startsWith('/~/bulk/')).length === 120, 'the next page');
    r.moreLeft = !!document.querySelector('#tree li[data-more="/~/bulk/"]');

    // The key's first read is answered late, once the edit came back on the stream: older than the edit,
    // it must put the old value back neither in the value pane nor in statebus.state.
    const realFetch = window.fetch, realGetVerified = statebus.getVerified;
    let lateRead = null;
    window.fetch = (u, init) => {
      const answer = realFetch(u, init);
      if (!String(u).includes('/notes/todo?proof')) return answer;
      window.fetch = realFetch;
      return answer.then(async res => {
        await until(() => $('version').textContent, 'the stream');
        return res;
      });
    };
    statebus.getVerified = key => {
      statebus.getVerified = realGetVerified;
      return lateRead = realGetVerified(key);
    };
    click('/~/notes/todo');
    await until(() => $('selected').textContent === '/~/notes/todo', 'the key');
    $('put-value').value = '{"items": ["milk", "eggs", "bread"]}';     // edit through the form
    $('put-form').requestSubmit();
    await until(() => $('value').textContent.includes('bread'), 'the edit');
    await lateRead;
    await sleep(0);                                                     // the page's show() after it
    r.afterLateRead = JSON.parse($('value').textContent);
    r.cached = statebus.state['/~/notes/todo'];
    $('history-button').click();
    await until(() => document.querySelectorAll('#history li').length === 3, 'three versions');
    r.history = [...document.querySelectorAll('#history li')].map(li => li.textContent);
    document.querySelector('#history li:last-child button').click();    // the oldest
    await until(() => $('past-value').textContent.includes('milk'), 'the past version');
    r.past = JSON.parse($('past-value').textContent);
    r.pastVersion = $('past-version').textContent;

    $('put-key').value = '/~/.acl/.nonsense';
    $('put-value').value = '1';
    $('put-form').requestSubmit();
    await until(() => $('put-status').className === 'status error', 'the refusal');
    r.refused = $('put-status').textContent;
    $('put-value').value = '{oops';
    $('put-form').requestSubmit();
    await until(() => $('put-status').textContent.startsWith('The value is not valid JSON'), 'JSON error');

    click('/~/notes/todo');
    $('delete-button').click();
    await until(() => $('value').textContent === '(deleted)', 'the delete');
    r.deleted = $('key-status').textContent;
    r.prefilled = $('follow-pattern').value;              // from #follow=…&via=…
    $('follow-form').requestSubmit();
    await until(() => document.querySelectorAll('#follows-list tr').length === 1, 'the follow');
    r.followStatus = $('follow-status').textContent;
    const state = () => document.querySelector('#follows-list td:nth-child(2)').textContent;
    await until(() => state().startsWith('retrying'), 'its state');
    r.follows = [...document.querySelectorAll('#follows-list td')].map(td => td.textContent);
    $('follow-pattern').value = '/nobody/';
    $('follow-form').requestSubmit();
    await until(() => $('follow-status').className === 'status error', 'a bad pattern');
    r.badPattern = $('follow-status').textContent;
    r.rules = [...document.querySelectorAll('#rules li')].map(li => li.textContent);
    r.node = JSON.parse($('node-record').textContent);
    document.querySelector('#follows-list button').click();
    await until(() => document.querySelectorAll('#follows-list tr').length === 0, 'the unfollow');
  } catch (e) { r.error = String(e); }
  window.__result = r;
  window.__done = true;
})()
"""


def test_the_page_browses_renders_edits_and_reads_history(tmp_path: Path) -> None:
    with live_server(tmp_path / "data", timeout=60) as srv:
        with httpx.Client(base_url=srv.url, headers=srv.auth) as http:
            http.put("/~/notes/todo", json={"items": ["milk"]}).raise_for_status()
            http.put("/~/notes/todo", json={"items": ["milk", "eggs"]}).raise_for_status()
            http.put("/~/pics/dot", content=PNG, headers={"content-type": "image/png"}).raise_for_status()
            http.put(
                "/~/readme", content=b"plain words", headers={"content-type": "text/plain"}
            ).raise_for_status()
            for i in range(120):
                http.put(f"/~/bulk/{i}", json=i).raise_for_status()
            http.put("/~/.shares/abc", json={"pattern": f"/{srv.node.local}/pics/"}).raise_for_status()
        shot = tmp_path / "data-browser.png"
        page = f"{srv.url}/#follow=/{OTHER}/chirp/&via=http://127.0.0.1:9"
        login = [f"{srv.url}/login?token={srv.token}"]
        out = run_browser(page, SCRIPT, timeout=90, screenshot=shot, before=login)
        gone = httpx.get(f"{srv.url}/~/notes/todo", headers=srv.auth).status_code
        follows = httpx.get(f"{srv.url}/~/.follows/", headers=srv.auth).json()["children"]
    assert out["ok"], out
    r = out["result"]
    assert "error" not in r, r.get("error")
    assert r["closed"] == ["bulk/ (more than 100 keys: open)"] and r["bulkShown"] == 0, r
    assert r["moreLeft"] is False, r  # the second page was the last
    assert r["search"] == ["/~/pics/dot"], r
    assert r["image"].startswith("image/png · version"), r
    assert r["text"] == "plain words", r
    assert r["afterLateRead"] == r["cached"] == {"items": ["milk", "eggs", "bread"]}, r  # not the late read's
    assert len(r["history"]) == 3 and all(" · set · version " in h for h in r["history"]), r
    assert (
        r["past"] == {"items": ["milk"]} and r["history"][-1].split(" · ")[2] == f"version {r['pastVersion']}"
    )
    assert r["refused"].endswith(
        "/.acl/.nonsense: names under .acl starting with '.' are reserved "
        "(.default, .deny, .allow, .host, .lists/<name>)"
    ), r
    assert r["deleted"] == "deleted /~/notes/todo" and gone == 404, r
    assert r["prefilled"] == f"/{OTHER}/chirp/" and r["followStatus"] == f"following /{OTHER}/chirp/", r
    assert r["follows"][0] == f"/{OTHER}/chirp/" and r["follows"][2] == "http://127.0.0.1:9", r
    assert r["follows"][1].startswith("retrying: peer_unavailable"), r  # nobody listens there: its state
    assert r["badPattern"].startswith("a pattern is /<their pubkey>/path/"), r
    assert follows == [], follows  # unfollowed from the page
    assert any("/.shares/abc" in rule and "/pics/" in rule for rule in r["rules"]), r
    assert r["node"]["pubkey"] == srv.node.local or srv.node.local in str(r["node"]), r
    assert out["page_errors"] == [], out
    target = os.environ.get("STATEBUS_SCREENSHOTS")
    if target:
        shutil.copy(shot, Path(target) / shot.name)
