"""Canonical op encoding: one byte string per op, the same on every replica (never pickle).

The encoding is JSON with sorted keys, no whitespace, UTF-8, and no NaN/Infinity::

    {"a": author, "b": JSON body, "bb": base64 bytes body, "c": clock, "ct": content type,
     "k": key, "m": merge type, "p": [parents, sorted], "s": base64 signature, "t": kind,
     "v": version}

Absent fields are omitted. A ``patch`` body is ``[[range, content], …]``, and ``[range]`` for a
patch that deletes. :func:`signing_bytes` is the same without ``"s"``, prefixed by a domain tag.

A local write is encoded three times (its version is minted from it, its commit hashes it, storage
stores it), so the JSON without ``"s"`` is kept for the most recent ops, keyed by the op object
itself: :func:`with_minted_version`, :func:`with_version` and :func:`with_signature` make the next op
and carry the bytes over (``"v"`` is always the last key, and ``"s"`` goes just before ``"t"``).
Every derived byte string is the one a fresh encoding gives (``tests/oplog/test_codec_cache.py``).
An op's body must not be mutated once the op is made (the bus keeps private copies).

What the cache earns (2026-12-06, ``python -m bench.instructions writes``, callgrind, 1,280 durable
PUTs of a 100-byte value over uvicorn): ~733,000 instructions per PUT with it, ~827,500 with
``_remember`` made a no-op (826,512 / 828,609): the cache saves ~94,000 instructions, 11% of a
durable write.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from json.encoder import encode_basestring
from typing import Any

from statebus.errors import InvalidOp, InvalidValue, TooLarge
from statebus.oplog.events import DELETE, KINDS, Op, Patch, fresh_op
from statebus.types import Version
from statebus.values.json import DEFAULT_MAX_DEPTH, fast_dumps, loads_json

SIGNING_DOMAIN = b"statebus-op-v1\n"
MAX_VERSION_CHARS = 128
MAX_PARENTS = 64
MAX_OP_BYTES = 8 * 1024 * 1024
"""The largest encoded op :func:`decode_op` reads (a 1 MiB value is ~1.4 MiB as base64)."""
_OP_DEPTH = DEFAULT_MAX_DEPTH + 3
"""A value's nesting limit plus the op object and the ``[[range, content]]`` patch wrapping."""
CACHE_OPS = 1024
"""How many recent ops' encodings are kept (a commit batch of concurrent writes fits)."""
CACHE_MAX_BYTES = 16 * 1024
"""Larger encodings are not kept, so the cache holds at most ``CACHE_OPS * CACHE_MAX_BYTES``."""
_unsigned: dict[int, tuple[Op, bytes]] = {}
"""``id(op) -> (op, JSON without "s")``; holding the op keeps its id from being reused."""
_BODY_FIELDS = {"set": {"b", "bb", "ct"}, "patch": {"b"}, "delete": set(), "crdt": {"bb"}}
"""The optional fields each kind may carry; any other is non-canonical and rejected."""


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""What ``json.dumps`` with these options builds per call; it keeps no state between calls."""


def _dumps(obj: Any) -> bytes:
    fast = fast_dumps(obj, sort_keys=True)  # orjson: the same bytes, or None for the encoder below
    if fast is not None:
        return fast
    try:
        text = _ENCODER.encode(obj)
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


def _cached(op: Op) -> bytes | None:
    hit = _unsigned.get(id(op))
    return hit[1] if hit is not None and hit[0] is op else None


def _remember(op: Op, data: bytes) -> None:
    if len(data) > CACHE_MAX_BYTES:
        return
    _unsigned[id(op)] = (op, data)
    if len(_unsigned) > CACHE_OPS:
        _unsigned.pop(next(iter(_unsigned)), None)  # the oldest: dicts keep insertion order


def _unsigned_json(op: Op, *, remember: bool = True) -> bytes:
    """The canonical JSON of ``op`` without ``"s"``, from the cache when this op object has one."""
    data = _cached(op)
    if data is None:
        data = _dumps(_fields(op))
        if remember:
            _remember(op, data)
    return data


def _replace_version(data: bytes, version: Version) -> bytes:
    # "v" sorts last and ends the object; a JSON string holds no unescaped '"', so ',"v":' is found
    # only as the key. A string is encoded as the encoder encodes string values (ensure_ascii off).
    return data[: data.rindex(b',"v":')] + b',"v":' + encode_basestring(version).encode() + b"}"


def _copy(op: Op, version: Version, sig: bytes) -> Op:
    """``dataclasses.replace(op, version=version, sig=sig)`` without its per-call introspection."""
    return Op(
        op.key, version, op.parents, op.author, op.clock, op.merge, op.kind, op.body, op.content_type, sig
    )


def signing_bytes(op: Op) -> bytes:
    """The bytes a signature covers: everything in the op but the signature."""
    return SIGNING_DOMAIN + _unsigned_json(op)


def encode_op(op: Op) -> bytes:
    """The canonical bytes of ``op``, signature included. Raises InvalidOp if the body is not JSON."""
    data = _unsigned_json(op)
    if not op.sig:
        return data
    # "s" sorts between "p" and "t", and "t" is always present and follows the body, so the last
    # ',"t":' is the key ("t" and "v" values are strings, which cannot hold it unescaped).
    at = data.rindex(b',"t":')
    return data[:at] + b',"s":"' + base64.b64encode(op.sig) + b'"' + data[at:]


def op_hash(op: Op) -> bytes:
    """SHA-256 of the signing bytes: what commits and anti-entropy compare."""
    return hashlib.sha256(signing_bytes(op)).digest()


def _mint(op: Op) -> tuple[Version, bytes]:
    data = _unsigned_json(op, remember=False)
    if op.version:  # whatever version the op already names does not matter: hash it as ""
        data = _replace_version(data, "")
    digest = hashlib.sha256(SIGNING_DOMAIN + data).digest()
    return f"{op.clock}-{_b32_80(digest)}", data


_B32_PAIRS = [a + b for a in "abcdefghijklmnopqrstuvwxyz234567" for b in "abcdefghijklmnopqrstuvwxyz234567"]
"""Every 10-bit value as its two lower-case base32 characters (RFC 4648 alphabet)."""


def _b32_80(digest: bytes) -> str:
    """``base64.b32encode(digest[:10]).decode().lower()``: 10 bytes are exactly 16 base32 characters
    (the prefix of the whole digest's encoding), with no padding. ``base64.b32encode`` is Python code
    in CPython 3.11 (~30 µs); this is 8 table look-ups of 10 bits (``tests/oplog/test_codec_cache.py``
    compares the two)."""
    n = int.from_bytes(digest[:10], "big")
    t = _B32_PAIRS
    return (
        t[n >> 70]
        + t[(n >> 60) & 1023]
        + t[(n >> 50) & 1023]
        + t[(n >> 40) & 1023]
        + t[(n >> 30) & 1023]
        + t[(n >> 20) & 1023]
        + t[(n >> 10) & 1023]
        + t[n & 1023]
    )


def mint_version(op: Op) -> Version:
    """A version for an op its writer did not name: ``<clock>-<16 base32 chars of its hash>``.

    The hash covers key, parents, author, clock, merge type, kind, body and content type (not the
    version the op may already carry, nor its signature), so two replicas never mint the same
    version for different ops, and minting is repeatable.
    """
    return _mint(op)[0]


def with_minted_version(op: Op) -> Op:
    """``op`` naming the version :func:`mint_version` gives it; its encoding is computed once."""
    version, data = _mint(op)
    new = _copy(op, version, op.sig)
    _remember(new, _replace_version(data, version))
    return new


def new_op(
    key: str,
    version: Version,
    parents: tuple[Version, ...],
    author: str,
    clock: int,
    merge: str,
    kind: str,
    body: Any,
    content_type: str | None,
) -> Op:
    """A local op, made once: one ``Op``, one encoding (kept for the hash, the signature and
    storage). An empty ``version`` is minted (:func:`mint_version`) from that encoding before the
    op is returned. ``parents`` must be sorted. Raises InvalidOp if the body is not canonical JSON.
    """
    op = fresh_op(key, version, parents, author, clock, merge, kind, body, content_type)
    data = _dumps(_fields(op))
    if not version:  # the minting hash covers the op with "v": "" (what mint_version hashes)
        version = f"{clock}-{_b32_80(hashlib.sha256(SIGNING_DOMAIN + data).digest())}"
        object.__setattr__(op, "version", version)  # not yet returned: nobody has seen the op
        data = data[:-3] + encode_basestring(version).encode() + b"}"  # data ends with '"v":""}'
    _remember(op, data)
    return op


def with_version(op: Op, version: Version) -> Op:
    """``op`` naming ``version`` (``dataclasses.replace``), its encoding derived from ``op``'s."""
    new = _copy(op, version, op.sig)
    data = _cached(op)
    if data is not None:
        try:
            _remember(new, _replace_version(data, version))
        except UnicodeEncodeError:
            pass  # a lone surrogate: encoding ``new`` raises InvalidOp later, as it would have
    return new


def with_signature(op: Op, sig: bytes) -> Op:
    """``op`` carrying ``sig`` (``dataclasses.replace``), reusing ``op``'s encoding."""
    new = _copy(op, op.version, sig)
    data = _cached(op)
    if data is not None:
        _remember(new, data)
    return new


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
        d: Any = loads_json(text, max_bytes=MAX_OP_BYTES, max_depth=_OP_DEPTH).value
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
