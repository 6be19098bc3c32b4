"""Braid-HTTP wire format: headers, patch bodies, update framing (and the npm client's view of it)."""

from __future__ import annotations

import base64
import json
import random
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statebus.errors import InvalidOp, InvalidRange, InvalidValue, StatebusError
from statebus.http.braid import (
    HEARTBEAT,
    MAX_VERSIONS,
    format_update,
    format_version_list,
    parse_content_range,
    parse_heartbeats,
    parse_patch_request,
    parse_patches_body,
    parse_patches_count,
    parse_peer,
    parse_subscribe,
    parse_version_list,
)
from statebus.oplog import DELETE, Patch
from statebus.testing.braid_stream import BraidStreamParser

JS_DIR = Path(__file__).resolve().parents[1] / "js"

# --- Version / Parents ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('"v1"', ("v1",)),
        ('"a", "b"', ("a", "b")),
        ('"a","b"', ("a", "b")),
        ('  "a" ,\t"b"  ', ("a", "b")),
        ('"caf\\u00e9"', ("café",)),  # braid-http's ascii_ify form: http-sfv alone rejects \u
        ('"q\\"uote", "back\\\\slash"', ('q"uote', "back\\slash")),
        ('"\\ud83d\\ude00"', ("\U0001f600",)),
        ("", ()),
        ("   ", ()),
    ],
)
def test_parse_version_list(header: str, expected: tuple[str, ...]) -> None:
    assert parse_version_list(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "v1",  # unquoted: the npm client would throw on it
        '"a", b',
        '"a",,"b"',
        '"a",',
        '"a";q=1',
        '("a" "b")',
        "1",
        "?1",
        ":YWJj:",
        '%"display"',
        '["a"]',
        '"a", 1',
        '""',
        '"a", "a"',
        '"' + "x" * 129 + '"',
        '"tab\\there"',
        '"nul\\u0000"',
        '"caf\xe9"',  # raw non-ASCII
        '"unterminated',
        ", ".join(f'"v{i}"' for i in range(MAX_VERSIONS + 1)),
        '"' + "\\u0041" * 10_000 + '"',
    ],
)
def test_parse_version_list_rejects(header: str) -> None:
    with pytest.raises(InvalidValue, match="Parents"):
        parse_version_list(header, name="Parents")


def test_format_version_list_matches_braid_http() -> None:
    # version.map(JSON.stringify).map(ascii_ify).join(", ")
    assert format_version_list(["a", "b"]) == '"a", "b"'
    assert format_version_list(["café", "\U0001f600", 'q"']) == '"caf\\u00e9", "\\ud83d\\ude00", "q\\""'
    assert format_version_list([]) == ""


versions = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=128)


@given(st.lists(versions, max_size=MAX_VERSIONS, unique=True))
def test_version_list_round_trip(items: list[str]) -> None:
    text = format_version_list(items)
    assert text.isascii()
    assert parse_version_list(text) == tuple(items)


@given(st.text(max_size=300))
def test_version_list_hostile_input_raises_typed_errors_only(text: str) -> None:
    try:
        parse_version_list(text)
    except StatebusError:
        pass


# --- Subscribe, Heartbeats, Peer, Patches: N ------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, False),
        ("", True),
        ("true", True),
        ("?1", True),
        ("keep-alive", True),
        ("?0", False),
        ("false", False),
    ],
)
def test_parse_subscribe(header: str | None, expected: bool) -> None:
    assert parse_subscribe(header) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("0.5s", 0.5),
        ("10", 10.0),
        (" 2 s ", 2.0),
        ("500ms", 0.5),
        ("3600s", 3600.0),
        (".1", 0.1),
    ],
)
def test_parse_heartbeats(header: str | None, expected: float | None) -> None:
    assert parse_heartbeats(header) == expected


@pytest.mark.parametrize(
    "header", ["", "abc", "-1s", "0s", "0.01s", "3601", "1e3", "nan", "inf", "5 min", "1s2", "\u0661s"]
)
def test_parse_heartbeats_rejects(header: str) -> None:
    with pytest.raises(InvalidValue, match="Heartbeats"):
        parse_heartbeats(header)


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("abc", "abc"), ('"abc"', "abc"), (" x-1 ", "x-1"), ('"caf\\u00e9"', "café")],
)
def test_parse_peer(header: str | None, expected: str | None) -> None:
    assert parse_peer(header) == expected


@pytest.mark.parametrize("header", ['"a", "b"', '"unterminated', "x" * 129, "a\x00b", '"a\\nb"'])
def test_parse_peer_rejects(header: str) -> None:
    with pytest.raises(InvalidValue, match="Peer"):
        parse_peer(header)


@pytest.mark.parametrize(("header", "expected"), [("0", 0), ("2", 2), (" 10 ", 10), ("1000", 1000)])
def test_parse_patches_count(header: str, expected: int) -> None:
    assert parse_patches_count(header) == expected


@pytest.mark.parametrize("header", ["", "-1", "1001", "2.0", "two", "١", "99999999999"])
def test_parse_patches_count_rejects(header: str) -> None:
    with pytest.raises(InvalidOp, match="Patches"):
        parse_patches_count(header)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("json .a", ".a"),
        ("json .a.b[3]", ".a.b[3]"),
        ("JSON [1:2]", "[1:2]"),
        ("json", ""),
        ('json ["a b"]', '["a b"]'),
    ],
)
def test_parse_content_range(header: str, expected: str) -> None:
    assert parse_content_range(header) == expected


@pytest.mark.parametrize(
    "header", ["", "bytes 0-10/20", "text [1:2]", "json .a\x00", "json " + ".a" * 600, "json [x"]
)
def test_parse_content_range_rejects(header: str) -> None:
    with pytest.raises(InvalidRange):
        parse_content_range(header)


# --- Patches bodies --------------------------------------------------------------------------------

BRAID_FETCH_BODY = (
    b"content-length: 2\r\ncontent-range: json .a\r\n\r\n10\r\n"
    b'content-length: 10\r\ncontent-range: json .c\r\n\r\n{"z":true}\r\n'
)


def test_parse_patches_body_as_braid_fetch_sends_it() -> None:
    assert parse_patches_body(BRAID_FETCH_BODY, 2) == [Patch(".a", 10), Patch(".c", {"z": True})]


def test_parse_patches_body_lf_blank_lines_extra_headers_and_delete() -> None:
    body = (
        b"\n\nContent-Length: 3\nContent-Range: json .a\nX-Extra: 1\n\n[1]\n\n"
        b"Content-Range: json .b\nContent-Length: 0\n\n"
    )
    assert parse_patches_body(body, 2) == [Patch(".a", [1]), Patch(".b", DELETE)]


def test_parse_patch_request_dispatch() -> None:
    assert parse_patch_request(b'{"a":1}', content_range=None, patches=None) is None
    assert parse_patch_request(b'"new"', content_range="json .f", patches=None) == [Patch(".f", "new")]
    assert parse_patch_request(BRAID_FETCH_BODY, content_range=None, patches="2") == [
        Patch(".a", 10),
        Patch(".c", {"z": True}),
    ]
    assert parse_patch_request(b"", content_range=None, patches="0") == []


@pytest.mark.parametrize(
    ("body", "count", "error", "reason"),
    [
        (BRAID_FETCH_BODY, 3, InvalidOp, "ends after 2 of 3"),
        (BRAID_FETCH_BODY, 1, InvalidOp, "more than the 1"),
        (b"Content-Length: 99\r\nContent-Range: json .a\r\n\r\n1", 1, InvalidOp, "past the end"),
        (b"Content-Range: json .a\r\n\r\n1", 1, InvalidOp, "no Content-Length"),
        (b"Content-Length: 1\r\n\r\n1", 1, InvalidOp, "no Content-Range"),
        (b"Content-Length: -1\r\nContent-Range: json .a\r\n\r\n1", 1, InvalidOp, "whole number"),
        (b"Content-Length: 1\r\nContent-Length: 1\r\nContent-Range: json .a\r\n\r\n1", 1, InvalidOp, "twice"),
        (b"Content-Length: 1\r\nContent-Range: json .a\r\n1", 1, InvalidOp, "blank line"),
        (b"garbage line\r\n\r\n", 1, InvalidOp, "Name: value"),
        (b"Content-Length: 1\r\nContent-Range: bytes 0-1\r\n\r\n1", 1, InvalidRange, "unit"),
        (b"Content-Length: 3\r\nContent-Range: json .a\r\n\r\nabc", 1, InvalidValue, "patch 1 content"),
        (b"Content-Length: 3\r\nContent-Range: json .a\r\n\r\nNaN", 1, InvalidValue, "patch 1"),
        (b"Content-Length: 1\r\nContent-Range: json .a\r\n\r\n1", -1, InvalidOp, "Patches"),
        (b"Content-Length: 1\r\nContent-\xffRange: json .a\r\n\r\n1", 1, InvalidOp, "UTF-8"),
        (b"X: " + b"a" * 9000 + b"\r\n\r\n", 1, InvalidOp, "blank line within"),
    ],
)
def test_parse_patches_body_rejects(body: bytes, count: int, error: type[Exception], reason: str) -> None:
    with pytest.raises(error, match=reason):
        parse_patches_body(body, count)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ranges = st.sampled_from(["", ".a", ".a.b", "[0]", "[1:3]", '["a b"]', ".x[-1]"])


@given(
    st.lists(st.tuples(ranges, json_values | st.just(DELETE)), max_size=6), st.sampled_from([b"\r\n", b"\n"])
)
def test_patches_body_round_trip(items: list[tuple[str, object]], eol: bytes) -> None:
    body = b""
    for rng, content in items:
        raw = b"" if content is DELETE else json.dumps(content).encode()
        body += b"Content-Length: %d%sContent-Range: json %s%s%s%s%s" % (
            len(raw),
            eol,
            rng.encode(),
            eol,
            eol,
            raw,
            eol,
        )
    assert parse_patches_body(body, len(items)) == [Patch(r, c) for r, c in items]  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(-2, 5))
def test_patches_body_hostile_input_raises_typed_errors_only(body: bytes, count: int) -> None:
    try:
        parse_patches_body(body, count)
    except StatebusError:
        pass


@given(st.lists(st.sampled_from([b"Content-Length: 1", b"Content-Range: json .a", b"", b"1", b"\r", b"x:y"])))
def test_patches_body_hostile_structure_raises_typed_errors_only(lines: list[bytes]) -> None:
    try:
        parse_patches_body(b"\r\n".join(lines), 2)
    except StatebusError:
        pass


# --- 209 update framing ----------------------------------------------------------------------------


def test_format_update_snapshot_matches_braid_http_bytes() -> None:
    assert format_update(["v1"], None, body=b'{"a":1}', status="200") == (
        b'HTTP 200 OK\r\nVersion: "v1"\r\nContent-Length: 7\r\n\r\n{"a":1}\r\n\r\n'
    )


def test_format_update_patches_match_braid_http_bytes() -> None:
    out = format_update(["v3"], ["v2"], patches=[(".b", b"3"), (".c", b'"str"')], status=200)
    assert out == (
        b'HTTP 200 OK\r\nVersion: "v3"\r\nParents: "v2"\r\nPatches: 2\r\n\r\n'
        b"Content-Length: 1\r\nContent-Range: json .b\r\n\r\n3\r\n\r\n"
        b'Content-Length: 5\r\nContent-Range: json .c\r\n\r\n"str"\r\n\r\n'
    )


def test_format_update_missing_key_and_headers() -> None:
    assert (
        format_update(None, None, status="404") == b"HTTP 404 Not Found\r\nContent-Length: 0\r\n\r\n\r\n\r\n"
    )
    out = format_update(["v"], [], body=b"x", content_type="text/plain", extra_headers={"Merge-Type": "lww"})
    head = b'Version: "v"\r\nContent-Type: text/plain\r\nMerge-Type: lww\r\n'
    assert out == head + b"Content-Length: 1\r\n\r\nx\r\n\r\n"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"body": b"x", "patches": []},
        {"status": "20"},
        {"status": "abc"},
        {"content_type": "a\r\nX-Evil: 1"},
        {"extra_headers": {"Bad Name": "x"}},
        {"extra_headers": {"X": "a\nb"}},
        {"patches": [(".a\r\nX: 1", b"1")]},
    ],
)
def test_format_update_rejects_injection_and_misuse(kwargs: dict[str, object]) -> None:
    with pytest.raises((InvalidOp, InvalidValue)):
        format_update(["v"], None, **kwargs)  # type: ignore[arg-type]


def test_stream_parser_reads_updates_heartbeats_and_split_chunks() -> None:
    stream = (
        format_update(["v1"], None, body=b'{"a":1}', status="200")
        + HEARTBEAT * 3
        + format_update(["v2"], ["v1"], patches=[(".b", b"3"), (".c", b"")], status="200")
        + format_update(None, None, status="404")
    )
    parser = BraidStreamParser()
    updates = [u for i in range(len(stream)) for u in parser.feed(stream[i : i + 1])]  # one byte at a time
    assert [u.status for u in updates] == ["200", "200", "404"]
    assert updates[0].version == ("v1",) and updates[0].json() == {"a": 1}
    assert updates[1].parents == ("v1",)
    assert [(p.unit, p.range, p.content) for p in updates[1].patches or ()] == [
        ("json", ".b", b"3"),
        ("json", ".c", b""),
    ]
    assert updates[2].body == b"" and updates[2].version is None
    assert parser.pending == b"\r\n\r\n"  # the blank lines after the last update wait for the next one


def test_stream_parser_errors_like_braid_http() -> None:
    with pytest.raises(InvalidOp, match="without content-length or patches"):
        BraidStreamParser().feed(b'Version: "v1"\r\n\r\n')


def _random_update(rng: random.Random, i: int) -> tuple[bytes, dict[str, object]]:
    version = [f"v{i}", *(["é-\U0001f600"] if rng.random() < 0.2 else [])]
    parents = [f"v{i - 1}"] if i else []
    status = rng.choice([None, "200", "404"])
    if rng.random() < 0.5:
        body = json.dumps({"n": i, "s": "x\r\n" * rng.randint(0, 3)}).encode()
        expect = {"body": body, "patches": None}
        data = format_update(version, parents, body=body, status=status)
    else:
        patches = [
            (rng.choice([".a", "[0:1]", '["k"]']), str(j).encode() * rng.randint(0, 2)) for j in range(3)
        ]
        expect = {"body": None, "patches": [("json", r, c) for r, c in patches]}
        data = format_update(version, parents, patches=patches, status=status)
    expect.update(version=version, parents=parents or None, status=status)
    return data, expect


def test_npm_braid_http_client_parses_our_updates_like_stream_parser() -> None:
    """Differential test against the real npm client parser (braid-http 1.3.80 subscription_parser)."""
    rng = random.Random(20261121)
    stream, expected = b"", []
    for i in range(60):
        data, expect = _random_update(rng, i)
        stream += data + HEARTBEAT * rng.randint(0, 3)
        expected.append(expect)
    ours = [
        {
            "body": u.body,
            "patches": [(p.unit, p.range, p.content) for p in u.patches] if u.patches is not None else None,
            "version": list(u.version or []),
            "parents": list(u.parents) if u.parents else None,
            "status": u.status,
        }
        for u in BraidStreamParser().feed(stream)
    ]
    assert ours == expected
    theirs = _npm_parse(stream)
    assert [
        {
            "body": base64.b64decode(u["body"]) if u["body"] is not None else None,
            "patches": [(p["unit"], p["range"], base64.b64decode(p["content"])) for p in u["patches"]]
            if u["patches"] is not None
            else None,
            "version": u["version"],
            "parents": u["parents"],
            "status": u["status"],
        }
        for u in theirs
    ] == expected


_NPM_PARSE = """
const {subscription_parser} = require(require('path').resolve('node_modules/braid-http/braid-http-client.js'))
const chunks = []
process.stdin.on('data', c => chunks.push(c))
process.stdin.on('end', async () => {
  const out = []
  const b64 = x => Buffer.from(x).toString('base64')
  const p = subscription_parser((u, err) => {
    if (err) { out.push({error: String(err.message || err)}); return }
    out.push({version: u.version ?? null, parents: u.parents ?? null, status: u.status ?? null,
              body: u.body ? b64(u.body) : null,
              patches: u.patches ? u.patches.map(p => ({unit: p.unit, range: p.range,
                                                         content: b64(p.content)})) : null})
  })
  for (let i = 0; i < chunks.length; i++) await p.read(chunks[i])
  process.stdout.write(JSON.stringify(out))
})
"""


def _npm_parse(stream: bytes) -> list[dict[str, object]]:
    proc = subprocess.run(
        ["node", "--input-type=commonjs", "-e", _NPM_PARSE],
        input=stream,
        cwd=JS_DIR,
        capture_output=True,
        timeout=30,
        check=True,
    )
    result: list[dict[str, object]] = json.loads(proc.stdout)
    assert not [u for u in result if "error" in u], result
    return result


@given(st.text(max_size=200))
def test_header_parsers_raise_typed_errors_only(text: str) -> None:
    for parse in (parse_content_range, parse_peer, parse_heartbeats, parse_patches_count, parse_subscribe):
        try:
            parse(text)
        except StatebusError:
            pass


update_specs = st.tuples(
    st.lists(versions, min_size=1, max_size=3, unique=True),
    st.lists(versions, max_size=3, unique=True),
    st.one_of(
        st.binary(max_size=40).map(lambda b: ("body", b)),
        st.lists(st.tuples(ranges, st.binary(max_size=20)), max_size=3).map(lambda p: ("patches", p)),
    ),
    st.sampled_from([None, "200", "404"]),
    st.integers(0, 4),
)


@given(st.lists(update_specs, max_size=5), st.integers(1, 17))
def test_stream_parser_reads_any_format_update_output(specs: list, chunk: int) -> None:
    stream = b""
    for version, parents, (what, payload), status, beats in specs:
        kwargs = {"body": payload} if what == "body" else {"patches": payload}
        stream += HEARTBEAT * beats + format_update(version, parents, status=status, **kwargs)
    parser = BraidStreamParser()
    got = [u for i in range(0, len(stream), chunk) for u in parser.feed(stream[i : i + chunk])]
    assert len(got) == len(specs)
    for update, (version, parents, (what, payload), status, _) in zip(got, specs, strict=True):
        assert (update.version, update.parents or (), update.status) == (
            tuple(version),
            tuple(parents),
            status,
        )
        if what == "body":
            assert update.body == payload and update.patches is None
        else:
            assert [(p.range, p.content) for p in update.patches or ()] == payload


@settings(max_examples=300)
@given(
    st.lists(
        st.binary(max_size=40)
        | st.sampled_from([b"HTTP 200 OK\r\n", b"Patches: 2\r\n", b"\r\n", b"Content-Length: 3\r\n"]),
        max_size=8,
    )
)
def test_stream_parser_hostile_input_raises_typed_errors_only(chunks: list[bytes]) -> None:
    parser = BraidStreamParser()
    try:
        for chunk in chunks:
            parser.feed(chunk)
    except StatebusError:
        pass
