"""Streams of Yjs updates against a live node (issue 18, defect 3): SSE ``?yjs=updates``, a Braid
subscription with ``Accept: application/vnd.yjs.update`` and a websocket ``get`` with ``"yjs":
"updates"`` send a Yjs key's document as one update first, then each op's own update (a small edit
of a 1 MB document is a small event), resume without loss or repeat, and keep other keys JSON."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest
from websockets.asyncio.client import connect

from statebus.http.websocket import WS_PATH
from statebus.testing.braid_stream import BraidStreamParser, StreamUpdate
from statebus.testing.live_server import LiveServer, SseReader, live_server, sse_headers

YJS = "application/vnd.yjs.update"


class Writer:
    """A pycrdt document whose edits are PATCHed to a key, one update per edit."""

    def __init__(self, srv: LiveServer, key: str) -> None:
        self.srv, self.key = srv, key
        self.doc: pycrdt.Doc = pycrdt.Doc()
        self.text = self.doc.get("t", type=pycrdt.Text)
        self.sent: list[bytes] = []

    def append(self, part: str, version: str | None = None) -> int:
        before = self.doc.get_state()
        self.text += part
        update = self.doc.get_update(before)
        self.sent.append(update)
        headers = {**self.srv.auth, "Content-Type": YJS}
        if version is not None:
            headers["Version"] = f'"{version}"'
        r = httpx.patch(self.srv.url + self.key, content=update, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        seq: int = r.json()["seq"]
        return seq


def apply(doc: pycrdt.Doc, event: dict[str, Any]) -> None:
    doc.apply_update(base64.b64decode(event["data"]["yjs_update"]))


def text(doc: pycrdt.Doc) -> str:
    return str(doc.get("t", type=pycrdt.Text))


def test_sse_updates_of_a_large_document_are_the_edit_not_the_document(srv: LiveServer) -> None:
    w = Writer(srv, "/~/big")
    chunk = "x" * (600 * 1024)
    w.append(chunk)
    w.append(chunk)  # a 1.2 MB document (each PATCH under the 1 MiB body limit)
    url = srv.url + "/~/big?yjs=updates"
    with (
        httpx.stream("GET", url, headers=sse_headers(srv), timeout=30) as r,
        httpx.stream("GET", srv.url + "/~/big", headers=sse_headers(srv), timeout=30) as plain,
    ):
        sse, json_sse = SseReader(r), SseReader(plain)
        first = sse.next_event()
        json_sse.next_event()
        assert first["event"] == "snapshot" and "value" not in first["data"]
        mirror: pycrdt.Doc = pycrdt.Doc()
        apply(mirror, first)
        assert len(text(mirror)) == 2 * len(chunk)
        w.append("hello, world!")  # a 13-character edit
        block = sse._block()  # the raw bytes of the next event
        while b"data: " not in block:  # (a ping comment)
            block = sse._block()
        lines = dict(line.split(": ", 1) for line in block.decode().split("\n"))
        parsed = {"event": lines["event"], "data": json.loads(lines["data"])}
        update = base64.b64decode(parsed["data"]["yjs_update"])
        assert update == w.sent[-1] and len(update) < 64
        assert len(block) < 300, len(block)  # the edit and the framing, not 1.2 MB
        mirror.apply_update(update)
        assert text(mirror) == 2 * chunk + "hello, world!"
        assert parsed["event"] == "update" and parsed["data"]["parents"] == first["data"]["version"]
        # the JSON stream of the same key sends the whole view again: what ?yjs=updates saves
        assert len(json.dumps(json_sse.next_event()["data"])) > 1_000_000


def test_sse_updates_resume_and_state_vector_lose_and_repeat_nothing(srv: LiveServer) -> None:
    w = Writer(srv, "/~/doc")
    w.append("ab")
    mirror: pycrdt.Doc = pycrdt.Doc()
    with httpx.stream("GET", srv.url + "/~/doc?yjs=updates", headers=sse_headers(srv), timeout=10) as r:
        sse = SseReader(r)
        apply(mirror, sse.next_event())
        w.append("cd")
        apply(mirror, sse.next_event())
        last = sse.last_id
    assert last is not None and text(mirror) == "abcd"
    seqs = [w.append(p) for p in ("ef", "gh")]
    with httpx.stream("GET", srv.url + "/~/doc?yjs=updates", headers=sse_headers(srv, last), timeout=10) as r:
        sse = SseReader(r)
        events = sse.events(2)
        assert [e["id"] for e in events] == [str(s) for s in seqs]
        assert [base64.b64decode(e["data"]["yjs_update"]) for e in events] == w.sent[2:]  # exactly these
        for e in events:
            apply(mirror, e)
        w.append("ij")
        apply(mirror, sse.next_event())
    assert text(mirror) == "abcdefghij"
    # a client holding the document so far starts from what its state vector lacks
    sv = base64.urlsafe_b64encode(pycrdt.get_state(w.sent[0])).decode()
    with httpx.stream(
        "GET", srv.url + f"/~/doc?yjs=updates&state_vector={sv}", headers=sse_headers(srv), timeout=10
    ) as r:
        first = SseReader(r).next_event()
        update = base64.b64decode(first["data"]["yjs_update"])
        assert b"ab" not in update
        fresh: pycrdt.Doc = pycrdt.Doc()
        fresh.apply_update(w.sent[0])
        fresh.apply_update(update)
        assert text(fresh) == "abcdefghij"
    # refusals: a bad mode, a state vector for a subtree
    assert httpx.get(srv.url + "/~/doc?yjs=json", headers=sse_headers(srv)).status_code == 400
    r = httpx.get(srv.url + f"/~/?yjs=updates&state_vector={sv}", headers=sse_headers(srv))
    assert r.status_code == 400 and r.json()["error"] == "invalid_value"


def test_subtree_stream_sends_updates_for_yjs_keys_and_json_for_others(srv: LiveServer) -> None:
    w = Writer(srv, "/~/mix/doc")
    w.append("yjs")
    assert httpx.put(srv.url + "/~/mix/plain", json={"a": 1}, headers=srv.auth).status_code == 200
    with httpx.stream("GET", srv.url + "/~/mix/?yjs=updates", headers=sse_headers(srv), timeout=10) as r:
        sse = SseReader(r)
        snaps = {e["data"]["key"].rsplit("/", 1)[1]: e["data"] for e in sse.events(2)}
        assert snaps["plain"]["value"] == {"a": 1} and "yjs_update" not in snaps["plain"]
        assert base64.b64decode(snaps["doc"]["yjs_update"]) and "value" not in snaps["doc"]
        w.append("!")
        assert base64.b64decode(sse.next_event()["data"]["yjs_update"]) == w.sent[-1]
        httpx.put(srv.url + "/~/mix/plain", json={"a": 2}, headers=srv.auth)
        assert sse.next_event()["data"]["value"] == {"a": 2}
        httpx.delete(srv.url + "/~/mix/doc", headers=srv.auth)
        gone = sse.next_event()
        assert gone["event"] == "delete" and gone["data"]["deleted"] is True


def braid_updates(response: httpx.Response) -> Any:
    parser = BraidStreamParser()
    for chunk in response.iter_raw():
        yield from parser.feed(chunk)


def test_braid_subscription_to_updates(srv: LiveServer) -> None:
    w = Writer(srv, "/~/bdoc")
    w.append("one", "b1")
    headers = {**srv.auth, "Subscribe": "true", "Accept": YJS}
    with httpx.stream("GET", srv.url + "/~/bdoc", headers=headers, timeout=10) as r:
        assert r.status_code == 209 and r.headers["content-type"] == YJS
        updates = braid_updates(r)
        first: StreamUpdate = next(updates)
        assert first.version == ("b1",) and first.headers["content-type"] == YJS
        mirror: pycrdt.Doc = pycrdt.Doc()
        mirror.apply_update(first.body)
        w.append(" two", "b2")
        second: StreamUpdate = next(updates)
        assert second.body == w.sent[-1] and second.parents == ("b1",) and second.version == ("b2",)
        mirror.apply_update(second.body)
        assert text(mirror) == "one two"
    # resume with Parents: only the updates after them
    w.append(" three", "b3")
    with httpx.stream("GET", srv.url + "/~/bdoc", headers={**headers, "Parents": '"b1"'}, timeout=10) as r:
        updates = braid_updates(r)
        got = [next(updates), next(updates)]
        assert [u.body for u in got] == w.sent[1:] and [u.version for u in got] == [("b2",), ("b3",)]
    assert httpx.put(srv.url + "/~/bjson", json=1, headers=srv.auth).status_code == 200
    refused = httpx.get(srv.url + "/~/bjson", headers=headers)
    assert refused.status_code == 406 and refused.json()["error"] == "not_acceptable"


def test_websocket_get_with_yjs_updates(srv: LiveServer) -> None:
    w = Writer(srv, "/~/wdoc")
    w.append("ws")

    async def main() -> None:
        url = srv.url.replace("http://", "ws://") + WS_PATH + f"?token={srv.token}"
        async with connect(url) as ws:
            await ws.send(json.dumps({"get": "wdoc", "yjs": "updates"}))
            first = json.loads(await asyncio.wait_for(ws.recv(), 5))
            mirror: pycrdt.Doc = pycrdt.Doc()
            mirror.apply_update(base64.b64decode(first["set"]["yjs_update"]))
            await asyncio.to_thread(w.append, "!")
            second = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert base64.b64decode(second["set"]["yjs_update"]) == w.sent[-1]
            assert second["parents"] == first["version"]
            mirror.apply_update(base64.b64decode(second["set"]["yjs_update"]))
            assert text(mirror) == "ws!"
            await ws.send(json.dumps({"get": "other", "yjs": "json"}))
            refused = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert refused["error"] == "invalid_value"

    asyncio.run(main())


def test_sse_updates_after_a_compacted_cursor_reset_to_the_whole_document(tmp_path: Path) -> None:
    with live_server(tmp_path / "node", history_keep_ops=2) as node:
        w = Writer(node, "/~/c")
        first = w.append("0.")
        for i in range(1, 10):
            w.append(f"{i}.")
        url = node.url + "/~/c?yjs=updates"
        with httpx.stream("GET", url, headers=sse_headers(node, str(first)), timeout=10) as r:
            sse = SseReader(r)
            reset = sse.next_event()
            assert reset["event"] == "reset"
            snapshot = sse.next_event()
            assert snapshot["event"] == "snapshot"
            mirror: pycrdt.Doc = pycrdt.Doc()
            apply(mirror, snapshot)  # the whole document: the client dropped what it held
            assert text(mirror) == "".join(f"{i}." for i in range(10))


def test_y_protocol_decoding_refuses_malformed_messages() -> None:
    from statebus.errors import InvalidValue
    from statebus.http.y_protocol import decode_message, read_var_uint, sync_update, var_uint

    assert decode_message(sync_update(b"\x00\x00")).payload == b"\x00\x00"
    assert read_var_uint(var_uint(2**40), 0) == (2**40, 6)
    for bad in (b"", b"\x00", b"\x00\x07\x00", b"\x00\x02\x05ab", b"\x80" * 9 + b"\x01", b"\x01\xff"):
        with pytest.raises(InvalidValue):
            decode_message(bad)
