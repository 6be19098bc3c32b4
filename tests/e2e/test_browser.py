"""The home page and statebus.js in real headless Chromium against a live node (port 0, loopback)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from statebus.server import StatebusServer, owner_token
from statebus.testing.live_server import live_server
from tests.support.node_harness import browser_available, run_browser

pytestmark = pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium")


@contextlib.contextmanager
def node_on(data: Path, port: int = 0) -> Iterator[StatebusServer]:
    """A node on 127.0.0.1:``port``, started as ``statebus serve`` starts one; stopped on exit."""
    with live_server(data, timeout=60, port=port) as srv:  # a starved CI machine can take many seconds
        yield srv.server


def when(
    condition: Callable[[], bool], action: Callable[[], object], timeout: float = 20
) -> threading.Thread:
    """Run ``action`` in a thread as soon as ``condition`` holds (the page is subscribed)."""

    def wait() -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        action()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def streams(server: StatebusServer) -> int:
    return int(server.statebus_app.state.node.stream_count)


PAGE_SCRIPT = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const until = async (f, what) => {
    for (let i = 0; i < 900; i++) { if (f()) return; await sleep(50); }
    throw new Error('timed out waiting for ' + what);
  };
  const item = k => document.querySelector(`#tree li[data-key="${k}"]`);
  try {
    await until(() => document.getElementById('live').textContent === 'live', 'the live badge');
    await until(() => item('/~/notes/old'), 'the existing key');
    const absentAtFirst = !item('/~/notes/live');
    await statebus.put('/~/signal/ready', true);   // tells the test to write /~/notes/live now
    await until(() => item('/~/notes/live'), 'the key written after the page subscribed');
    item('/~/notes/live').click();
    await until(() => document.getElementById('value').textContent.includes('arrived'), 'the value');
    window.__result = {
      pubkey: document.getElementById('pubkey').textContent,
      role: document.getElementById('role').textContent,
      loginNoteHidden: document.getElementById('login-note').hidden,
      absentAtFirst,
      value: JSON.parse(document.getElementById('value').textContent),
      html: document.body.innerHTML,
    };
  } catch (e) { window.__result = {error: String(e)}; }
  window.__done = true;
})()
"""


def test_page_shows_identity_and_a_live_tree(tmp_path):
    with node_on(tmp_path / "data") as server:
        url = f"http://127.0.0.1:{server.port}"
        token = owner_token(server.statebus_app.state.settings)
        auth = {"Authorization": f"Bearer {token}"}
        httpx.put(f"{url}/~/notes/old", json={"n": 1}, headers=auth).raise_for_status()
        writer = when(
            lambda: httpx.get(f"{url}/~/signal/ready", headers=auth).status_code == 200,
            lambda: httpx.put(f"{url}/~/notes/live", json={"arrived": True}, headers=auth),
        )
        shot = tmp_path / "page.png"
        out = run_browser(f"{url}/login?token={token}", PAGE_SCRIPT, timeout=75, screenshot=shot)
        writer.join(5)
        pubkey = server.statebus_app.state.node.local
    assert out["ok"], out
    result = out["result"]
    assert "error" not in result, result
    assert out["page_errors"] == []
    assert result["pubkey"] == pubkey
    assert result["role"] == "owner" and result["loginNoteHidden"] is True
    assert result["absentAtFirst"] is True
    assert result["value"] == {"arrived": True}
    assert token not in result["html"]  # no secret is rendered
    assert out["url"] == f"{url}/"  # the login link redirected to the page
    assert shot.stat().st_size > 10_000


def test_page_without_login_says_how_to_log_in(tmp_path):
    with node_on(tmp_path / "data") as server:
        url = f"http://127.0.0.1:{server.port}"
        script = """(async () => {
          for (let i = 0; i < 200 && document.getElementById('role').textContent !== 'guest'; i++)
            await new Promise(r => setTimeout(r, 50));
          const note = document.getElementById('login-note');
          window.__result = {hidden: note.hidden, text: note.textContent};
          window.__done = true;
        })()"""
        out = run_browser(f"{url}/", script, timeout=60)
    assert out["ok"], out
    assert out["result"]["hidden"] is False
    assert "statebus serve" in out["result"]["text"] and "login" in out["result"]["text"]


PAGE_STREAMS = 2
"""Streams the node page opens by itself for the owner: its key tree (/~/ from the listing's cursor), the data
browser's (its four subtrees: follows, follow states, shares, rules)."""

SUBSCRIBE_SCRIPT = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const events = [];
  const statuses = [];
  window.__events = events;
  const stop = statebus.subscribe('/~/r/', (key, value, ev) => events.push({key, value, type: ev.type}),
                                  {onstatus: s => statuses.push(s)});
  for (let i = 0; i < 600 && !events.some(e => e.key === '/~/r/3'); i++) await sleep(50);
  stop();
  window.__result = {events, statuses, state: statebus.state};
  window.__done = true;
})()
"""


def test_statebus_js_subscribe_resumes_after_the_node_restarts(tmp_path):
    """A put made after subscribing arrives; the node then restarts on the same port; EventSource
    reconnects with Last-Event-ID and gets the later puts once each, with no replayed snapshot."""
    data = tmp_path / "data"
    with node_on(data) as first:
        port = first.port
    url = f"http://127.0.0.1:{port}"
    result: dict[str, object] = {}

    def drive() -> None:
        with node_on(data, port) as server:
            # the page opens two streams of its own (the tree view, the data browser's); wait for
            # the script's subscription too
            deadline = time.monotonic() + 45  # Chromium can take long to start on a busy machine
            while streams(server) < PAGE_STREAMS + 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            httpx.put(f"{url}/~/r/1", json="live", headers=auth)
            time.sleep(0.5)  # let it reach the page, then restart the node under the open page
        with node_on(data, port) as server:
            httpx.put(f"{url}/~/r/2", json="while away", headers=auth)
            deadline = time.monotonic() + 45
            while streams(server) < PAGE_STREAMS + 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            httpx.put(f"{url}/~/r/3", json="after", headers=auth)
            page_done.wait(30)
            result["ok"] = True

    page_done = threading.Event()
    with node_on(data, port) as server:
        token = owner_token(server.statebus_app.state.settings)
        auth = {"Authorization": f"Bearer {token}"}
        httpx.put(f"{url}/~/r/0", json="before", headers=auth).raise_for_status()
    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    time.sleep(0.3)
    out = run_browser(f"{url}/login?token={token}", SUBSCRIBE_SCRIPT, timeout=90)
    page_done.set()
    driver.join(30)
    assert out["ok"], out
    events = out["result"]["events"]
    got = [(e["type"], e["key"], e["value"]) for e in events]
    assert got == [
        ("snapshot", "/~/r/0", "before"),
        ("update", "/~/r/1", "live"),
        ("update", "/~/r/2", "while away"),
        ("update", "/~/r/3", "after"),
    ], got
    assert out["result"]["state"]["/~/r/3"] == "after"
    assert "connecting" in out["result"]["statuses"] or "closed" in out["result"]["statuses"]
    assert result.get("ok") is True


PATCH_SCRIPT = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const seen = [];
  statebus.subscribe('/~/p', (key, value, ev) => seen.push(ev.type));
  for (let i = 0; i < 600 && !seen.length; i++) await sleep(50);
  await statebus.put('/~/signal/patch', true);          // the test patches /~/p now
  for (let i = 0; i < 600 && seen.length < 5; i++) await sleep(50);
  window.__result = {seen, value: statebus.state['/~/p'], fresh: await statebus.get('/~/p'),
                     missing: (await statebus.get('/~/no/such/key')) === undefined};
  window.__done = true;
})()
"""


def test_statebus_js_applies_patches_like_the_node(tmp_path):
    with node_on(tmp_path / "data") as server:
        url = f"http://127.0.0.1:{server.port}"
        token = owner_token(server.statebus_app.state.settings)
        auth = {"Authorization": f"Bearer {token}"}
        httpx.put(f"{url}/~/p", json={"tags": ["a", "c"], "n": 1, "o": {"x": [1]}}, headers=auth)

        def patch() -> None:
            for rng, body in (
                (".tags[1:1]", b'["b"]'),
                (".n", b""),
                (".o.x[0]", b"2"),
                ('["new key"]', b"[]"),
            ):
                httpx.patch(f"{url}/~/p", headers={**auth, "Content-Range": f"json {rng}"}, content=body)

        writer = when(lambda: httpx.get(f"{url}/~/signal/patch", headers=auth).status_code == 200, patch)
        out = run_browser(f"{url}/login?token={token}", PATCH_SCRIPT, timeout=60)
        writer.join(5)
    assert out["ok"], out
    result = out["result"]
    assert result["seen"] == ["snapshot", "update", "update", "update", "update"]
    assert result["value"] == result["fresh"] == {"tags": ["a", "b", "c"], "o": {"x": [2]}, "new key": []}
    assert result["missing"] is True  # get() of a key that does not exist gives undefined


SWARM_SCRIPT = """(async () => {
  for (let i = 0; i < 200 && document.getElementById('role').textContent !== 'owner'; i++)
    await new Promise(r => setTimeout(r, 50));
  await new Promise(r => setTimeout(r, 1000));
  const line = document.getElementById('swarm');
  window.__result = {hidden: line.hidden, text: line.textContent};
  window.__done = true;
})()"""


@pytest.mark.parametrize("swarm", [True, False])
def test_page_shows_the_swarm_when_the_node_has_one(tmp_path, swarm):
    with live_server(tmp_path / "data", timeout=60, swarm=swarm) as srv:
        out = run_browser(f"{srv.url}/login?token={srv.token}", SWARM_SCRIPT, timeout=60)
    assert out["ok"], out
    assert out["page_errors"] == []
    if swarm:
        assert out["result"] == {
            "hidden": False,
            "text": "swarm: 0 blobs (0 own, 0 fetched) · 0 peers · up 0.0 MB · down 0.0 MB · ratio 0.00",
        }
    else:
        assert out["result"]["hidden"] is True
