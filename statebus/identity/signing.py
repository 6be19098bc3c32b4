"""Op signatures: one op at a time, or one commit over a batch, each op verifiable alone.

Two formats of ``Op.sig`` (told apart by length and prefix):

**Single** (64 bytes): the Ed25519 signature by ``op.author`` of :func:`signing_bytes` (op).

**Batch proof** (``74 + 32·k`` bytes)::

    b"C1" | commit signature (64) | n: u32 BE | i: u32 BE | k sibling hashes (32 each)

The author signs one commit, ``b"statebus-commit-v1\\n" | n (u32 BE) | root (32)``, where ``root`` is
the Merkle root over the batch's ``n`` ops in order. Leaves are ``sha256(0x00 | op_hash(op))``, inner
nodes ``sha256(0x01 | left | right)`` (RFC 6962 domain separation); at a level with an odd count the
last node moves up unchanged. The siblings are the path from leaf ``i`` up, bottom first, skipping the
levels where the node had no sibling (``n`` and ``i`` say which). A verifier rebuilds the root from one
op and its proof and checks the commit signature, so ops can be stored, sent and checked one by one.
Verified commits are cached (LRU), so checking a whole batch costs one Ed25519 verification.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from functools import lru_cache

from statebus.errors import BadSignature, Forbidden, InvalidOp
from statebus.identity.delegation import Keyring
from statebus.identity.keys import Identity, verify_signature
from statebus.keys import is_pubkey, namespace_of
from statebus.oplog.codec import op_hash, signing_bytes, with_signature
from statebus.oplog.events import Op

BATCH_TAG = b"C1"
COMMIT_DOMAIN = b"statebus-commit-v1\n"
SIG_LEN = 64
MAX_BATCH = 1 << 20
_HEAD = len(BATCH_TAG) + SIG_LEN + 8


def sign_op(op: Op, identity: Identity) -> Op:
    """``op`` with a single-op signature by ``identity``.

    Raises:
        InvalidOp: ``op.author`` is not ``identity.pubkey``, or the op is not canonical.
    """
    if op.author != identity.pubkey:
        raise InvalidOp("an op is signed by its author: op.author differs from the signing identity")
    return with_signature(op, identity.sign(signing_bytes(op)))


def _leaf(h: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + h).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _commit_message(n: int, root: bytes) -> bytes:
    return COMMIT_DOMAIN + struct.pack(">I", n) + root


def merkle_levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first, root last."""
    levels = [leaves]
    while len(levels[-1]) > 1:
        cur = levels[-1]
        nxt = [_node(cur[j], cur[j + 1]) for j in range(0, len(cur) - 1, 2)]
        if len(cur) % 2:
            nxt.append(cur[-1])
        levels.append(nxt)
    return levels


def _proof(levels: list[list[bytes]], i: int) -> list[bytes]:
    path = []
    for level in levels[:-1]:
        sib = i ^ 1
        if sib < len(level):
            path.append(level[sib])
        i //= 2
    return path


def _root_from_proof(leaf: bytes, n: int, i: int, siblings: list[bytes]) -> bytes | None:
    h, width, it = leaf, n, iter(siblings)
    while width > 1:
        sib = i ^ 1
        if sib < width:
            s = next(it, None)
            if s is None:
                return None
            h = _node(h, s) if i % 2 == 0 else _node(s, h)
        i //= 2
        width = (width + 1) // 2
    if next(it, None) is not None:
        return None
    return h


def batch_proofs(ops: Sequence[Op], identity: Identity) -> list[bytes]:
    """The batch proof (``Op.sig``) of each of ``ops`` under one commit signature by ``identity``.

    Raises:
        InvalidOp: an op's author is not ``identity``, the batch is empty or too large.
    """
    if not ops or len(ops) > MAX_BATCH:
        raise InvalidOp(f"a signed batch has 1 to {MAX_BATCH} ops")
    pubkey = identity.pubkey
    for op in ops:
        if op.author != pubkey:
            raise InvalidOp("an op is signed by its author: an op's author differs from the signing identity")
    levels = merkle_levels([_leaf(op_hash(op)) for op in ops])
    n = len(ops)
    head = BATCH_TAG + identity.sign(_commit_message(n, levels[-1][0])) + struct.pack(">I", n)
    if n == 1:
        return [head + b"\0\0\0\0"]
    return [head + struct.pack(">I", i) + b"".join(_proof(levels, i)) for i in range(n)]


def sign_batch(ops: Sequence[Op], identity: Identity) -> list[Op]:
    """Sign ``ops`` with one commit signature; each returned op (a copy) carries its own Merkle proof.

    Raises:
        InvalidOp: an op's author is not ``identity``, the batch is empty or too large.
    """
    return [with_signature(op, sig) for op, sig in zip(ops, batch_proofs(ops, identity), strict=True)]


def seal_batch(ops: Sequence[Op], identity: Identity) -> None:
    """Sign ``ops`` as :func:`sign_batch` does, filling each op's ``sig`` in place (events rule 5):
    a local op is made once, and the node signs it at its commit, before it is stored or sent.

    Raises:
        InvalidOp: as :func:`sign_batch`; or an op is signed already (nothing is changed then).
    """
    for op in ops:
        if op.sig:
            raise InvalidOp("an op that carries a signature is not signed again")
    for op, sig in zip(ops, batch_proofs(ops, identity), strict=True):
        object.__setattr__(op, "sig", sig)


@lru_cache(maxsize=1024)
def _commit_ok(author: str, message: bytes, sig: bytes) -> bool:
    return verify_signature(author, message, sig)


def clear_commit_cache() -> None:
    """Forget which batch commits were verified (for measurements and tests)."""
    _commit_ok.cache_clear()


def check_signature(op: Op) -> None:
    """Check ``op.sig`` (either format) against ``op.author``.

    Raises:
        BadSignature: unsigned, malformed, or not valid for this op and author.
    """
    if not isinstance(op.author, str) or not is_pubkey(op.author):
        raise BadSignature("op author is not a 52-character public key")
    sig = op.sig
    if not sig:
        raise BadSignature("op is unsigned")
    if len(sig) == SIG_LEN:
        if not verify_signature(op.author, signing_bytes(op), sig):
            raise BadSignature(f"op signature does not verify for author {op.author}")
        return
    if not sig.startswith(BATCH_TAG) or len(sig) < _HEAD or (len(sig) - _HEAD) % 32:
        raise BadSignature("op signature is neither a 64-byte signature nor a batch proof")
    commit_sig = sig[2 : 2 + SIG_LEN]
    n, i = struct.unpack(">II", sig[2 + SIG_LEN : _HEAD])
    if not 0 <= i < n <= MAX_BATCH:
        raise BadSignature("batch proof has an index outside its batch")
    siblings = [sig[j : j + 32] for j in range(_HEAD, len(sig), 32)]
    root = _root_from_proof(_leaf(op_hash(op)), n, i, siblings)
    if root is None:
        raise BadSignature("batch proof has the wrong number of sibling hashes for its position")
    if not _commit_ok(op.author, _commit_message(n, root), commit_sig):
        raise BadSignature(f"batch proof does not verify for author {op.author} (op or proof altered)")


def verify_op(op: Op, keyring: Keyring | None = None, now: float | None = None) -> None:
    """Check that ``op`` is validly signed and that its author may write its key.

    The author may write when it owns the namespace (``namespace_of(op.key) == op.author``) or holds an
    unrevoked, unexpired delegation from the owner whose scope covers ``op.key``.

    Raises:
        BadSignature: the signature is missing, malformed or invalid.
        InvalidOp: the key is not inside a namespace.
        Forbidden: the signature is good but the author may not write this key.
    """
    check_signature(op)
    owner = namespace_of(op.key) if isinstance(op.key, str) else ""
    if not (op.key.startswith("/") and is_pubkey(owner) and op.key[1 + len(owner) : 2 + len(owner)] == "/"):
        raise InvalidOp("op key is not inside a namespace: /<pubkey>/…")
    if op.author == owner:
        return
    reason = (keyring if keyring is not None else Keyring()).why_not(op.author, op.key, now)
    if reason is not None:
        raise Forbidden(f"{op.author} may not write {op.key}: {reason}")
