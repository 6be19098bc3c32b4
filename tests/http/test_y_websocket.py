"""y-websocket's sync protocol on ``/yws/<key>`` against a live node (issue 18, defect 3), spoken
frame by frame with the ``websockets`` client and pycrdt: sync step 1/2, updates both ways, the
owner's writes stored, other clients' refused with permission denied, awareness relayed, the node
websocket's Origin check and limits."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pycrdt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from statebus.http.y_protocol import (
    MESSAGE_AUTH,
    MESSAGE_AWARENESS,
    MESSAGE_SYNC,
    SYNC_STEP1,
    SYNC_STEP2,
    SYNC_UPDATE,
    YMessage,
    decode_message,
    sync_step1,
    sync_update,
    var_bytes,
    var_uint,
)
from statebus.testing.live_server import LiveServer, live_server

YJS = "application/vnd.yjs.update"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("yws"), subscriber_buffer=64, ws_message_rate=50) as s:
        yield s


def url(srv: LiveServer, key: str, token: str | None = None) -> str:
    base = srv.url.replace("http://", "ws://") + "/yws/" + key.lstrip("/")
    return base + f"?token={token}" if token else base


async def recv(ws: ClientConnection) -> YMessage:
    frame = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(frame, bytes)
    return decode_message(frame)


def patch(srv: LiveServer, key: str, update: bytes) -> None:
    r = httpx.patch(srv.url + key, content=update, headers={**srv.auth, "Content-Type": YJS})
    assert r.status_code == 200, r.text


def edit(doc: pycrdt.Doc, part: str) -> bytes:
    before = doc.get_state()
    text = doc.get("t", type=pycrdt.Text)
    text += part
    return doc.get_update(before)


def text_of(doc: pycrdt.Doc) -> str:
    return str(doc.get("t", type=pycrdt.Text))


def test_sync_steps_and_updates_both_ways(srv: LiveServer) -> None:
    server_side: pycrdt.Doc = pycrdt.Doc()
    patch(srv, "/~/y/doc", edit(server_side, "hello"))

    async def main() -> None:
        async with connect(url(srv, "~/y/doc", srv.token)) as ws:
            step1 = await recv(ws)  # the node's state vector
            assert (step1.kind, step1.step) == (MESSAGE_SYNC, SYNC_STEP1)
            assert step1.payload == server_side.get_state()
            mine: pycrdt.Doc = pycrdt.Doc()
            await ws.send(sync_step1(mine.get_state()))
            step2 = await recv(ws)
            assert (step2.kind, step2.step) == (MESSAGE_SYNC, SYNC_STEP2)
            mine.apply_update(step2.payload)
            assert text_of(mine) == "hello"
            # an edit here is the owner's write
            await ws.send(sync_update(edit(mine, " world")))
            for _ in range(100):
                if httpx.get(srv.url + "/~/y/doc", headers=srv.auth).json() == {"t": "hello world"}:
                    break
                await asyncio.sleep(0.05)
            assert httpx.get(srv.url + "/~/y/doc", headers=srv.auth).json() == {"t": "hello world"}
            # a write over HTTP comes as a sync update; this connection's own was not echoed
            server_side.apply_update(mine.get_update())
            http_edit = edit(server_side, "!")
            await asyncio.to_thread(patch, srv, "/~/y/doc", http_edit)
            update = await recv(ws)
            assert (update.kind, update.step, update.payload) == (MESSAGE_SYNC, SYNC_UPDATE, http_edit)
            mine.apply_update(update.payload)
            assert text_of(mine) == "hello world!"

    asyncio.run(main())


def test_readers_are_refused_writes_and_awareness_is_relayed(srv: LiveServer) -> None:
    owner_doc: pycrdt.Doc = pycrdt.Doc()
    patch(srv, "/~/public/ydoc", edit(owner_doc, "read me"))

    async def main() -> None:
        async with connect(url(srv, "~/public/ydoc")) as reader, connect(url(srv, "~/public/ydoc")) as peer:
            await recv(reader)
            await recv(peer)
            await reader.send(sync_step1(b"\x00"))
            mine: pycrdt.Doc = pycrdt.Doc()
            mine.apply_update((await recv(reader)).payload)
            assert text_of(mine) == "read me"
            await reader.send(sync_update(edit(mine, " and write me")))
            denied = await recv(reader)
            assert denied.kind == MESSAGE_AUTH and b"forbidden" in denied.payload
            # the empty update a reader sends back in sync step 2 is not a write
            await reader.send(var_uint(MESSAGE_SYNC) + var_uint(SYNC_STEP2) + var_bytes(b"\x00\x00"))
            awareness = var_uint(MESSAGE_AWARENESS) + var_bytes(b"\x01\x02\x03")
            await reader.send(awareness)
            assert await asyncio.wait_for(peer.recv(), 5) == awareness  # relayed, not stored
            assert httpx.get(srv.url + "/~/public/ydoc").json() == {"t": "read me"}

    asyncio.run(main())


def test_refusals_before_and_after_the_handshake(srv: LiveServer) -> None:
    patch(srv, "/~/private/ydoc", edit(pycrdt.Doc(), "secret"))
    assert httpx.put(srv.url + "/~/json", json={"a": 1}, headers=srv.auth).status_code == 200

    async def refused(target: str, **kw: object) -> str:
        try:
            async with connect(target, **kw) as ws:  # type: ignore[arg-type]
                await asyncio.wait_for(ws.recv(), 5)
        except InvalidStatus as exc:
            return f"status {exc.response.status_code}"
        except ConnectionClosed as exc:
            return f"closed {exc.rcvd.code if exc.rcvd else None} {exc.rcvd.reason if exc.rcvd else ''}"
        return "open"

    async def main() -> None:
        assert (await refused(url(srv, "~/private/ydoc"))).startswith("status 403")  # may not read
        assert (await refused(url(srv, "~/json", srv.token))).startswith("status 403")  # not Yjs
        foreign = await refused(url(srv, "~/public/ydoc"), origin="http://evil.example")
        assert foreign.startswith("status 403")
        assert (await refused(url(srv, "~/sub/", srv.token))).startswith("status 403")
        # a malformed message closes the connection (1007), and nothing is written
        async with connect(url(srv, "~/private/ydoc", srv.token)) as ws:
            await recv(ws)
            await ws.send(var_uint(MESSAGE_SYNC) + var_uint(SYNC_UPDATE) + var_uint(50) + b"short")
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007

    asyncio.run(main())
    assert httpx.get(srv.url + "/~/private/ydoc", headers=srv.auth).json() == {"t": "secret"}


def test_the_message_rate_budget_closes_a_flood(tmp_path: Path) -> None:
    with live_server(tmp_path / "n", ws_message_rate=5) as node:
        patch(node, "/~/public/flood", edit(pycrdt.Doc(), "x"))

        async def main() -> int | None:
            async with connect(url(node, "~/public/flood")) as ws:
                try:
                    for _ in range(200):
                        await ws.send(var_uint(MESSAGE_AWARENESS) + var_bytes(b"\x00"))
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                except ConnectionClosed as exc:
                    return exc.rcvd.code if exc.rcvd else None
            return None

        assert asyncio.run(main()) == 1008
