"""A browser Yjs client of a follower (issue 18, defect 3): in headless Chromium, y-websocket's
stock ``WebsocketProvider`` on node B syncs a document that pycrdt wrote on node A, then receives
an edit made on A while it is connected; it ends with A's document (content and state vector)."""

from __future__ import annotations

import base64
import functools
from pathlib import Path

import anyio
import httpx
import pycrdt
import pytest

from statebus.server import Cluster
from tests.support.node_harness import browser_available, run_browser, y_websocket_available
from tests.support.yjs_page import clocks, yjs_page

from .support import has, wait_until

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not (browser_available() and y_websocket_available()),
        reason="needs node, chromium, and yjs + y-websocket in tests/js",
    ),
]

YJS = {"Content-Type": "application/vnd.yjs.update"}

SCRIPT = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  try {
    const Y = await import('yjs');
    const { WebsocketProvider } = await import('y-websocket');
    const params = new URLSearchParams(location.search);
    const doc = new Y.Doc();
    const provider = new WebsocketProvider(params.get('ws'), params.get('room'), doc,
                                           { params: { token: params.get('token') } });
    const text = () => doc.getText('t').toString();
    for (let i = 0; i < 400 && !provider.synced; i++) await sleep(50);
    const synced = text();
    window.__synced = provider.synced;
    for (let i = 0; i < 400 && !text().endsWith(', live'); i++) await sleep(50);
    window.__result = {
      synced, live: text(), sv: btoa(String.fromCharCode(...Y.encodeStateVector(doc))),
    };
    provider.destroy();
  } catch (e) { window.__result = { error: String(e && e.stack || e) }; }
  window.__done = true;
})();
"""


def edit(doc: pycrdt.Doc, part: str) -> bytes:
    before = doc.get_state()
    text = doc.get("t", type=pycrdt.Text)
    text += part
    return doc.get_update(before)


async def test_a_browser_provider_on_a_follower_syncs_and_follows(cluster: Cluster, tmp_path: Path) -> None:
    with yjs_page(tmp_path / "page") as origin:
        a = await cluster.add("a")
        b = await cluster.add("b", public_origins=(origin,))
        await a.share("/~/shared/")
        doc: pycrdt.Doc = pycrdt.Doc()
        async with httpx.AsyncClient(base_url=a.url, headers={"Authorization": f"Bearer {a.token}"}) as owner:
            assert (await owner.patch("/~/shared/doc", content=edit(doc, "from A"), headers=YJS)).is_success
            key = f"/{a.pubkey}/shared/doc"
            await b.follow(f"/{a.pubkey}/shared/")
            await wait_until(lambda: has(b, key, {"t": "from A"}), what="the document on B")
            streams = b.node.stream_count
            query = httpx.QueryParams(
                {"ws": b.url.replace("http://", "ws://") + "/yws", "room": key.lstrip("/"), "token": b.token}
            )
            page = functools.partial(run_browser, f"{origin}/index.html?{query}", SCRIPT, 60)
            async with anyio.create_task_group() as tg:
                results: list[dict[str, object]] = []

                async def browse() -> None:
                    results.append(await anyio.to_thread.run_sync(page))

                tg.start_soon(browse)
                # the provider is connected (its stream on B is open): edit on A
                await wait_until(lambda: b.node.stream_count > streams, what="the provider on B")
                assert (
                    await owner.patch("/~/shared/doc", content=edit(doc, ", live"), headers=YJS)
                ).is_success
        out = results[0]
        assert out["ok"], out
        result = out["result"]
        assert isinstance(result, dict) and "error" not in result, result
        assert result["synced"] in ("from A", "from A, live")  # the edit may race the first sync
        assert result["live"] == "from A, live"
        assert clocks(base64.b64decode(str(result["sv"]))) == clocks(doc.get_state())
