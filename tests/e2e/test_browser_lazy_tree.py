"""The data browser's key tree is lazy (issue 12): on a node holding 20,000 keys in one subtree, the page
paints fast and lists only what it shows (a page of a subtree's names when it finds it, one page per
"more…"), keeps one stream for the tree that sends no snapshot, and a key written into the open subtree
appears live. In headless Chromium."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from statebus.testing.live_server import LiveServer, live_server
from tests.support.node_harness import browser_available, run_browser

pytestmark = pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium")

KEYS = 20_000

SCRIPT = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const $ = id => document.getElementById(id);
  const until = async (f, what) => {
    for (let i = 0; i < 1200; i++) { if (f()) return; await sleep(25); }
    throw new Error('timed out waiting for ' + what);
  };
  const keys = () => [...document.querySelectorAll('#tree li[data-key]')].map(li => li.dataset.key);
  const bigKeys = () => keys().filter(k => k.startsWith('/~/big/'));
  const listings = () => performance.getEntriesByType('resource').map(e => new URL(e.name))
    .filter(u => u.searchParams.has('limit')).map(u => u.pathname + u.search);
  const r = {};
  try {
    const painted = () => document.querySelector('#tree li.big') && keys().includes('/~/notes/a');
    await until(painted, 'the first paint');
    r.paintMs = Math.round(performance.now());
    r.closed = document.querySelector('#tree li.big').textContent;
    r.listedAtPaint = listings();
    r.itemsAtPaint = document.querySelectorAll('#tree li').length;
    document.querySelector('#tree li.big').click();
    await until(() => bigKeys().length === 100, 'the opened subtree');
    r.listedByOpening = listings().length - r.listedAtPaint.length;
    const before = listings().length;
    document.querySelector('#tree li[data-more="/~/big/"]').click();
    await until(() => bigKeys().length === 300, 'the next page');
    r.listedByMore = listings().slice(before);
    await statebus.put('/~/signal/write', true);        // the test writes /~/big/k00000-live now
    await until(() => keys().includes('/~/big/k00000-live'), 'the live key');
    r.liveIndex = bigKeys().indexOf('/~/big/k00000-live');
    r.items = document.querySelectorAll('#tree li').length;
    r.held = Object.keys(statebus.state).length;          // values the page's streams sent it
  } catch (e) { r.error = String(e); }
  window.__result = r;
  window.__done = true;
})()
"""


def fill(srv: LiveServer) -> None:
    """20,000 keys under /~/big/, written in the node's own loop (concurrent saves share commits)."""

    async def write() -> None:
        node = srv.node
        for start in range(0, KEYS, 2000):
            await asyncio.gather(*(node.save(f"/~/big/k{i:05d}", i) for i in range(start, start + 2000)))
        await node.save("/~/notes/a", {"small": True})

    assert srv.running.task is not None
    asyncio.run_coroutine_threadsafe(write(), srv.running.task.get_loop()).result(120)


def test_a_20000_key_subtree_loads_lazily(tmp_path: Path) -> None:
    with live_server(tmp_path / "data", timeout=30, durability="process") as srv:
        fill(srv)
        streams_before = srv.node.stream_count

        def write_when_asked() -> None:
            async def wait_and_write() -> None:
                for _ in range(1800):  # the page asks for it (90 s at most)
                    if srv.node.fetch_or_none("/~/signal/write") is not None:
                        break
                    await asyncio.sleep(0.05)
                await srv.node.save("/~/big/k00000-live", "live")

            assert srv.running.task is not None
            asyncio.run_coroutine_threadsafe(wait_and_write(), srv.running.task.get_loop())

        write_when_asked()
        out = run_browser(f"{srv.url}/", SCRIPT, timeout=90, before=[srv.running.login_url])
    assert out["ok"] and not out["page_errors"], out
    r = out["result"]
    assert "error" not in r, r
    assert streams_before == 0
    assert r["closed"] == "big/ (more than 100 keys: open)", r
    # what the first paint listed: the root, then each subtree's first 100 names (big/ found large)
    assert r["listedAtPaint"] == ["/~/?limit=200", "/~/big/?limit=100", "/~/notes/?limit=100"], r
    assert r["itemsAtPaint"] <= 5, r  # big/ closed, notes/ open with its key
    assert r["listedByOpening"] == 0, r  # its first page came with the paint
    assert r["listedByMore"] == ["/~/big/?limit=200&after=k00099"], r  # one page per "more…"
    assert r["liveIndex"] == 1, r  # after k00000, in the open subtree, live
    assert r["items"] < 320, r  # only what is open is rendered
    assert r["held"] < 10, r  # the streams sent no snapshot of the 20,000 keys: changes only
    assert r["paintMs"] < 5000, r
    print(f"first paint of a node with {KEYS} keys in one subtree: {r['paintMs']} ms")
