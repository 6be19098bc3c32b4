"""RFC 9110 byte ranges of binary values against a live node: 206 with ``Content-Range``, several
ranges as ``multipart/byteranges``, 416 with ``bytes */size``, ``If-Range``, ``Accept-Ranges``; the
value headers (nosniff, sandbox, attachment) stay on every partial answer."""

from __future__ import annotations

import email.parser
import email.policy

import httpx
import pytest

from statebus.errors import RangeNotSatisfiable
from statebus.http.byte_ranges import if_range_holds, parse_byte_ranges

BLOB = bytes(range(256)) * 4  # 1024 bytes


@pytest.fixture
def blob(client: httpx.Client) -> str:
    assert client.put(
        "/~/media/blob", content=BLOB, headers={"Content-Type": "application/x-demo"}
    ).is_success
    return "/~/media/blob"


def kept_value_headers(r: httpx.Response) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["content-security-policy"] == "sandbox"
    assert r.headers["content-disposition"] == "attachment"


def test_whole_value_says_it_takes_byte_ranges(client: httpx.Client, blob: str) -> None:
    r = client.get(blob)
    assert r.status_code == 200 and r.content == BLOB and r.headers["accept-ranges"] == "bytes"
    assert "accept-ranges" not in client.put("/~/j", json=1).headers
    assert "accept-ranges" not in client.get("/~/j").headers


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=-10", 1014, 1023),
        ("bytes=0-", 0, 1023),
        ("bytes=1000-5000", 1000, 1023),
        ("bytes=1023-1023", 1023, 1023),
        ("BYTES = 5-6", 5, 6),
        ("bytes=-5000", 0, 1023),
    ],
)
def test_one_range_is_206(client: httpx.Client, blob: str, spec: str, first: int, last: int) -> None:
    r = client.get(blob, headers={"Range": spec})
    assert r.status_code == 206, r.text
    assert r.content == BLOB[first : last + 1]
    assert r.headers["content-range"] == f"bytes {first}-{last}/1024"
    assert r.headers["content-length"] == str(last - first + 1)
    assert r.headers["content-type"] == "application/x-demo" and r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"] == client.get(blob).headers["etag"]  # the same representation
    assert "version" in r.headers
    kept_value_headers(r)


def test_several_ranges_are_multipart_byteranges(client: httpx.Client, blob: str) -> None:
    r = client.get(blob, headers={"Range": "bytes=0-1, 10-12, -2, 5000-6000"})
    assert r.status_code == 206
    ctype = r.headers["content-type"]
    assert ctype.startswith("multipart/byteranges; boundary=")
    kept_value_headers(r)
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"content-type: " + ctype.encode() + b"\r\n\r\n" + r.content
    )
    parts = [(p["content-range"], p["content-type"], p.get_payload(decode=True)) for p in msg.iter_parts()]
    assert parts == [
        ("bytes 0-1/1024", "application/x-demo", BLOB[0:2]),
        ("bytes 10-12/1024", "application/x-demo", BLOB[10:13]),
        ("bytes 1022-1023/1024", "application/x-demo", BLOB[1022:]),
    ]


@pytest.mark.parametrize("spec", ["bytes=1024-", "bytes=5000-6000", "bytes=-0", "bytes=2000-, 3000-3001"])
def test_unsatisfiable_is_416(client: httpx.Client, blob: str, spec: str) -> None:
    r = client.get(blob, headers={"Range": spec})
    assert r.status_code == 416, r.text
    assert r.headers["content-range"] == "bytes */1024"
    assert r.json()["error"] == "range_not_satisfiable"


@pytest.mark.parametrize(
    "spec", ["bytes=5-2", "bytes=x-", "bytes=", "bytes=1-2-3", "bytes=" + ",".join(["0-0"] * 17)]
)
def test_malformed_ranges_are_ignored(client: httpx.Client, blob: str, spec: str) -> None:
    r = client.get(blob, headers={"Range": spec})
    assert r.status_code == 200 and r.content == BLOB


def test_if_range(client: httpx.Client, blob: str) -> None:
    etag = client.get(blob).headers["etag"]
    r = client.get(blob, headers={"Range": "bytes=0-3", "If-Range": etag})
    assert r.status_code == 206 and r.content == BLOB[:4]
    for stale in ('"0000"', "W/" + etag, "Sun, 06 Dec 2026 00:00:00 GMT"):
        r = client.get(blob, headers={"Range": "bytes=0-3", "If-Range": stale})
        assert r.status_code == 200 and r.content == BLOB, stale
    client.put(blob, content=b"new", headers={"Content-Type": "application/x-demo"})
    r = client.get(blob, headers={"Range": "bytes=0-3", "If-Range": etag})
    assert r.status_code == 200 and r.content == b"new"  # changed since: the whole new value


def test_head_with_a_range(client: httpx.Client, blob: str) -> None:
    r = client.head(blob, headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.headers["content-range"] == "bytes 1014-1023/1024" and r.content == b""


def test_json_values_keep_braid_ranges(client: httpx.Client) -> None:
    client.put("/~/r", json={"a": [1, 2]})
    r = client.get("/~/r", headers={"Range": "json .a[1]"})
    assert r.status_code == 206 and r.json() == 2 and r.headers["content-range"] == "json .a[1]"
    assert client.get("/~/r", headers={"Range": "bytes=0-1"}).status_code == 400


def test_empty_value(client: httpx.Client) -> None:
    client.put("/~/empty", content=b"", headers={"Content-Type": "application/x-demo"})
    assert client.get("/~/empty", headers={"Range": "bytes=-5"}).status_code == 416
    assert client.get("/~/empty", headers={"Range": "bytes=0-"}).status_code == 416


def test_parser() -> None:
    assert parse_byte_ranges("bytes=0-99, -10", 1000) == [(0, 99), (990, 999)]
    assert parse_byte_ranges("items=0-1", 10) is None
    assert parse_byte_ranges("bytes=0-1,,2-3", 10) == [(0, 1), (2, 3)]
    with pytest.raises(RangeNotSatisfiable) as caught:
        parse_byte_ranges("bytes=10-", 10)
    assert caught.value.size == 10 and caught.value.status_hint == 416
    assert if_range_holds(None, None) and if_range_holds('"a"', '"a"')
    assert not if_range_holds('W/"a"', '"a"') and not if_range_holds('"a"', None)
