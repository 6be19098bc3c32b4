"""Yjs in real headless Chromium (issue 18, defect 3): a page loads the JS ``yjs`` and y-websocket's
stock ``WebsocketProvider`` as ES modules (from ``tests/js/node_modules``, served by the test with
an import map), syncs a document written with pycrdt, and two clients' concurrent edits made while
both are offline converge, on the node too."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pycrdt
import pytest

from statebus.testing.live_server import live_server
from tests.support.node_harness import browser_available, run_browser, y_websocket_available
from tests.support.yjs_page import clocks, yjs_page

pytestmark = pytest.mark.skipif(
    not (browser_available() and y_websocket_available()),
    reason="needs node, chromium, and yjs + y-websocket in tests/js",
)

SCRIPT = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const until = async (f, what) => {
    for (let i = 0; i < 400; i++) { if (f()) return; await sleep(50); }
    throw new Error('timed out waiting for ' + what);
  };
  try {
    const Y = await import('yjs');
    const { WebsocketProvider } = await import('y-websocket');
    const params = new URLSearchParams(location.search);
    const base = params.get('ws'), room = params.get('room'), token = params.get('token');
    const docs = [new Y.Doc(), new Y.Doc()];
    const providers = docs.map(d => new WebsocketProvider(base, room, d, { params: { token } }));
    await until(() => providers.every(p => p.synced), 'both clients synced');
    const text = d => d.getText('t').toString();
    const synced = docs.map(text);
    providers.forEach(p => p.disconnect());  // both offline: the edits are concurrent
    docs[0].getText('t').insert(0, 'A:');
    docs[1].getText('t').insert(docs[1].getText('t').length, ':B');
    const apart = docs.map(text);
    providers.forEach(p => p.connect());
    await until(() => text(docs[0]) === text(docs[1]) && text(docs[0]).length === synced[0].length + 4,
                'the edits to converge');
    await sleep(300);  // let the last update reach the node
    const b64 = u => btoa(String.fromCharCode(...u));
    window.__result = {
      synced, apart, converged: docs.map(text),
      sv: docs.map(d => b64(Y.encodeStateVector(d))),
      ydocs: typeof Y.Doc,
    };
    providers.forEach(p => p.destroy());
  } catch (e) { window.__result = { error: String(e && e.stack || e) }; }
  window.__done = true;
})();
"""


def test_two_browser_clients_sync_and_converge(tmp_path: Path) -> None:
    with (
        yjs_page(tmp_path / "page") as origin,
        live_server(tmp_path / "node", public_origins=(origin,)) as srv,
    ):
        doc: pycrdt.Doc = pycrdt.Doc()
        text = doc.get("t", type=pycrdt.Text)
        text += "pycrdt wrote this"
        r = httpx.patch(
            srv.url + "/~/collab",
            content=doc.get_update(),
            headers={**srv.auth, "Content-Type": "application/vnd.yjs.update"},
        )
        assert r.status_code == 200, r.text
        ws = srv.url.replace("http://", "ws://") + "/yws"
        query = httpx.QueryParams({"ws": ws, "room": "~/collab", "token": srv.token})
        page = f"{origin}/index.html?{query}"
        out = run_browser(str(page), SCRIPT, timeout=60)
        assert out["ok"], out
        result = out["result"]
        assert "error" not in result, result
        assert result["synced"] == ["pycrdt wrote this", "pycrdt wrote this"]
        assert result["apart"] == ["A:pycrdt wrote this", "pycrdt wrote this:B"]
        assert result["converged"] == ["A:pycrdt wrote this:B"] * 2
        assert result["sv"][0] == result["sv"][1]
        # the node holds the converged document: the same content and state vector
        assert httpx.get(srv.url + "/~/collab", headers=srv.auth).json() == {"t": "A:pycrdt wrote this:B"}
        stored = httpx.get(
            srv.url + "/~/collab", headers={**srv.auth, "Accept": "application/vnd.yjs.update"}
        )
        assert clocks(pycrdt.get_state(stored.content)) == clocks(base64.b64decode(result["sv"][0]))
