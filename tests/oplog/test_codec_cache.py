"""The cached and spliced encodings are byte for byte the plain ones (statebus/oplog/codec.py)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import sys
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from statebus.oplog import (
    DELETE,
    Op,
    Patch,
    codec,
    decode_op,
    encode_op,
    mint_version,
    op_hash,
    signing_bytes,
)
from statebus.oplog.codec import SIGNING_DOMAIN, with_minted_version, with_signature, with_version

KEY = "/" + "a" * 51 + "q/app/x"
AUTHOR = "b" * 51 + "q"

# Text that tries to look like the keys the splices search for, inside strings and bodies.
TRICKY = st.sampled_from(['","t":"', ',"t":', ',"v":', '"s":', "\\", '\\"', "é", "\u2028", "t", "v", "s"])
texts = st.one_of(st.text(max_size=8), TRICKY, st.lists(TRICKY, max_size=3).map("".join))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
versions = (
    st.text(
        st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\x7f"), min_size=1, max_size=12
    )
    | TRICKY
)


@st.composite
def ops(draw: st.DrawFn) -> Op:
    kind = draw(st.sampled_from(["set", "set-bytes", "patch", "delete", "crdt"]))
    body: Any = None
    ct = None
    merge = "lww"
    if kind == "set":
        body = draw(json_values)
    elif kind == "set-bytes":
        kind, body, ct = "set", draw(st.binary(max_size=16)), draw(st.sampled_from(["text/plain", "a/b"]))
    elif kind == "patch":
        body = tuple(
            Patch(draw(texts), draw(st.just(DELETE) | json_values)) for _ in range(draw(st.integers(1, 3)))
        )
    elif kind == "crdt":
        body, merge = draw(st.binary(max_size=16)), "yjs"
    parents = tuple(sorted(set(draw(st.lists(versions, max_size=3)))))
    version = draw(versions.filter(lambda v: v not in parents))
    return Op(KEY, version, parents, AUTHOR, draw(st.integers(0, 2**53 - 1)), merge, kind, body, ct)


def plain_fields(op: Op) -> dict[str, Any]:
    """The op's fields as the module docstring lays them out, written out again here."""
    d: dict[str, Any] = {
        "k": op.key,
        "v": op.version,
        "p": sorted(op.parents),
        "a": op.author,
        "c": op.clock,
        "m": op.merge,
        "t": op.kind,
    }
    if op.kind == "patch":
        d["b"] = [[p.range] if p.content is DELETE else [p.range, p.content] for p in op.body]
    elif isinstance(op.body, bytes):
        d["bb"] = base64.b64encode(op.body).decode("ascii")
    elif op.kind == "set":
        d["b"] = op.body
    if op.content_type is not None:
        d["ct"] = op.content_type
    return d


def plain_dumps(d: dict[str, Any]) -> bytes:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def plain_encode(op: Op) -> bytes:
    d = plain_fields(op)
    if op.sig:
        d["s"] = base64.b64encode(op.sig).decode("ascii")
    return plain_dumps(d)


def plain_signing(op: Op) -> bytes:
    return SIGNING_DOMAIN + plain_dumps(plain_fields(op))


def plain_mint(op: Op) -> str:
    d = plain_fields(op)
    d["v"] = ""
    digest = hashlib.sha256(SIGNING_DOMAIN + plain_dumps(d)).digest()
    return f"{op.clock}-{base64.b32encode(digest).decode('ascii').lower()[:16]}"


@settings(max_examples=300, deadline=None)
@given(ops(), versions, st.binary(min_size=1, max_size=80))
def test_cached_and_spliced_encodings_equal_the_plain_ones(op: Op, version: str, sig: bytes) -> None:
    assume(version not in op.parents)
    unversioned = dataclasses.replace(op, version="")
    assert mint_version(unversioned) == plain_mint(unversioned) == plain_mint(op)
    assert mint_version(op) == plain_mint(op)  # a versioned op hashes as if its version were ""
    # the write path: mint on the unversioned op, name the version, hash, sign, store
    named = with_version(unversioned, version)
    assert named == dataclasses.replace(op, version=version)
    assert signing_bytes(named) == plain_signing(named)
    assert op_hash(named) == hashlib.sha256(plain_signing(named)).digest()
    signed = with_signature(named, sig)
    assert signed.sig == sig and signed == named
    assert encode_op(signed) == plain_encode(signed)
    assert signing_bytes(signed) == plain_signing(signed)
    assert encode_op(named) == plain_encode(named)
    assert decode_op(encode_op(signed)) == signed
    # minting on the op itself (what a local write does) gives the same op and bytes
    minted = with_minted_version(op)
    assert minted == dataclasses.replace(op, version=plain_mint(op))
    assert minted.sig == op.sig
    assert encode_op(minted) == plain_encode(minted)
    assert signing_bytes(minted) == plain_signing(minted)
    # a second op object with the same fields, met first: the cache is per object
    twin = dataclasses.replace(signed, sig=sig)
    assert encode_op(twin) == plain_encode(signed)


def test_signature_sorts_between_parents_and_kind() -> None:
    op = with_signature(Op(KEY, "1-a", ("0-a",), AUTHOR, 1, "lww", "set", {"t": {"t": 1}, "s": 2}), b"\x01")
    data = encode_op(op)
    assert data.index(b'"p":') < data.index(b'"s":"AQ=="') < data.index(b'"t":"set"')
    assert data == plain_encode(op)


def test_minted_version_is_the_prefix_of_the_whole_digest() -> None:
    op = Op(KEY, "", (), AUTHOR, 7, "lww", "set", {"a": 1})
    assert mint_version(op) == plain_mint(op)
    assert len(mint_version(op)) == len("7-") + 16


def test_the_cache_is_per_object_and_bounded() -> None:
    first = Op(KEY, "1-a", (), AUTHOR, 1, "lww", "set", {"a": 1})
    data = encode_op(first)
    body = {"old": True}
    unheld = sys.getrefcount(body)
    encode_op(Op(KEY, "1-old", (), AUTHOR, 1, "lww", "set", body))  # the op is dropped at once
    for i in range(codec.CACHE_OPS + 10):
        encode_op(Op(KEY, f"1-{i}", (), AUTHOR, 1, "lww", "set", i))
    assert sys.getrefcount(body) == unheld  # the cache let go of the old op (and its body)
    assert encode_op(first) == data == plain_encode(first)
    text = "x" * (codec.CACHE_MAX_BYTES + 1)
    unheld = sys.getrefcount(text)
    big = Op(KEY, "1-big", (), AUTHOR, 1, "lww", "set", text)
    assert encode_op(big) == plain_encode(big)
    del big
    assert sys.getrefcount(text) == unheld  # too big to keep


def test_copies_carry_every_field() -> None:
    op = Op(KEY, "1-a", ("0-b", "0-a"), AUTHOR, 3, "lww", "set", b"x", "text/plain", b"sig")
    names = [f.name for f in dataclasses.fields(Op)]
    for new, changed in (
        (with_version(op, "2-b"), {"version": "2-b"}),
        (with_signature(op, b"other"), {"sig": b"other"}),
        (with_minted_version(op), {"version": mint_version(op)}),
    ):
        want = dataclasses.replace(op, **changed)
        assert [getattr(new, n) for n in names] == [getattr(want, n) for n in names]
