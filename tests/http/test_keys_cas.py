"""Compare-and-swap on keys against a live node (issue 18, defect 5 and three of defect 9's).

``If-Match``/``If-None-Match`` answer 412 and write nothing; a write answers with its own version
(the frontier in ``frontier``); stale ``Parents`` get the same 409 from the owner's PUT and from a
delegate's signed op. Also: a ``Content-Range`` in raw UTF-8, ``json ""`` as the whole value, and
``max_value_bytes`` above 1 MiB admitting bigger JSON values.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import httpx
import pytest

from statebus.identity import Identity, sign_op, sign_request
from statebus.oplog import Op, encode_op, mint_version
from statebus.testing.live_server import LiveServer, live_server

OP_TYPE = "application/vnd.statebus.op+json"
CLOCK = itertools.count(1_000)


def err(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] == code and r.json()["detail"]


# --------------------------------------------------------------------- If-Match / If-None-Match


def test_if_match_with_a_wrong_etag_is_412_and_writes_nothing(client: httpx.Client) -> None:
    client.put("/~/cas/a", json={"n": 1})
    etag = client.get("/~/cas/a").headers["etag"]
    for method in ("PUT", "DELETE"):
        r = client.request(method, "/~/cas/a", json=2, headers={"If-Match": '"0123456789abcdef"'})
        err(r, 412, "precondition_failed")
    r = client.patch("/~/cas/a", content=b"3", headers={"If-Match": "W/" + etag, "Content-Range": "json .n"})
    err(r, 412, "precondition_failed")  # If-Match compares strongly
    assert client.get("/~/cas/a").json() == {"n": 1}
    r = client.put("/~/cas/a", json=2, headers={"If-Match": etag})
    assert r.status_code == 200, r.text
    err(client.put("/~/cas/a", json=3, headers={"If-Match": etag}), 412, "precondition_failed")  # lost update
    new = client.get("/~/cas/a").headers["etag"]
    assert client.put("/~/cas/a", json=3, headers={"If-Match": f'"x", {new}'}).status_code == 200
    assert client.get("/~/cas/a").json() == 3
    assert client.delete("/~/cas/a", headers={"If-Match": "*"}).status_code == 200


def test_if_match_needs_a_value(client: httpx.Client) -> None:
    err(client.put("/~/cas/none", json=1, headers={"If-Match": "*"}), 412, "precondition_failed")
    assert client.get("/~/cas/none").status_code == 404


def test_if_none_match_star_creates_only(client: httpx.Client) -> None:
    r = client.put("/~/cas/new", json="first", headers={"If-None-Match": "*"})
    assert r.status_code == 200, r.text
    err(client.put("/~/cas/new", json="second", headers={"If-None-Match": "*"}), 412, "precondition_failed")
    etag = client.get("/~/cas/new").headers["etag"]
    err(client.put("/~/cas/new", json="second", headers={"If-None-Match": etag}), 412, "precondition_failed")
    assert client.get("/~/cas/new").json() == "first"
    assert client.put("/~/cas/new", json="third", headers={"If-None-Match": '"other"'}).status_code == 200
    client.delete("/~/cas/new")
    assert client.put("/~/cas/new", json="again", headers={"If-None-Match": "*"}).status_code == 200


def test_conditions_guard_yjs_updates_too(client: httpx.Client) -> None:
    pycrdt = pytest.importorskip("pycrdt")
    doc = pycrdt.Doc()
    doc["t"] = text = pycrdt.Text()
    text += "hi"
    update = doc.get_update()
    ytype = {"Content-Type": "application/vnd.yjs.update"}
    assert (
        client.patch("/~/cas/doc", content=update, headers={**ytype, "If-None-Match": "*"}).status_code == 200
    )
    r = client.patch("/~/cas/doc", content=update, headers={**ytype, "If-None-Match": "*"})
    err(r, 412, "precondition_failed")


# --------------------------------------------------------------------- the writer's own version


def test_a_write_answers_its_own_version_and_the_frontier(client: httpx.Client, srv: LiveServer) -> None:
    r = client.put("/~/cas/own", json=1, headers={"Version": '"v1"'})
    assert r.json() == {"version": ["v1"], "frontier": ["v1"], "seq": r.json()["seq"]}
    assert r.headers["version"] == '"v1"'
    # a concurrent branch from a peer: the key's frontier now has two versions
    op = Op(f"/{srv.local}/cas/own", "v2", ("v1",), srv.local, 5, "lww", "set", 2)
    srv.node.bus.apply(op)  # as a peer's op arrives (test set-up; not a client route)
    branch = Op(f"/{srv.local}/cas/own", "v3", ("v1",), srv.local, 6, "lww", "set", 3)
    srv.node.bus.apply(branch)
    r = client.put("/~/cas/own", json=4)
    assert r.status_code == 200, r.text
    own = r.json()["version"]
    assert len(own) == 1 and own[0] not in ("v1", "v2", "v3")
    assert r.headers["version"] == f'"{own[0]}"'
    assert r.json()["frontier"] == own  # written on the whole frontier
    retry = client.put("/~/cas/own", json=5, headers={"Version": '"v9"'})
    again = client.put("/~/cas/own", json=5, headers={"Version": '"v9"'})  # a retry: the same op
    assert retry.json()["version"] == again.json()["version"] == ["v9"]
    deleted = client.delete("/~/cas/own", headers={"Version": '"v10"'})
    assert deleted.json()["version"] == ["v10"]


# --------------------------------------------------------------------- stale Parents


def send_op(
    srv: LiveServer, who: Identity, path: str, value: Any, parents: tuple[str, ...]
) -> httpx.Response:
    key = f"/{srv.local}/" + path.removeprefix("/~/")
    op = Op(key, "", parents, who.pubkey, next(CLOCK), "lww", "set", value)
    body = encode_op(sign_op(dataclasses.replace(op, version=mint_version(op)), who))
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        req = c.build_request("PUT", path, content=body, headers={"content-type": OP_TYPE})
        req.headers.update(sign_request(req.method, str(req.url), req.headers, req.content, who))
        return c.send(req)


def test_stale_parents_are_409_for_the_owner_and_a_delegate(client: httpx.Client, srv: LiveServer) -> None:
    alice = Identity.generate()
    assert client.put("/~/.acl/st", json={"read": "signed", "write": [alice.pubkey]}).status_code == 200
    v1 = client.put("/~/st/k", json="first").json()["version"][0]
    v2 = client.put("/~/st/k", json="second").json()["version"][0]
    seq = srv.node.bus.seq
    by_put = client.put("/~/st/k", json="owner on v1", headers={"Parents": f'"{v1}"'})
    by_op = send_op(srv, alice, "/~/st/k", "alice on v1", (v1,))
    err(by_put, 409, "stale_parents")
    err(by_op, 409, "stale_parents")
    assert srv.node.bus.seq == seq and client.get("/~/st/k").json() == "second"
    # on the current version both pass, and their value is the key's
    assert client.put("/~/st/k", json="owner on v2", headers={"Parents": f'"{v2}"'}).status_code == 200
    v3 = client.get("/~/st/k").headers["version"].strip('"')
    r = send_op(srv, alice, "/~/st/k", "alice on v3", (v3,))
    assert r.status_code == 200, r.text
    assert client.get("/~/st/k").json() == "alice on v3"


def test_stale_parents_merge_on_a_yjs_key(client: httpx.Client) -> None:
    pycrdt = pytest.importorskip("pycrdt")
    doc = pycrdt.Doc()
    doc["t"] = text = pycrdt.Text()
    ytype = {"Content-Type": "application/vnd.yjs.update"}
    text += "a"
    v1 = client.patch("/~/st/doc", content=doc.get_update(), headers=ytype).json()["version"][0]
    before = doc.get_state()
    text += "b"
    client.patch("/~/st/doc", content=doc.get_update(before), headers=ytype)
    other = pycrdt.Doc()
    other.apply_update(doc.get_update())
    state = other.get_state()
    other_text = other.get("t", type=pycrdt.Text)
    other_text += "c"
    r = client.patch("/~/st/doc", content=other.get_update(state), headers={**ytype, "Parents": f'"{v1}"'})
    assert r.status_code == 200, r.text  # a CRDT merges concurrent updates


# --------------------------------------------------------------------- Content-Range, json "", sizes


def test_content_range_is_read_as_utf8(client: httpx.Client) -> None:
    client.put("/~/cr/a", json={})
    r = client.patch("/~/cr/a", content=b"1", headers=[(b"Content-Range", "json .café".encode())])
    assert r.status_code == 200, r.text
    assert client.get("/~/cr/a").json() == {"café": 1}
    r = client.patch("/~/cr/a", content=b"2", headers=[(b"Content-Range", b"json .caf\xe9")])
    err(r, 400, "invalid_range")  # latin-1 bytes are not UTF-8


def test_a_read_s_range_header_is_read_as_utf8(client: httpx.Client) -> None:
    client.put("/~/cr/r", json={"café": {"crème": 7}})
    r = client.get("/~/cr/r", headers=[(b"Range", "json .café.crème".encode())])
    assert r.status_code == 206, r.text  # a range of the value
    assert r.json() == 7
    err(client.get("/~/cr/r", headers=[(b"Range", b"json .caf\xe9")]), 400, "invalid_range")


def test_json_empty_quotes_address_the_whole_value(client: httpx.Client) -> None:
    client.put("/~/cr/b", json={"a": 1})
    r = client.put("/~/cr/b", content=b'{"z":2}', headers={"Content-Range": 'json ""'})
    assert r.status_code == 200, r.text
    assert client.get("/~/cr/b").json() == {"z": 2}
    assert client.patch("/~/cr/b", content=b"[1]", headers={"Content-Range": 'json ""'}).status_code == 200
    assert client.get("/~/cr/b").json() == [1]


BIG = 2 * 1024 * 1024


def test_max_value_bytes_above_1mib_admits_bigger_json(tmp_path: Path) -> None:
    # a request body is bounded by max_body_bytes on its own: raise both (docs/configuration.md)
    settings = {"max_value_bytes": 4 * 1024 * 1024, "max_body_bytes": 8 * 1024 * 1024}
    value = {"s": "x" * BIG}
    with (
        live_server(tmp_path / "node", **settings) as srv,
        httpx.Client(base_url=srv.url, headers=srv.auth, timeout=30) as c,
    ):
        r = c.put("/~/big/v", json=value)
        assert r.status_code == 200, r.text
        assert c.get("/~/big/v").json() == value
        r = c.patch("/~/big/v", content=b'"' + b"y" * BIG + b'"', headers={"Content-Range": "json .t"})
        assert r.status_code == 200, r.text
        err(c.put("/~/big/v", json={"s": "x" * (5 * 1024 * 1024)}), 413, "too_large")


def test_max_value_bytes_below_the_default_still_holds(tmp_path: Path) -> None:
    with (
        live_server(tmp_path / "node", max_value_bytes=1000) as srv,
        httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as c,
    ):
        body = b"[" + b",".join([b"1e5"] * 200) + b"]"  # 800 bytes in, 1800 stored (100000.0)
        err(c.put("/~/small/v", content=body), 413, "too_large")
        assert c.put("/~/small/v", json="x" * 900).status_code == 200
