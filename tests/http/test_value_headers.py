"""Values are served as data: ``nosniff`` on every answer, ``CSP: sandbox`` on every value that is
not JSON, and active types (HTML, SVG, XML, unknown...) as attachments unless ``?view`` asks for the
sandboxed inline view. Pure checks of the rules, then every path of a live node that serves a value."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import json

import httpx
import pytest

from statebus.http.value_headers import is_inline, media_type_of, served_type, value_headers
from statebus.identity import Identity, sign_op, sign_request
from statebus.oplog import Op, encode_op, mint_version
from statebus.testing.live_server import LiveServer

NOSNIFF = ("x-content-type-options", "nosniff")
SANDBOX = ("content-security-policy", "sandbox")
ATTACHMENT = ("content-disposition", "attachment")
CLOCK = itertools.count(1)

ACTIVE = [
    "text/html",
    "text/html; charset=utf-8",
    "TEXT/HTML",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "application/pdf",
    "text/javascript",
    "application/octet-stream",
    "application/x-unknown-thing",
    "multipart/x-mixed-replace; boundary=x",
]
INERT = ["text/plain", "text/plain; charset=utf-8", "image/png", "image/jpeg", "audio/ogg", "video/mp4"]
MALFORMED = [
    "text/html\r\nset-cookie: a=b",
    "text/html\nx: y",
    "html",
    "",
    "text/ html",
    "text/html; é",
    "/x",
]


@pytest.mark.parametrize("ctype", ACTIVE)
def test_active_types_are_sandboxed_attachments(ctype: str) -> None:
    assert not is_inline(ctype)
    assert value_headers(ctype) == [NOSNIFF, SANDBOX, ATTACHMENT]
    assert value_headers(ctype, view=True) == [NOSNIFF, SANDBOX]  # the view: inline, still sandboxed


@pytest.mark.parametrize("ctype", INERT)
def test_inert_types_are_sandboxed_inline(ctype: str) -> None:
    assert is_inline(ctype)
    assert value_headers(ctype) == value_headers(ctype, view=True) == [NOSNIFF, SANDBOX]


def test_json_values_get_nosniff() -> None:
    assert value_headers(None) == value_headers(None, view=True) == [NOSNIFF]


@pytest.mark.parametrize("ctype", MALFORMED)
def test_a_malformed_type_is_served_as_an_octet_stream_attachment(ctype: str) -> None:
    assert media_type_of(ctype) is None
    assert served_type(ctype) == "application/octet-stream"
    assert value_headers(ctype) == [NOSNIFF, SANDBOX, ATTACHMENT]


def test_a_well_formed_type_is_served_as_written() -> None:
    assert media_type_of(" Image/SVG+xml ; charset=utf-8") == "image/svg+xml"
    assert served_type("text/html; charset=utf-8") == "text/html; charset=utf-8"


# ---------------------------------------------------------------------------------- a live node

PAGE = b"<!doctype html><script>fetch('/~/secret/x')</script>"


def put_as(client: httpx.Client, key: str, body: bytes, ctype: str) -> None:
    r = client.put(key, content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text


def has(r: httpx.Response, header: tuple[str, str]) -> bool:
    return r.headers.get(header[0]) == header[1]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_every_value_answer_says_what_it_may_do(client: httpx.Client, method: str) -> None:
    put_as(client, "/~/v/page", PAGE, "text/html")
    put_as(
        client,
        "/~/v/pic",
        b"<svg xmlns='http://www.w3.org/2000/svg'><script>1</script></svg>",
        "image/svg+xml",
    )
    put_as(client, "/~/v/note", b"plain words", "text/plain")
    assert client.put("/~/v/doc", json={"a": {"b": 1}}).status_code == 200
    for key in ("/~/v/page", "/~/v/pic"):
        r = client.request(method, key)
        assert r.status_code == 200
        assert has(r, NOSNIFF) and has(r, SANDBOX) and has(r, ATTACHMENT), r.headers
        view = client.request(method, key, params={"view": ""})
        assert view.status_code == 200 and view.headers["content-type"] == r.headers["content-type"]
        assert has(view, NOSNIFF) and has(view, SANDBOX) and "content-disposition" not in view.headers
    note = client.request(method, "/~/v/note")
    assert has(note, NOSNIFF) and has(note, SANDBOX) and "content-disposition" not in note.headers
    for r in (
        client.request(method, "/~/v/doc"),
        client.request(method, "/~/v/doc", params={"range": ".a"}),  # a range read (206)
        client.request(method, "/~/v/doc", headers={"Range": "json .a.b"}),
        client.request(method, "/~/v/"),  # a listing
    ):
        assert r.status_code in (200, 206) and r.headers["content-type"] == "application/json"
        assert has(r, NOSNIFF), r.headers
    if method == "GET":
        assert client.get("/~/v/page").content == PAGE  # the bytes themselves are unchanged


def test_the_answer_to_a_write_says_nosniff(client: httpx.Client) -> None:
    r = client.put("/~/v/w", json=1)
    assert r.status_code == 200 and has(r, NOSNIFF)


def signed_op(who: Identity, key: str, body: bytes, ctype: str) -> bytes:
    op = Op(key, "", (), who.pubkey, next(CLOCK), "lww", "set", body, ctype)
    return encode_op(sign_op(dataclasses.replace(op, version=mint_version(op)), who))


def test_a_grantee_s_and_a_hosted_peer_s_pages_are_sandboxed_attachments(
    client: httpx.Client, srv: LiveServer
) -> None:
    writer, peer = Identity.generate(), Identity.generate()
    assert client.put("/~/.acl/inbox", json={"write": [writer.pubkey]}).status_code == 200
    assert client.put("/~/.acl/.host", json=[peer.pubkey]).status_code == 200
    with httpx.Client(base_url=srv.url, timeout=10) as anon:
        for who, key in ((writer, f"/{srv.local}/inbox/page"), (peer, f"/{peer.pubkey}/page")):
            req = anon.build_request(
                "PUT",
                key,
                content=signed_op(who, key, PAGE, "text/html"),
                headers={"Content-Type": "application/vnd.statebus.op+json"},
            )
            req.headers.update(sign_request(req.method, str(req.url), req.headers, req.content, who))
            assert anon.send(req).status_code == 200
    for key in ("/~/inbox/page", f"/{peer.pubkey}/page"):
        r = client.get(key)  # the owner opens it
        assert r.status_code == 200 and r.content == PAGE
        assert has(r, NOSNIFF) and has(r, SANDBOX) and has(r, ATTACHMENT), r.headers


def test_a_stored_type_that_is_no_header_value_breaks_nothing(client: httpx.Client, srv: LiveServer) -> None:
    writer = Identity.generate()
    assert client.put("/~/.acl/odd", json={"write": [writer.pubkey]}).status_code == 200
    key = f"/{srv.local}/odd/x"
    ctype = "text/html\r\nset-cookie: statebus_token=planted"
    op = signed_op(writer, key, PAGE, ctype)
    with httpx.Client(base_url=srv.url, timeout=10) as anon:
        req = anon.build_request(
            "PUT", key, content=op, headers={"Content-Type": "application/vnd.statebus.op+json"}
        )
        req.headers.update(sign_request(req.method, str(req.url), req.headers, req.content, writer))
        assert anon.send(req).status_code == 200
    r = client.get("/~/odd/x")
    assert r.status_code == 200 and r.content == PAGE
    assert r.headers["content-type"] == "application/octet-stream"
    assert has(r, ATTACHMENT) and has(r, SANDBOX) and "set-cookie" not in r.headers
    # the Braid subscription carries the same type, and its update names no broken header either
    with client.stream("GET", "/~/odd/x", headers={"Subscribe": "true"}) as s:
        assert s.status_code == 209
        assert s.headers["content-type"] == "application/octet-stream"
        assert has(s, NOSNIFF) and has(s, SANDBOX)
        first = next(s.iter_raw())
        assert b"Content-Type: application/octet-stream\r\n" in first and b"set-cookie" not in first


def test_streams_say_nosniff_and_a_braid_stream_of_a_page_is_sandboxed(client: httpx.Client) -> None:
    put_as(client, "/~/s/page", PAGE, "text/html")
    with client.stream("GET", "/~/s/page", headers={"Subscribe": "true"}) as s:
        assert s.status_code == 209 and s.headers["content-type"].startswith("text/html")
        assert has(s, NOSNIFF) and has(s, SANDBOX)
    with client.stream("GET", "/~/s/", headers={"Accept": "text/event-stream"}) as s:
        assert s.status_code == 200 and has(s, NOSNIFF)
        event = b""
        for chunk in s.iter_raw():
            event += chunk
            if b"data:" in event and event.endswith(b"\n\n"):
                break
    data = json.loads(event.split(b"data: ", 1)[1].split(b"\n", 1)[0])
    assert data["content_type"] == "text/html" and base64.b64decode(data["value_base64"]) == PAGE


def test_the_node_s_own_page_runs_only_its_own_scripts_and_is_never_framed(client: httpx.Client) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    policy = [d.strip() for d in r.headers["content-security-policy"].split(";")]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "object-src 'none'" in policy and "base-uri 'none'" in policy
    assert has(r, NOSNIFF)
