"""Signature material for a value, so a browser verifies it itself: ``GET /<key>?proof`` (issue 19).

A node, a relay or a compromised host could change another person's value on the way; with the
proof, ``statebus.js`` checks the author's Ed25519 signature over the exact bytes the author signed
and shows a value as the author's only if it verifies (docs/wire-protocol.md, "Proofs").

Rules:

1. A proof is offered for a value that is the body of one op: a last-writer-wins ``set`` whose
   version is the key's whole frontier, JSON or bytes (the signed op carries the bytes as ``bb``,
   or, for a blob, the pointer with the bytes' sha256). Anything else (patches, Yjs updates,
   concurrent versions, a deleted key) answers ``{"unverifiable": <reason>}``: the browser then
   says the value is not verified, with that reason, and never shows it as the author's.
2. The proof carries the signed bytes themselves (``signing_bytes``: the domain line and the op's
   canonical JSON, signature left out), never a re-encoding: the browser verifies the signature over
   them, then reads the key, author and body from them and compares them with what it shows. No
   canonical JSON is rebuilt in the browser.
3. ``sig`` is the op's signature as stored: 64 bytes (one op), or a batch proof (``C1`` | commit
   signature | n | i | Merkle siblings, :mod:`statebus.identity.signing`).
4. When the author is not the namespace owner, ``delegation`` is the owner's own signed op that
   wrote ``/<owner>/.keys/<author>`` (its current value), in the same form: the browser checks that
   the owner signed it, that it is a delegation (not a revocation) of this author, in force now,
   whose scopes cover the key.
"""

from __future__ import annotations

import base64

from statebus.bus import Change
from statebus.identity.delegation import record_key
from statebus.keys import namespace_of
from statebus.oplog import decode_op
from statebus.oplog.codec import signing_bytes
from statebus.runtime import Node
from statebus.types import JSON, Key, Version

PROOF_PARAM = "proof"
"""The query parameter that asks for a value's signature material (``GET /key?proof``)."""
MAX_SCANNED = 10_000
"""Stored ops of one key looked through for the one that wrote its value."""


def _signed(node: Node, key: Key, version: Version) -> dict[str, JSON] | str:
    """``{"author", "signed", "sig"}`` of the stored op of ``key`` with ``version``, or why not."""
    found = [s for s in node.scan(key, 0, MAX_SCANNED) if s.key == key and s.version == version]
    if not found:
        return "the op that wrote this value is not stored here (compacted, or not yet on disk)"
    op = decode_op(found[-1].data)
    if op.kind != "set" or op.merge != "lww":
        return f"the value was written by a {op.merge} {op.kind} op, not a whole value"
    if not op.sig:
        return "the op that wrote this value is unsigned"
    return {
        "author": op.author,
        "signed": base64.b64encode(signing_bytes(op)).decode("ascii"),
        "sig": base64.b64encode(op.sig).decode("ascii"),
    }


def proof_of(node: Node, change: Change) -> dict[str, JSON]:
    """The signature material of ``change``'s value (rules 1-4)."""
    if not change.exists:
        return {"unverifiable": "the key has no value"}
    if change.merge != "lww":
        return {
            "unverifiable": f"a {change.merge} value is merged from many ops; it is not verified op by op"
        }
    if len(change.version) != 1:
        return {"unverifiable": "concurrent versions: the value is not the body of one op"}
    signed = _signed(node, change.key, change.version[0])
    if isinstance(signed, str):
        return {"unverifiable": signed}
    owner = namespace_of(change.key)
    if signed["author"] != owner:
        assert isinstance(signed["author"], str)
        record = node.fetch_or_none(record_key(owner, signed["author"]))
        if record is None or not record.exists or len(record.version) != 1:
            signed["delegation"] = None
        else:
            delegation = _signed(node, record.key, record.version[0])
            signed["delegation"] = delegation if isinstance(delegation, dict) else None
    return signed
