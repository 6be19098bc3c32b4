"""REST on keys against a real server: round trips, and every error path (4xx JSON, store unchanged)."""

from __future__ import annotations

import json

import httpx
import pytest

from statebus.testing.live_server import LiveServer, SseReader, sse_headers


def err(r: httpx.Response, status: int, code: str | None = None) -> dict[str, str]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "detail"} and body["detail"]
    if code is not None:
        assert body["error"] == code
    return body


def test_put_get_round_trip(client: httpx.Client, srv: LiveServer) -> None:
    r = client.put("/~/app/x", json={"a": [1, 2], "b": "é"}, headers={"Version": '"v1"'})
    assert r.status_code == 200
    assert r.json() == {"version": ["v1"], "frontier": ["v1"], "seq": 1}
    assert r.headers["version"] == '"v1"'
    assert r.headers["range-request-allow-methods"] == "PATCH, PUT"
    assert r.headers["range-request-allow-units"] == "json"
    g = client.get("/~/app/x")
    assert g.status_code == 200 and g.json() == {"a": [1, 2], "b": "é"}
    assert g.headers["content-type"] == "application/json"
    assert g.headers["version"] == '"v1"'
    etag = g.headers["etag"]
    # the full key and the local alias are the same key
    assert client.get(f"/{srv.local}/app/x").json() == g.json()
    assert client.get("/~/app/x", headers={"If-None-Match": etag}).status_code == 304
    client.put("/~/app/x", json=2)
    g2 = client.get("/~/app/x", headers={"If-None-Match": etag})
    assert g2.status_code == 200 and g2.json() == 2 and g2.headers["etag"] != etag


def test_put_without_content_type_is_json_and_other_types_are_bytes(client: httpx.Client) -> None:
    r = client.put("/~/n", content=b"[1,2]")
    assert r.status_code == 200
    assert client.get("/~/n").json() == [1, 2]
    blob = bytes(range(256))
    r = client.put("/~/blob", content=blob, headers={"Content-Type": "image/png"})
    assert r.status_code == 200
    g = client.get("/~/blob")
    assert g.content == blob and g.headers["content-type"] == "image/png"


def test_percent_decoded_keys(client: httpx.Client) -> None:
    assert client.put("/~/caf%C3%A9/a%20b", json=1).status_code == 200
    assert client.get("/~/café/a b").json() == 1


def test_range_reads(client: httpx.Client) -> None:
    client.put("/~/r", json={"a": {"b": [10, 20, 30]}})
    r = client.get("/~/r", headers={"Range": "json .a.b[1]"})
    assert r.status_code == 206 and r.json() == 20 and r.headers["content-range"] == "json .a.b[1]"
    q = client.get("/~/r", params={"range": ".a.b"})
    assert q.status_code == 206 and q.json() == [10, 20, 30]
    assert q.headers["etag"] != client.get("/~/r").headers["etag"]


def test_patch_forms(client: httpx.Client) -> None:
    client.put("/~/p", json={"a": 1, "list": [1, 2]}, headers={"Version": '"p1"'})
    r = client.put(
        "/~/p",
        content=b'"x"',
        headers={"Content-Range": "json .b", "Version": '"p2"', "Parents": '"p1"'},
    )
    assert r.status_code == 200 and r.json()["version"] == ["p2"]
    assert client.get("/~/p").json() == {"a": 1, "list": [1, 2], "b": "x"}
    body = (
        b"Content-Length: 2\r\nContent-Range: json .a\r\n\r\n10\r\n"
        b"Content-Length: 0\r\nContent-Range: json .b\r\n\r\n"
    )
    r = client.patch("/~/p", content=body, headers={"Patches": "2"})
    assert r.status_code == 200, r.text
    assert client.get("/~/p").json() == {"a": 10, "list": [1, 2]}
    r = client.patch("/~/p", content=b"[9]", headers={"Content-Range": "json .list[1:1]"})
    assert r.status_code == 200
    assert client.get("/~/p").json()["list"] == [1, 9, 2]


def test_delete(client: httpx.Client) -> None:
    client.put("/~/d", json=1)
    r = client.delete("/~/d")
    assert r.status_code == 200 and r.json()["seq"] == 2
    err(client.get("/~/d"), 404, "not_found")
    err(client.delete("/~/d"), 404, "not_found")
    err(client.get("/~/never"), 404, "not_found")


def test_yjs_patch(client: httpx.Client) -> None:
    import pycrdt

    doc: pycrdt.Doc = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    text += "hello"
    update = doc.get_update()
    r = client.patch("/~/doc", content=update, headers={"Content-Type": "application/vnd.yjs.update"})
    assert r.status_code == 200, r.text
    # (how a Yjs root is rendered as JSON is the merge type's business; here: it is there)
    value = client.get("/~/doc").json()
    assert set(value) == {"t"}
    # a range patch on a yjs key is refused and changes nothing
    err(client.patch("/~/doc", content=b"1", headers={"Content-Range": "json .x"}), 400)
    err(client.put("/~/doc", json={"t": "x"}, headers={"Merge-Type": "lww"}), 400, "invalid_op")
    assert client.get("/~/doc").json() == value


def test_a_listing_gives_the_cursor_a_stream_resumes_from(client: httpx.Client, srv: LiveServer) -> None:
    """A lazy tree lists a subtree, then streams every change after the listing (and no snapshot)."""
    for i in range(3):
        client.put(f"/~/lazy/{i}", json=i)
    listing = client.get("/~/lazy/", params={"limit": 2}).json()
    client.put("/~/lazy/after", json="later")
    url = srv.url + f"/~/lazy/?since={listing['seq']}"
    with httpx.stream("GET", url, headers=sse_headers(srv), timeout=10) as r:
        event = SseReader(r).next_event()
    assert listing["children"] == ["0", "1"] and listing["seq"] >= 3, listing
    assert (event["event"], event["data"]["key"], event["data"]["value"]) == (
        "update",
        f"/{srv.local}/lazy/after",
        "later",
    ), event


def test_subtree_listing_paginates(client: httpx.Client, srv: LiveServer) -> None:
    for name in ("a", "b", "c", "d/e"):
        client.put(f"/~/t/{name}", json=name)
    r = client.get("/~/t/", params={"limit": 2})
    assert r.status_code == 200
    body = r.json()
    assert body == {
        "key": f"/{srv.local}/t/",
        "children": ["a", "b"],
        "next": "b",
        "seq": srv.node.durable_seq,
    }
    r = client.get("/~/t/", params={"limit": 2, "after": "b"})
    assert r.json()["children"] == ["c", "d/"] and r.json()["next"] is None
    err(client.get("/~/t/", params={"limit": 0}), 400, "invalid_value")
    err(client.get("/~/t/", params={"limit": "many"}), 400, "invalid_value")


def test_misc_methods(client: httpx.Client) -> None:
    r = client.request("PROPFIND", "/~/x")
    body = err(r, 405, "method_not_allowed")
    assert "PROPFIND" in body["detail"] and "GET" in r.headers["allow"]
    o = client.options("/~/x")
    assert o.status_code == 204 and "PATCH" in o.headers["allow"]
    assert client.head("/~/missing").status_code == 404


BAD_WRITES = [
    # (method, path, content, headers, status, code)
    ("PUT", "/nokey/x", b"1", {}, 400, "invalid_key"),
    ("PUT", "/~/a//b", b"1", {}, 400, "invalid_key"),
    ("PUT", "/~/a/%2E%2E/b", b"1", {}, 400, "invalid_key"),
    ("PUT", "/~/a%00b", b"1", {}, 400, "invalid_key"),
    ("PUT", "/~/sub/", b"1", {}, 400, "invalid_key"),
    ("PUT", "/~/k", b"{bad", {}, 400, "invalid_value"),
    ("PUT", "/~/k", b"", {"Content-Type": "application/json"}, 400, "invalid_value"),
    ("PUT", "/~/k", b'{"a":1,"a":2}', {}, 400, "invalid_value"),
    ("PUT", "/~/k", b"NaN", {}, 400, "invalid_value"),
    ("PUT", "/~/k", b"\xff", {}, 400, "invalid_value"),
    ("PUT", "/~/k", b"1", {"Version": "v2"}, 400, "invalid_value"),
    ("PUT", "/~/k", b"1", {"Version": '"a", "b"'}, 400, "invalid_value"),
    ("PUT", "/~/k", b"1", {"Version": '"\\ud800"'}, 400, "invalid_value"),
    ("PUT", "/~/k", b"1", {"Parents": '"k1", "\\udfff"'}, 400, "invalid_value"),
    ("PUT", "/~/k", b"1", {"Peer": '"\\ud800"'}, 400, "invalid_value"),
    ("PUT", "/~/k", b"1", {"Parents": "nope"}, 400, "invalid_value"),
    ("PUT", "/~/k", b"1", {"Parents": '"unknown-parent"'}, 400, "invalid_op"),
    ("PUT", "/~/k", b"1", {"Merge-Type": "sync9"}, 400, "invalid_op"),
    ("PUT", "/~/k", b"1", {"Merge-Type": "yjs"}, 400, None),
    ("PUT", "/~/k", b"1", {"Content-Range": "json .a["}, 400, "invalid_range"),
    ("PUT", "/~/k", b"1", {"Content-Range": "bytes 0-1"}, 400, "invalid_range"),
    ("PUT", "/~/k", b"1", {"Content-Range": "json .nope.deeper"}, 400, None),
    ("PUT", "/~/k", b"1", {"Patches": "x"}, 400, "invalid_op"),
    ("PUT", "/~/k", b"Content-Length: 5\r\n\r\n1", {"Patches": "1"}, 400, "invalid_op"),
    ("PATCH", "/~/k", b"1", {}, 400, "invalid_op"),
    ("PATCH", "/~/k", b"", {"Content-Type": "application/vnd.yjs.update"}, 400, "invalid_op"),
    ("PATCH", "/~/k", b"\x00\x01garbage", {"Content-Type": "application/vnd.yjs.update"}, 400, None),
    ("PUT", "/~/k", b"1", {"Peer": '"unterminated'}, 400, "invalid_value"),
    ("DELETE", "/~/k", b"", {"Version": "bad"}, 400, "invalid_value"),
]


@pytest.mark.parametrize(("method", "path", "content", "headers", "status", "code"), BAD_WRITES)
def test_bad_writes_change_nothing(
    client: httpx.Client,
    srv: LiveServer,
    method: str,
    path: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    code: str | None,
) -> None:
    client.put("/~/k", json={"a": {"b": 1}}, headers={"Version": '"k1"'})
    before = client.get("/~/k")
    seq = srv.node.seq
    err(client.request(method, path, content=content, headers=headers), status, code)
    after = client.get("/~/k")
    assert after.json() == before.json() and after.headers["version"] == before.headers["version"]
    assert srv.node.seq == seq


def test_bad_reads(client: httpx.Client) -> None:
    client.put("/~/k", json={"a": 1})
    err(client.get("/~/k", headers={"Range": "json .a["}), 400, "invalid_range")
    err(client.get("/~/k", headers={"Range": "bytes=0-1"}), 400, "invalid_range")
    err(client.get("/~/k", params={"range": "]["}), 400, "invalid_range")
    err(client.get("/bad"), 400, "invalid_key")
    err(client.get("/~/" + "x/" * 40 + "y"), 400, "invalid_key")
    err(client.get("/~/" + "x" * 2000), 400, "invalid_key")


def test_oversized_bodies_are_refused(tmp_path: object) -> None:
    from pathlib import Path

    from statebus.testing.live_server import live_server

    assert isinstance(tmp_path, Path)
    with (
        live_server(tmp_path / "n", max_body_bytes=1000) as s,
        httpx.Client(base_url=s.url, headers=s.auth) as c,
    ):
        big = json.dumps("x" * 5000).encode()
        err(c.put("/~/big", content=big), 413, "too_large")

        def chunks() -> object:
            for _ in range(10):
                yield b" " * 200
            yield b"1"

        # no Content-Length (chunked): refused once the limit is crossed
        err(c.put("/~/big", content=chunks()), 413, "too_large")  # type: ignore[arg-type]
        err(c.get("/~/big"), 404)
        assert c.put("/~/big", content=b"1").status_code == 200


def test_same_version_twice_is_idempotent_and_conflicts_are_409(client: httpx.Client) -> None:
    r1 = client.put("/~/v", json=1, headers={"Version": '"same"'})
    r2 = client.put("/~/v", json=1, headers={"Version": '"same"'})
    assert r1.status_code == r2.status_code == 200
    assert r2.json()["seq"] == r1.json()["seq"]
    err(client.put("/~/v", json=2, headers={"Version": '"same"'}), 409, "version_conflict")
    assert client.get("/~/v").json() == 1
