"""Canonical op encoding: one byte string per op, the same on every replica (never pickle).

The encoding is JSON with sorted keys, no whitespace, UTF-8, and no NaN/Infinity::

    {"a": author, "b": JSON body, "bb": base64 bytes body, "c": clock, "ct": content type,
     "k": key, "m": merge type, "p": [parents, sorted], "s": base64 signature, "t": kind,
     "v": version}

Absent fields are omitted. A ``patch`` body is ``[[range, content], …]``, and ``[range]`` for a
patch that deletes. :func:`signing_bytes` is the same without ``"s"``, prefixed by a domain tag.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from statebus.errors import InvalidOp, InvalidValue, TooLarge
from statebus.oplog.events import DELETE, KINDS, Op, Patch
from statebus.types import Version
from statebus.values.json import DEFAULT_MAX_DEPTH, loads_json

SIGNING_DOMAIN = b"statebus-op-v1\n"
MAX_VERSION_CHARS = 128
MAX_PARENTS = 64
MAX_OP_BYTES = 8 * 1024 * 1024
"""The largest encoded op :func:`decode_op` reads (a 1 MiB value is ~1.4 MiB as base64)."""
_OP_DEPTH = DEFAULT_MAX_DEPTH + 3
"""A value's nesting limit plus the op object and the ``[[range, content]]`` patch wrapping."""
_BODY_FIELDS = {"set": {"b", "bb", "ct"}, "patch": {"b"}, "delete": set(), "crdt": {"bb"}}
"""The optional fields each kind may carry; any other is non-canonical and rejected."""


def _dumps(obj: Any) -> bytes:
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return text.encode()
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        raise InvalidOp(f"op body is not canonical JSON: {type(exc).__name__}") from None


def _fields(op: Op) -> dict[str, Any]:
    d: dict[str, Any] = {
        "k": op.key,
        "v": op.version,
        "p": sorted(op.parents),
        "a": op.author,
        "c": op.clock,
        "m": op.merge,
        "t": op.kind,
    }
    if op.kind == "set":
        if isinstance(op.body, bytes | bytearray):
            d["bb"] = base64.b64encode(op.body).decode("ascii")
        else:
            d["b"] = op.body
    elif op.kind == "patch":
        if not isinstance(op.body, tuple | list) or not all(isinstance(p, Patch) for p in op.body):
            raise InvalidOp("a patch op's body is a sequence of Patch")
        d["b"] = [[p.range] if p.content is DELETE else [p.range, p.content] for p in op.body]
    elif op.kind == "crdt":
        if not isinstance(op.body, bytes | bytearray):
            raise InvalidOp("a crdt op's body is update bytes")
        d["bb"] = base64.b64encode(op.body).decode("ascii")
    if op.content_type is not None:
        d["ct"] = op.content_type
    return d


def signing_bytes(op: Op) -> bytes:
    """The bytes a signature covers: everything in the op but the signature."""
    return SIGNING_DOMAIN + _dumps(_fields(op))


def encode_op(op: Op) -> bytes:
    """The canonical bytes of ``op``, signature included. Raises InvalidOp if the body is not JSON."""
    d = _fields(op)
    if op.sig:
        d["s"] = base64.b64encode(op.sig).decode("ascii")
    return _dumps(d)


def op_hash(op: Op) -> bytes:
    """SHA-256 of the signing bytes: what commits and anti-entropy compare."""
    return hashlib.sha256(signing_bytes(op)).digest()


def mint_version(op: Op) -> Version:
    """A version for an op its writer did not name: ``<clock>-<16 base32 chars of its hash>``.

    The hash covers key, parents, author, clock, merge type, kind, body and content type (not the
    version the op may already carry, nor its signature), so two replicas never mint the same
    version for different ops, and minting is repeatable.
    """
    fields = _fields(op)
    fields["v"] = ""  # whatever version the op already names does not matter
    digest = hashlib.sha256(SIGNING_DOMAIN + _dumps(fields)).digest()
    return f"{op.clock}-{base64.b32encode(digest).decode('ascii').lower()[:16]}"


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidOp(f"{what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidOp(f"{what} is not valid base64") from exc


def check_version(v: Any) -> Version:
    if not isinstance(v, str) or not v or len(v) > MAX_VERSION_CHARS:
        raise InvalidOp(f"a version is a non-empty string of at most {MAX_VERSION_CHARS} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF for ch in v):
        raise InvalidOp("a version may not contain control characters or lone surrogates")
    return v


def decode_op(data: bytes | str) -> Op:
    """Parse and validate an encoded op. Raises :class:`InvalidOp` on anything malformed.

    Key syntax is checked by the caller (it knows the local namespace); here only types are.
    """
    try:
        text = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        d: Any = loads_json(text, max_bytes=MAX_OP_BYTES, max_depth=_OP_DEPTH)
    except (InvalidValue, TooLarge, UnicodeEncodeError, TypeError) as exc:
        raise InvalidOp(f"op is not strict JSON: {exc}") from None
    if not isinstance(d, dict):
        raise InvalidOp("op is a JSON object")
    unknown = set(d) - {"k", "v", "p", "a", "c", "m", "t", "b", "bb", "ct", "s"}
    if unknown:
        raise InvalidOp(f"op has unknown fields: {sorted(unknown)}")
    for name in ("k", "a", "m", "t"):
        if not isinstance(d.get(name), str) or not d[name]:
            raise InvalidOp(f"op field {name!r} must be a non-empty string")
    key: str = d["k"]
    author: str = d["a"]
    merge: str = d["m"]
    kind: str = d["t"]
    if kind not in KINDS:
        raise InvalidOp(f"op kind must be one of {KINDS}")
    extra = set(d) - {"k", "v", "p", "a", "c", "m", "t", "s"} - _BODY_FIELDS[kind]
    if extra:
        raise InvalidOp(f"a {kind} op may not carry the fields {sorted(extra)}")
    version = check_version(d.get("v"))
    parents = d.get("p", [])
    if not isinstance(parents, list) or len(parents) > MAX_PARENTS:
        raise InvalidOp(f"op parents must be a list of at most {MAX_PARENTS} versions")
    parents_t = tuple(sorted([check_version(p) for p in parents]))
    if len(set(parents_t)) != len(parents_t) or version in parents_t:
        raise InvalidOp("op parents must be distinct and may not include the op's own version")
    clock = d.get("c")
    if not isinstance(clock, int) or isinstance(clock, bool) or not 0 <= clock < 2**53:
        raise InvalidOp("op clock must be an integer in [0, 2^53)")
    ct = d.get("ct")
    if ct is not None and (not isinstance(ct, str) or len(ct) > 255):
        raise InvalidOp("op content type must be a short string")
    body: Any = None
    if kind == "set":
        if "bb" in d:
            if ct is None or "b" in d:
                raise InvalidOp("a bytes value needs a content type and no JSON body")
            body = _b64(d["bb"], "op bytes body")
        else:
            if "b" not in d or ct is not None:
                raise InvalidOp("a set op needs a body (a JSON body takes no content type)")
            body = d["b"]
    elif kind == "patch":
        raw = d.get("b")
        if not isinstance(raw, list) or not raw:
            raise InvalidOp("a patch op body is a non-empty list of [range, content]")
        patches = []
        for item in raw:
            if not isinstance(item, list) or len(item) not in (1, 2) or not isinstance(item[0], str):
                raise InvalidOp("each patch is [range, content] or [range]")
            patches.append(Patch(item[0], item[1] if len(item) == 2 else DELETE))
        body = tuple(patches)
    elif kind == "crdt":
        body = _b64(d.get("bb"), "op crdt update")
    sig = _b64(d["s"], "op signature") if "s" in d else b""
    return Op(
        key=key,
        version=version,
        parents=parents_t,
        author=author,
        clock=clock,
        merge=merge,
        kind=kind,
        body=body,
        content_type=ct,
        sig=sig,
    )
