"""Signed subtree snapshots: the compacted bases of a subtree's keys at a sequence number, as bytes.

An owner folds old ops into per-key base snapshots (``statebus.bus.history.fold``); ops folded
before a follower saw them never reach it as ops. A *subtree snapshot* carries those bases: the
owner (or a delegate) signs a Merkle root over the subtree's keys, their base versions and the
sha256 of each base's bytes, so a follower can install them and take the op tail from there.

The layout is the mirror's snapshot batch (``statebus.mirror.objects``: a header line, one
``{"key", "data"}`` JSON line per key base, the signature on the last line) with a Merkle root,
the owner, the pattern and the sequence number in the header, and a domain of its own::

    {"author":…,"n":2,"owner":…,"pattern":"/<owner>/yc/","root":<hex>,"seq":41,"v":1}
    {"data":"<encode_snapshot JSON>","key":"/<owner>/yc/doc","versions":["…"]}
    …
    <hex Ed25519 signature by author of DOMAIN + header line>

Pure: no I/O. Rules:

1. A leaf is ``sha256(0x00 | canonical [key, versions, sha256(data) hex])``; an inner node is
   ``sha256(0x01 | left | right)``, an odd last node moves up unpaired; rows are sorted by key, each
   key once. The root of no rows is ``sha256(b"")``.
2. The signature covers :data:`DOMAIN` and the header line (which holds the root), so it can sign
   nothing else; the rows are bound to it through the root alone.
3. :func:`unpack` refuses (:class:`~statebus.errors.BadSnapshot`, nothing to install) anything that
   does not check: the header's owner or pattern is not the one asked for, the signature is not the
   author's, a row is outside the pattern, out of order, or its versions are not its base's
   frontier, the count or the root differ. Whether the author may sign for the owner (the owner
   itself, or a live delegation) is the caller's check: it holds the keyring.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from statebus.errors import BadSnapshot
from statebus.keys import is_pubkey, namespace_of
from statebus.types import Key, PubKey, Seq, Version

DOMAIN: Final = b"statebus-subtree-snapshot-v1\n"
"""What a snapshot's signature covers before its header line."""
CONTENT_TYPE: Final = "application/vnd.statebus.snapshot"
MAX_ROWS: Final = 100_000


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class BaseRow:
    """One key's compacted base: ``data`` is its stored snapshot (``bus.entry.encode_snapshot``)."""

    key: Key
    versions: tuple[Version, ...]
    """The frontier of the ops folded into ``data``."""
    data: bytes

    def leaf(self) -> bytes:
        """Rule 1."""
        digest = hashlib.sha256(self.data).hexdigest()
        return hashlib.sha256(b"\x00" + _dumps([self.key, list(self.versions), digest])).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle root of ``leaves`` in order (rule 1)."""
    level = list(leaves)
    if not level:
        return hashlib.sha256(b"").digest()
    while len(level) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def base_versions(data: bytes) -> tuple[Version, ...]:
    """The frontier a stored base snapshot folded (its ``log.frontier``). Raises BadSnapshot."""
    try:
        raw = json.loads(data)
        front = raw["log"]["frontier"]
        if not isinstance(front, list) or not all(isinstance(v, str) for v in front):
            raise TypeError("frontier is not a list of versions")
        return tuple(front)
    except (ValueError, KeyError, TypeError) as exc:
        raise BadSnapshot(f"a key's base is malformed ({exc})") from None


@dataclass(frozen=True, slots=True)
class SubtreeSnapshot:
    """A checked (or about to be signed) snapshot of ``pattern`` at the owner's cursor ``seq``."""

    owner: PubKey
    pattern: Key
    seq: Seq
    author: PubKey
    rows: tuple[BaseRow, ...]

    @property
    def root(self) -> bytes:
        return merkle_root([r.leaf() for r in self.rows])

    def header(self) -> bytes:
        return _dumps(
            {
                "v": 1,
                "owner": self.owner,
                "pattern": self.pattern,
                "seq": self.seq,
                "author": self.author,
                "n": len(self.rows),
                "root": self.root.hex(),
            }
        )


def pack(snapshot: SubtreeSnapshot, sign: Callable[[bytes], bytes]) -> bytes:
    """The snapshot's bytes, signed by ``sign`` (the author's key: rule 2). Rows are sorted by key."""
    rows = tuple(sorted(snapshot.rows, key=lambda r: r.key))
    snapshot = SubtreeSnapshot(snapshot.owner, snapshot.pattern, snapshot.seq, snapshot.author, rows)
    head = snapshot.header()
    lines = [head]
    lines += [_dumps({"key": r.key, "versions": list(r.versions), "data": r.data.decode()}) for r in rows]
    return b"\n".join(lines) + b"\n" + sign(DOMAIN + head).hex().encode()


def unpack(
    data: bytes, *, owner: PubKey, pattern: Key, verify: Callable[[PubKey, bytes, bytes], bool]
) -> SubtreeSnapshot:
    """The snapshot in ``data``, checked (rule 3) for ``owner``'s ``pattern``;
    ``verify(author, signed bytes, signature)``.

    Raises:
        BadSnapshot: (422) it does not check; the detail says why.
    """
    body, _, sig = data.rpartition(b"\n")
    lines = body.split(b"\n")
    try:
        head = json.loads(lines[0])
        if not isinstance(head, dict) or head.get("v") != 1:
            raise ValueError("not a version 1 snapshot header")
        author, seq, n, root = head["author"], head["seq"], head["n"], head["root"]
        if not isinstance(author, str) or not is_pubkey(author):
            raise ValueError("its author is not a public key")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError("its seq is not a cursor")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_ROWS or len(lines) != n + 1:
            raise ValueError("its row count does not match its rows")
        signature = bytes.fromhex(sig.decode())
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise BadSnapshot(f"the snapshot is malformed ({exc})") from None
    if head.get("owner") != owner or head.get("pattern") != pattern:
        raise BadSnapshot(
            f"the snapshot is of {head.get('pattern')!r} by {head.get('owner')!r}, not of {pattern}"
        )
    if not verify(author, DOMAIN + lines[0], signature):
        raise BadSnapshot(f"the snapshot's signature is not {author}'s")
    rows: list[BaseRow] = []
    for line in lines[1:]:
        try:
            raw = json.loads(line)
            key, versions, blob = raw["key"], raw["versions"], raw["data"]
            if not isinstance(key, str) or not isinstance(blob, str) or not isinstance(versions, list):
                raise TypeError("a row is {key, versions, data}")
            row = BaseRow(key, tuple(str(v) for v in versions), blob.encode())
        except (ValueError, KeyError, TypeError) as exc:
            raise BadSnapshot(f"a row of the snapshot is malformed ({exc})") from None
        if not row.key.startswith(pattern) or namespace_of(row.key) != owner:
            raise BadSnapshot(f"the snapshot holds {row.key}, outside {pattern}")
        if rows and row.key <= rows[-1].key:
            raise BadSnapshot("the snapshot's rows are not sorted by key, each key once")
        if base_versions(row.data) != row.versions:
            raise BadSnapshot(f"the versions of {row.key} are not those of its base")
        rows.append(row)
    found = SubtreeSnapshot(owner, pattern, seq, author, tuple(rows))
    if found.root.hex() != root:
        raise BadSnapshot("the snapshot's rows do not match its signed Merkle root (tampered?)")
    return found
