"""Canonical op encoding: deterministic, round-trips, and rejects every malformed form."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statebus.errors import InvalidOp
from statebus.oplog import DELETE, Op, Patch, decode_op, encode_op, mint_version, op_hash, signing_bytes
from statebus.oplog.codec import SIGNING_DOMAIN

KEY = "/" + "a" * 51 + "q/app/x"
AUTHOR = "b" * 51 + "q"


def op(**kw: Any) -> Op:
    base: dict[str, Any] = {
        "key": KEY,
        "version": "1-abc",
        "parents": (),
        "author": AUTHOR,
        "clock": 1,
        "merge": "lww",
        "kind": "set",
        "body": {"a": 1},
    }
    base.update(kw)
    return Op(**base)


EXAMPLES = [
    op(),
    op(body=None),
    op(body=[1, "x", {"é": [True, None, 1.5]}], parents=("0-b", "0-a")),
    op(body=b"\x00\xffbinary", content_type="application/octet-stream"),
    op(body=b"", content_type="text/plain"),
    op(kind="patch", body=(Patch(".a", 2), Patch("[0]", DELETE), Patch(".b.c", {"d": [1]}))),
    op(kind="patch", body=(Patch(".gone", DELETE),)),
    op(kind="delete", body=None),
    op(kind="crdt", merge="yjs", body=b"\x01\x02\x03"),
    op(sig=b"\x01" * 64),
    op(clock=2**53 - 1, version="v" * 128),
]


@pytest.mark.parametrize("o", EXAMPLES)
def test_round_trip(o: Op) -> None:
    data = encode_op(o)
    back = decode_op(data)
    assert back == o
    assert back.sig == o.sig
    assert encode_op(back) == data
    assert decode_op(data.decode()) == o


def test_encoding_is_canonical_whatever_the_dict_order_and_parents_order() -> None:
    a = op(body={"x": 1, "y": {"b": 2, "a": 1}}, parents=("b", "a", "c"))
    b = op(body={"y": {"a": 1, "b": 2}, "x": 1}, parents=("c", "a", "b"))
    assert encode_op(a) == encode_op(b)
    assert a == b
    assert a.parents == ("a", "b", "c")
    assert encode_op(a) == encode_op(a)
    text = encode_op(a).decode()
    assert " " not in text and json.loads(text)["p"] == ["a", "b", "c"]


def test_unicode_is_not_escaped() -> None:
    assert "é".encode() in encode_op(op(body="é"))


def test_signing_bytes_exclude_the_signature() -> None:
    unsigned = op()
    signed = dataclasses.replace(unsigned, sig=b"\x07" * 64)
    assert signing_bytes(unsigned) == signing_bytes(signed)
    assert signing_bytes(unsigned).startswith(SIGNING_DOMAIN)
    assert b'"s"' not in signing_bytes(signed)
    assert encode_op(signed) != encode_op(unsigned)
    assert op_hash(signed) == op_hash(unsigned)
    assert signing_bytes(op(body={"a": 2})) != signing_bytes(unsigned)


def test_mint_version_differs_for_different_ops() -> None:
    variants = [
        op(),
        op(body={"a": 2}),
        op(parents=("p",)),
        op(author="c" * 51 + "q"),
        op(clock=2),
        op(key=KEY + "y"),
        op(kind="delete", body=None),
        op(body=b"x", content_type="text/plain"),
        op(body=b"x", content_type="text/html"),
    ]
    versions = [mint_version(v) for v in variants]
    assert len(set(versions)) == len(versions)
    assert mint_version(op()) == mint_version(op(sig=b"s"))
    assert mint_version(op(version="other")) == mint_version(op())
    assert mint_version(op(clock=7)).startswith("7-")


def test_encode_rejects_non_json_bodies() -> None:
    for body in [float("nan"), float("inf"), {1, 2}, object(), "\ud800"]:
        with pytest.raises(InvalidOp):
            encode_op(op(body=body))
        with pytest.raises(InvalidOp):
            mint_version(op(body=body))


GOOD = json.loads(encode_op(op()))


def mutate(**kw: Any) -> bytes:
    d = dict(GOOD)
    for k, v in kw.items():
        if v is ...:
            d.pop(k, None)
        else:
            d[k] = v
    return json.dumps(d).encode()


MALFORMED: list[bytes | str] = [
    b"",
    b"not json",
    b"\xff\xfe",
    b"[]",
    b"null",
    b"1",
    b'"op"',
    b'{"k": "x", "k": "y"}',
    b"[" * 10_000 + b"]" * 10_000,
    b'{"c": NaN}',
    "\ud800",
    mutate(k=...),
    mutate(k=""),
    mutate(k=1),
    mutate(v=...),
    mutate(v=""),
    mutate(v="x" * 129),
    mutate(v="a\nb"),
    mutate(v=5),
    mutate(a=...),
    mutate(a=None),
    mutate(m=...),
    mutate(m=[]),
    mutate(t="frob"),
    mutate(t=...),
    mutate(c=...),
    mutate(c=-1),
    mutate(c=1.5),
    mutate(c=True),
    mutate(c=2**53),
    mutate(c="1"),
    mutate(p="a"),
    mutate(p=[1]),
    mutate(p=["a", "a"]),
    mutate(p=[GOOD["v"]]),
    mutate(p=[f"v{i}" for i in range(65)]),
    mutate(p=[""]),
    mutate(b=...),
    mutate(ct="text/plain"),
    mutate(ct=5),
    mutate(ct="x" * 256),
    mutate(bb="AAAA"),
    mutate(b=..., bb="AAAA"),
    mutate(b=..., bb="!!!", ct="text/plain"),
    mutate(b=..., bb=5, ct="text/plain"),
    mutate(s="not base64!"),
    mutate(s=5),
    mutate(x=1),
    mutate(t="patch", b=[]),
    mutate(t="patch", b={"a": 1}),
    mutate(t="patch", b=[["a", 1, 2]]),
    mutate(t="patch", b=[[1, 1]]),
    mutate(t="patch", b=[[]]),
    mutate(t="patch", b=["x"]),
    mutate(t="patch", b=[[".a", 1]], ct="text/plain"),
    mutate(t="patch", b=[[".a", 1]], bb="AA=="),
    mutate(t="delete"),
    mutate(t="delete", b=..., bb="AA=="),
    mutate(t="crdt", b=...),
    mutate(t="crdt", b=..., bb=None),
    mutate(t="crdt", b=..., bb="%%%"),
    mutate(t="crdt", bb="AA=="),
]


@pytest.mark.parametrize("data", MALFORMED, ids=range(len(MALFORMED)))
def test_decode_rejects_malformed(data: bytes | str) -> None:
    with pytest.raises(InvalidOp):
        decode_op(data)


def test_decode_accepts_the_reference_op() -> None:
    assert decode_op(mutate()) == op()
    assert decode_op(mutate(b=..., bb=base64.b64encode(b"hi").decode(), ct="text/plain")).body == b"hi"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
PLAUSIBLE: dict[str, list[Any]] = {
    "k": [KEY],
    "v": ["1-abc", "2-x"],
    "p": [[], ["1-abc"], ["0-a", "0-b"]],
    "a": [AUTHOR],
    "c": [0, 1, 2**53 - 1],
    "m": ["lww", "yjs"],
    "t": ["set", "patch", "delete", "crdt"],
    "b": [{"a": 1}, [[".a", 1]], [["[0]"]]],
    "bb": ["AAAA", "", "AQID"],
    "ct": ["text/plain"],
    "s": ["AAAA", ""],
}
op_like = st.fixed_dictionaries(
    {},
    optional={name: json_values | st.sampled_from(vals) for name, vals in PLAUSIBLE.items()},
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, op_like, st.binary(max_size=64)))
def test_decode_never_raises_anything_but_invalid_op(value: Any) -> None:
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    try:
        decoded = decode_op(data)
    except InvalidOp:
        return
    assert decode_op(encode_op(decoded)) == decoded


@pytest.mark.parametrize("bad", ["\ud800", "a\udfffb", "v\x00", "v\x7f"])
def test_check_version_refuses_text_that_cannot_be_signed(bad: str) -> None:
    # a lone surrogate cannot be encoded as UTF-8: it must be refused up front, never reach signing
    from statebus.oplog.codec import check_version

    with pytest.raises(InvalidOp):
        check_version(bad)


def test_a_write_with_a_surrogate_version_changes_nothing() -> None:
    from statebus.bus import Bus
    from statebus.storage.memory import MemoryStorage

    bus = Bus(MemoryStorage(), local="a" * 51 + "q")
    with pytest.raises(InvalidOp):
        bus.save("/~/k", 1, version="\ud800")
    assert bus.seq == 0 and bus.pending == 0
