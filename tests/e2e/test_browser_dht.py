"""The data browser shows the node's DHT record (issue 12): its record as published, with when and to how
many DHT nodes it was stored, updated when the node republishes, and a lookup of another node's record
(and a bad key's reason), on two real nodes in one DHT, in headless Chromium."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from statebus.server import Cluster, RunningNode
from tests.federation.support import FAST
from tests.support.node_harness import browser_available, run_browser

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium"),
]

SCRIPT = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const $ = id => document.getElementById(id);
  const until = async (f, what) => {
    for (let i = 0; i < 600; i++) { if (f()) return; await sleep(50); }
    throw new Error('timed out waiting for ' + what);
  };
  const rows = id => Object.fromEntries([...document.querySelectorAll(`#${id} tr`)].map(
    tr => [tr.dataset.field, tr.querySelector('.dht-value').textContent]));
  const r = {};
  try {
    await until(() => rows('dht-own-rows')['stored on'], 'the own record');
    r.own = rows('dht-own-rows');
    r.name = $('dht-name').textContent;
    await statebus.put('/~/signal/republish', true);       // the test republishes with one more address
    await until(() => rows('dht-own-rows').addresses !== r.own.addresses, 'the republished record');
    r.after = rows('dht-own-rows');
    $('dht-pubkey').value = '__OTHER__';
    $('dht-form').requestSubmit();
    await until(() => !$('dht-found').hidden, 'the lookup');
    r.found = rows('dht-found-rows');
    $('dht-pubkey').value = 'nonsense';
    $('dht-form').requestSubmit();
    await until(() => $('dht-status').className === 'status error', 'a bad key');
    r.bad = $('dht-status').textContent;
    r.foundHidden = $('dht-found').hidden;
    $('dht-pubkey').value = '__OTHER__';                    // the found record again, for the screenshot
    $('dht-form').requestSubmit();
    await until(() => !$('dht-found').hidden, 'the lookup again');
    $('dht-name').scrollIntoView();
  } catch (e) { r.error = String(e); }
  window.__result = r;
  window.__done = true;
})()
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def devnet(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path / "nodes", dht_secret=os.urandom(16), **FAST)
    try:
        yield c
    finally:
        await c.aclose()


async def republish_when_asked(node: RunningNode) -> None:
    while node.node.fetch_or_none("/~/signal/republish") is None:
        await asyncio.sleep(0.05)
    assert node.directory is not None
    await node.directory.publish([node.url, "http://127.0.0.1:9"])


async def test_the_page_shows_the_dht_record_and_looks_one_up(devnet: Cluster, tmp_path: Path) -> None:
    a = await devnet.add("a")
    b = await devnet.add("b")  # b stores a's next record; a finds b's
    assert a.directory is not None and b.directory is not None
    first_seq = a.directory.record.seq if a.directory.record else None
    waiter = asyncio.ensure_future(republish_when_asked(a))
    shot = tmp_path / "data-browser-dht.png"
    try:
        out = await asyncio.to_thread(
            run_browser,
            f"{a.url}/",
            SCRIPT.replace("__OTHER__", b.pubkey),
            timeout=90,
            before=[a.login_url],
            screenshot=shot,
        )
    finally:
        waiter.cancel()
    assert out["ok"] and not out["page_errors"], out
    r: dict[str, Any] = out["result"]
    assert "error" not in r, r
    assert r["own"]["public key"] == a.pubkey and r["own"]["addresses"] == a.url, r
    assert r["own"]["seq"] == str(first_seq) and r["own"]["stored on"] == "0 DHT nodes", r  # a was alone
    assert r["name"].startswith("(DHT devnet, "), r
    assert r["after"]["addresses"] == f"{a.url} http://127.0.0.1:9", r
    assert int(r["after"]["seq"]) > int(r["own"]["seq"]) and r["after"]["stored on"] == "1 DHT node", r
    assert len(r["after"]["signature"]) == 88, r  # 64 bytes, base64
    assert r["found"]["public key"] == b.pubkey and r["found"]["addresses"] == b.url, r
    assert r["bad"].startswith("HTTP 400 invalid_key: a namespace is 52"), r
    assert r["foundHidden"] is True, r
    target = os.environ.get("STATEBUS_SCREENSHOTS")
    if target:
        Path(target, shot.name).write_bytes(shot.read_bytes())
