"""Key paths: the validation table, pubkey encoding and pattern matching."""

from __future__ import annotations

import os

import pytest

from statebus.errors import InvalidKey
from statebus.keys import (
    MAX_DEPTH,
    MAX_KEY_BYTES,
    MAX_SEGMENT_BYTES,
    decode_pubkey,
    encode_pubkey,
    is_pubkey,
    is_subtree,
    join,
    key_matches,
    namespace_of,
    parent_of,
    parse_key,
    segments,
)

NS = encode_pubkey(bytes(range(32)))
LOCAL = encode_pubkey(bytes(31) + b"\x01")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (f"/{NS}", f"/{NS}"),
        (f"/{NS}/app", f"/{NS}/app"),
        (f"/{NS}/app/posts/42", f"/{NS}/app/posts/42"),
        (f"/{NS}/app/", f"/{NS}/app/"),
        (f"/{NS}/", f"/{NS}/"),
        (f"/{NS}/ünï/çødé", f"/{NS}/ünï/çødé"),
        (f"/{NS}/a b/c%20d", f"/{NS}/a b/c%20d"),
        (f"/{NS}/...", f"/{NS}/..."),
        (f"/{NS}/a~b/~", f"/{NS}/a~b/~"),
        ("/~/x", f"/{LOCAL}/x"),
        ("/~/x/", f"/{LOCAL}/x/"),
        ("/~", f"/{LOCAL}"),
        (f"/{NS}/" + "/".join(["s"] * (MAX_DEPTH - 1)), f"/{NS}/" + "/".join(["s"] * (MAX_DEPTH - 1))),
        (f"/{NS}/" + "x" * MAX_SEGMENT_BYTES, f"/{NS}/" + "x" * MAX_SEGMENT_BYTES),
    ],
)
def test_valid_keys(path: str, expected: str) -> None:
    assert parse_key(path, LOCAL) == expected


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/",
        "//",
        "x",
        f"{NS}/x",
        f"/{NS}//x",
        f"/{NS}/x//",
        f"//{NS}/x",
        f"/{NS}/./x",
        f"/{NS}/../x",
        f"/{NS}/x/..",
        f"/{NS}/x/.",
        f"/{NS}/.",
        f"/{NS}/a\x00b",
        f"/{NS}/a\nb",
        f"/{NS}/a\tb",
        f"/{NS}/a\x7fb",
        f"/{NS}/a\x85b",
        f"/{NS}/a\\b",
        f"/{NS}/a\ud800b",
        f"/{NS}/" + "x" * (MAX_SEGMENT_BYTES + 1),
        f"/{NS}/" + "é" * (MAX_SEGMENT_BYTES // 2 + 1),
        f"/{NS}/" + "/".join(["s"] * MAX_DEPTH),
        f"/{NS}/" + "/".join(["x" * 200] * 5),
        "/" + "a" * 51,
        "/" + "a" * 53,
        "/" + "A" * 51 + "A",
        "/" + "a" * 51 + "b",
        "/" + "a" * 51 + "1",
        "/" + "a" * 50 + "8q",
        "/alice/x",
        "/~x/y",
        "/~~/y",
    ],
)
def test_invalid_keys(path: str) -> None:
    with pytest.raises(InvalidKey):
        parse_key(path, LOCAL)


def test_key_too_long_counts_bytes_after_resolving_tilde() -> None:
    filler = "/".join(["x" * 200] * 5)
    path = f"/~/{filler}"
    assert len(path.encode()) < MAX_KEY_BYTES
    with pytest.raises(InvalidKey, match="bytes"):
        parse_key(path, LOCAL)
    limit = "/".join(["y" * 200] * 4) + "/" + "z" * (MAX_KEY_BYTES - 2 - 52 - 4 * 201)
    assert len(parse_key(f"/{NS}/{limit}").encode()) == MAX_KEY_BYTES


def test_tilde_needs_a_local_namespace() -> None:
    with pytest.raises(InvalidKey, match="local"):
        parse_key("/~/x")
    with pytest.raises(InvalidKey):
        parse_key("/~/x", local="not-a-key")


def test_subtree_forms() -> None:
    assert is_subtree(parse_key(f"/{NS}/a/"))
    assert not is_subtree(parse_key(f"/{NS}/a"))
    with pytest.raises(InvalidKey, match="subtree"):
        parse_key(f"/{NS}/a/", allow_subtree=False)
    assert parse_key(f"/{NS}/a", allow_subtree=False) == f"/{NS}/a"


def test_non_string_is_rejected() -> None:
    with pytest.raises(InvalidKey):
        parse_key(b"/x")  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [bytes(32), b"\xff" * 32, bytes(range(32)), os.urandom(32)])
def test_pubkey_round_trip(raw: bytes) -> None:
    text = encode_pubkey(raw)
    assert len(text) == 52 and text == text.lower()
    assert is_pubkey(text)
    assert decode_pubkey(text) == raw


def test_pubkey_last_char_must_be_canonical() -> None:
    text = encode_pubkey(b"\xff" * 32)
    assert text[-1] == "q"
    for ch in "bcdpz27":
        assert not is_pubkey(text[:-1] + ch)
        with pytest.raises(InvalidKey):
            decode_pubkey(text[:-1] + ch)


@pytest.mark.parametrize("raw", [b"", bytes(31), bytes(33)])
def test_encode_pubkey_needs_32_bytes(raw: bytes) -> None:
    with pytest.raises(InvalidKey):
        encode_pubkey(raw)


def test_decode_pubkey_rejects_bad_text() -> None:
    for text in ["", "a" * 52 + "a", "A" * 52, "a" * 51 + "Q", "a" * 51 + "8"]:
        with pytest.raises(InvalidKey):
            decode_pubkey(text)


def test_helpers() -> None:
    key = f"/{NS}/a/b/c"
    assert namespace_of(key) == NS
    assert segments(key) == [NS, "a", "b", "c"]
    assert segments(f"/{NS}/a/") == [NS, "a"]
    assert parent_of(key) == f"/{NS}/a/b/"
    assert parent_of(f"/{NS}/a/b/") == f"/{NS}/a/"
    assert join(f"/{NS}/a/", "b", "c") == key
    assert join(f"/{NS}/a", "b") == f"/{NS}/a/b"


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("/n/a", "/n/a", True),
        ("/n/a", "/n/ab", False),
        ("/n/a", "/n/a/b", False),
        ("/n/a/", "/n/a/b", True),
        ("/n/a/", "/n/a/b/c", True),
        ("/n/a/", "/n/a/", False),
        ("/n/a/", "/n/a", False),
        ("/n/a/", "/n/ab", False),
        ("/n/a*", "/n/ab", True),
        ("/n/a*", "/n/a", True),
        ("/n/a/*", "/n/a/b/c", True),
        ("/n/a/*", "/n/b", False),
    ],
)
def test_key_matches(pattern: str, key: str, expected: bool) -> None:
    assert key_matches(pattern, key) is expected
