"""Yjs clients of a follower (issue 18, defect 3): a document written with pycrdt on node A, served
by its follower B, is read and followed by the real JS ``yjs`` package (GET with the Yjs Accept,
the diff after a state vector, SSE ``?yjs=updates``) and synced by y-websocket's stock
``WebsocketProvider``; every client ends with A's document: the same content and state vector."""

from __future__ import annotations

import base64
import functools

import anyio
import httpx
import pycrdt
import pytest

from statebus.server import Cluster
from tests.support.node_harness import NodeProcess, run_yjs_client, y_websocket_available

from .support import has, wait_until

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not y_websocket_available(), reason="needs node, yjs and y-websocket in tests/js"),
]

YJS = {"Content-Type": "application/vnd.yjs.update"}


def edit(doc: pycrdt.Doc, part: str) -> bytes:
    before = doc.get_state()
    text = doc.get("t", type=pycrdt.Text)
    text += part
    return doc.get_update(before)


async def js(*args: str) -> dict[str, object]:
    lines = await anyio.to_thread.run_sync(functools.partial(run_yjs_client, list(args), 30.0))
    result = lines[-1]
    assert "error" not in result, result
    return result


async def test_js_clients_sync_a_pycrdt_document_through_a_follower(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    await a.share("/~/shared/")
    doc: pycrdt.Doc = pycrdt.Doc()
    first = edit(doc, "written by pycrdt")
    async with httpx.AsyncClient(base_url=a.url, headers={"Authorization": f"Bearer {a.token}"}) as owner:
        for update in (first, edit(doc, " on node A")):
            assert (await owner.patch("/~/shared/doc", content=update, headers=YJS)).status_code == 200
        key = f"/{a.pubkey}/shared/doc"
        await b.follow(f"/{a.pubkey}/shared/")
        await wait_until(lambda: has(b, key, {"t": "written by pycrdt on node A"}), what="the doc on B")

        # GET from the follower: the whole document, then what a client holding the first update lacks
        whole = await js("get", b.url + key, "--token", b.token)
        assert whole["type"] == "application/vnd.yjs.update"
        assert whole["text"] == str(doc.get("t", type=pycrdt.Text))
        assert base64.b64decode(str(whole["sv"])) == doc.get_state()  # the same document
        mirror: pycrdt.Doc = pycrdt.Doc()
        mirror.apply_update(base64.b64decode(str(whole["update"])))
        assert mirror.get_state() == doc.get_state()
        diff = await js("get", b.url + key, "--token", b.token, "--base", base64.b64encode(first).decode())
        assert diff["text"] == whole["text"] and diff["sv"] == whole["sv"]
        assert int(str(diff["received"])) < int(str(whole["received"]))

        # SSE ?yjs=updates from the follower: the document, then an edit made on A
        with NodeProcess("yjs_client.mjs", ["sse", b.url + key, "--count", "2", "--token", b.token]) as sse:
            await anyio.to_thread.run_sync(lambda: sse.wait_for(lambda line: "event" in line, 20))
            latest = edit(doc, ", followed")
            assert (await owner.patch("/~/shared/doc", content=latest, headers=YJS)).status_code == 200
            done = await anyio.to_thread.run_sync(lambda: sse.wait_for(lambda line: "sizes" in line, 30))
        assert done["text"] == "written by pycrdt on node A, followed"
        assert base64.b64decode(str(done["sv"])) == doc.get_state()
        assert done["sizes"][1] == len(latest)  # type: ignore[index]  # the edit, not the document

        # y-websocket's stock provider on A: its edit is stored and reaches B
        ws_base = a.url.replace("http://", "ws://") + "/yws"
        expect = "written by pycrdt on node A, followed, and a provider"
        synced = await js(
            "provider", ws_base, "~/shared/doc", "--token", a.token, "--insert", ", and a provider",
            "--expect", expect, "--linger", "300",
        )  # fmt: skip
        assert synced["synced"] is True and synced["denied"] == []
        assert (await owner.get("/~/shared/doc")).json() == {"t": expect}
        await wait_until(lambda: has(b, key, {"t": expect}), what="the provider's edit on B")
        # ... and a provider on the follower B reads the same document
        on_b = await js(
            "provider", b.url.replace("http://", "ws://") + "/yws", key.lstrip("/"), "--token", b.token,
            "--expect", expect,
        )  # fmt: skip
        assert on_b["synced"] is True and on_b["text"] == expect
