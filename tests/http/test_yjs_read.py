"""Yjs keys read as Yjs against a live node (issue 18, defect 3): GET with ``Accept:
application/vnd.yjs.update`` answers the document as one update, ``?since=``/``State-Vector`` the
diff after a state vector, ``Parents`` the updates after a version (410 with the horizon once
compacted); a JSON key asked for Yjs is 406; the read rules are the JSON GET's."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pycrdt
import pytest

from statebus.testing.live_server import LiveServer, live_server

YJS = "application/vnd.yjs.update"


def text_updates(parts: tuple[str, ...]) -> list[bytes]:
    doc: pycrdt.Doc = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    out = []
    for part in parts:
        before = doc.get_state()
        text += part
        out.append(doc.get_update(before))
    return out


def write(client: httpx.Client, key: str, updates: list[bytes], prefix: str) -> None:
    for i, update in enumerate(updates):
        r = client.patch(key, content=update, headers={"Content-Type": YJS, "Version": f'"{prefix}{i}"'})
        assert r.status_code == 200, r.text


def text_of(*updates: bytes) -> str:
    doc: pycrdt.Doc = pycrdt.Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("t", type=pycrdt.Text))


def test_get_yjs_whole_document_diff_and_updates_after(client: httpx.Client) -> None:
    updates = text_updates(("ab", "cd", "ef"))
    write(client, "/~/doc", updates, "y")
    json_get = client.get("/~/doc")
    r = client.get("/~/doc", headers={"Accept": YJS})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == YJS
    assert r.headers["version"] == json_get.headers["version"] == '"y2"'
    assert r.headers["etag"] != json_get.headers["etag"]  # another representation
    assert r.headers["x-content-type-options"] == "nosniff"
    assert text_of(r.content) == "abcdef"
    assert (
        client.get("/~/doc", headers={"Accept": YJS, "If-None-Match": r.headers["etag"]}).status_code == 304
    )

    # the diff after a state vector: what a client holding the first update lacks
    sv = pycrdt.get_state(updates[0])
    for params, headers in (
        ({"since": base64.urlsafe_b64encode(sv).decode().rstrip("=")}, {}),
        ({}, {"State-Vector": base64.b64encode(sv).decode()}),
    ):
        diff = client.get("/~/doc", params=params, headers={"Accept": YJS, **headers})
        assert diff.status_code == 200, diff.text
        assert b"cdef" in diff.content and b"ab" not in diff.content  # only what it lacks
        assert text_of(updates[0], diff.content) == "abcdef"
        assert text_of(diff.content) != "abcdef"  # it lacks the first update: a diff, not the doc

    # the updates after a version
    after = client.get("/~/doc", headers={"Accept": YJS, "Parents": '"y0"'})
    assert after.status_code == 200 and text_of(updates[0], after.content) == "abcdef"
    assert text_of(
        updates[0], updates[1], client.get("/~/doc?parents=y1", headers={"Accept": YJS}).content
    ) == ("abcdef")
    none = client.get("/~/doc", headers={"Accept": YJS, "Parents": '"y2"'})
    assert none.status_code == 200 and none.content == b"\x00\x00"  # lacks nothing: the empty update
    assert client.get("/~/doc", headers={"Accept": YJS, "Parents": '"nope"'}).status_code == 404

    # a past version, as one update
    past = client.get("/~/doc", headers={"Accept": YJS, "Version": '"y1"'})
    assert past.status_code == 200 and text_of(past.content) == "abcd"
    assert past.headers["version"] == '"y1"'


def test_get_yjs_refusals_change_nothing(client: httpx.Client) -> None:
    write(client, "/~/doc", text_updates(("hi",)), "d")
    assert client.put("/~/json", json={"a": 1}).status_code == 200
    r = client.get("/~/json", headers={"Accept": YJS})
    assert r.status_code == 406, r.text
    assert r.json()["error"] == "not_acceptable" and "application/json" in r.json()["detail"]
    # an Accept that also takes JSON gets the JSON view
    r = client.get("/~/json", headers={"Accept": f"{YJS}, application/json;q=0.5"})
    assert r.status_code == 200 and r.json() == {"a": 1}
    # q=0 refuses Yjs: the JSON view
    assert client.get("/~/doc", headers={"Accept": f"{YJS};q=0, */*"}).json() == {"t": "hi"}
    for params, headers in (
        ({"since": "!!not base64!!"}, {}),
        ({}, {"State-Vector": "//8="}),  # base64, but not a state vector
        ({}, {"Range": "json .t"}),
        ({"parents": "d0"}, {"State-Vector": "AA"}),
    ):
        r = client.get("/~/doc", params=params, headers={"Accept": YJS, **headers})
        assert r.status_code == 400, (params, headers, r.text)
        assert r.json()["error"] in ("invalid_value", "invalid_range")
    assert client.get("/~/missing", headers={"Accept": YJS}).status_code == 404
    assert client.get("/~/doc").json() == {"t": "hi"}


def test_get_yjs_read_rules_are_the_json_gets(srv: LiveServer) -> None:
    with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as owner:
        write(owner, "/~/private/doc", text_updates(("secret",)), "s")
        write(owner, "/~/public/doc", text_updates(("open",)), "p")
    with httpx.Client(base_url=srv.url, timeout=10) as anonymous:
        refused = anonymous.get("/~/private/doc", headers={"Accept": YJS})
        assert refused.status_code == anonymous.get("/~/private/doc").status_code == 401
        assert b"secret" not in refused.content
        r = anonymous.get("/~/public/doc", headers={"Accept": YJS})
        assert r.status_code == 200 and text_of(r.content) == "open"


@pytest.fixture
def compacting(tmp_path: Path) -> Iterator[httpx.Client]:
    with (
        live_server(tmp_path / "node", history_keep_ops=2) as srv,
        httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as client,
    ):
        yield client


def test_get_yjs_updates_after_a_compacted_version_are_410_with_the_horizon(compacting: httpx.Client) -> None:
    updates = text_updates(tuple(f"{i}." for i in range(12)))
    write(compacting, "/~/doc", updates, "c")
    r = compacting.get("/~/doc", headers={"Accept": YJS, "Parents": '"c0"'})
    assert r.status_code == 410, r.text
    assert r.json()["error"] == "history_compacted" and "horizon" in r.json()["detail"]
    # the whole document still reads, folded or not
    whole = compacting.get("/~/doc", headers={"Accept": YJS})
    assert text_of(whole.content) == "".join(f"{i}." for i in range(12))
    recent = compacting.get("/~/doc", headers={"Accept": YJS, "Parents": '"c10"'})
    assert recent.status_code == 200 and text_of(*updates[:11], recent.content) == text_of(whole.content)
