"""A ProseMirror-shaped Yjs document from the real JS ``yjs`` package (an XmlFragment of paragraphs)
on a live node: GET, SSE on its subtree and a follower all work, and later keys still federate."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from statebus.server import Cluster
from tests.support.node_harness import yjs_available, yjs_updates

from .support import has, wait_until

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not yjs_available(), reason="needs node and the yjs package in tests/js"),
]

YJS = {"Content-Type": "application/vnd.yjs.update"}


async def first_event(client: httpx.AsyncClient, path: str) -> dict[str, object]:
    async with client.stream("GET", path, headers={"Accept": "text/event-stream"}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                event: dict[str, object] = json.loads(line[5:])
                return event
    raise AssertionError("the stream ended without an event")


async def test_an_xml_document_serves_streams_and_federates(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    first, second = yjs_updates("prosemirror")
    await a.share("/~/rich/")
    async with httpx.AsyncClient(base_url=a.url, headers={"Authorization": f"Bearer {a.token}"}) as owner:
        for update in (first, second):
            r = await owner.patch("/~/rich/doc", content=update, headers=YJS)
            assert r.status_code == 200, r.text
        r = await owner.get("/~/rich/doc")
        assert r.status_code == 200, r.text
        view = r.json()
        assert [node["nodeName"] for node in view["default"]] == ["heading", "paragraph", "paragraph"]
        for stream in ("/~/rich/doc", "/~/rich/"):  # the key's stream and its subtree's
            with anyio.fail_after(30):
                event = await first_event(owner, stream)
            assert event["value"] == view, stream
        subtree = f"/{a.pubkey}/rich/"
        await b.follow(subtree)
        await wait_until(lambda: has(b, subtree + "doc", view), what="the document on the follower")
        # the key does not poison the subtree: a later key still arrives
        assert (await owner.put("/~/rich/later", json={"n": 1})).status_code == 200
        await wait_until(lambda: has(b, subtree + "later", {"n": 1}), what="a later key on the follower")
