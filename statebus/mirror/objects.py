"""What an owner keeps on a mirror, in plaintext form (sealed by :mod:`statebus.mirror.crypto`).

    seg/<i>             op-log segment i: a header line, then one canonical op (``encode_op``) a line
    snap/<i>            snapshot batch i: a header line, one compaction snapshot a line, a signature
    blob/<sha256>/<j>   part j of a blob (at most :data:`BLOB_PART` bytes each)
    manifest            the index: every segment and blob part with the sha256 of its *sealed* bytes

Rules:

1. Segments are appended, never changed: segment ``i`` holds this node's own ops with sequence
   numbers in ``(after, upto]``, in order. A push adds segments after the last one the manifest names.
2. The manifest is replaced after the objects it names are stored, so a push that stops half way
   leaves the previous manifest valid, and the next push resumes from it.
3. The manifest holds the sha256 of each sealed object: restore refuses an object whose bytes differ
   from what was pushed, even a well-formed older one of the same name.
4. Snapshot batches are appended too: batch ``i`` holds the compaction snapshots of the keys whose
   snapshot changed since batch ``i - 1``, each with the version of its key's first op after it
   (what tells restore which ops it folded). A later batch's snapshot of a key replaces an earlier
   one. A batch is signed by the owner's key inside the seal: a leaked mirror key cannot forge one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from statebus.errors import MirrorTampered
from statebus.types import PubKey, Seq

SEGMENT_OPS = 2000
"""Most ops in one segment."""
SEGMENT_BYTES = (1 << 20) - 4096
"""A segment's ops stay under this many bytes (with its header and the seal's overhead, one 1 MiB bucket)."""
BLOB_PART = 4 << 20
MANIFEST = "manifest"


def segment_name(i: int) -> str:
    return f"seg/{i}"


def snapshots_name(i: int) -> str:
    return f"snap/{i}"


def blob_part_name(sha: str, j: int) -> str:
    return f"blob/{sha}/{j}"


@dataclass(slots=True)
class SegmentEntry:
    index: int
    after: Seq
    upto: Seq
    ops: int
    sealed_sha256: str
    sealed_bytes: int
    plain_bytes: int

    def to_json(self) -> list[Any]:
        return [
            self.index,
            self.after,
            self.upto,
            self.ops,
            self.sealed_sha256,
            self.sealed_bytes,
            self.plain_bytes,
        ]


@dataclass(slots=True)
class Manifest:
    owner: PubKey
    segments: list[SegmentEntry] = field(default_factory=list)
    blobs: dict[str, list[str]] = field(default_factory=dict)
    """blob sha256 → the sha256 of each sealed part."""
    pushed: float = 0.0
    snapshots: list[list[Any]] = field(default_factory=list)
    """``[index, sha256 of the sealed batch, snapshots in it]`` of each snapshot batch (rule 4)."""

    @property
    def upto(self) -> Seq:
        return self.segments[-1].upto if self.segments else 0

    @property
    def ops(self) -> int:
        return sum(s.ops for s in self.segments)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "v": 1,
                "owner": self.owner,
                "segments": [s.to_json() for s in self.segments],
                "blobs": self.blobs,
                "pushed": self.pushed,
                "snaps": self.snapshots,
            },
            separators=(",", ":"),
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes, owner: PubKey) -> Manifest:
        """Raises MirrorTampered if the (authenticated) manifest is not one this code wrote for ``owner``."""
        try:
            raw = json.loads(data)
            if raw.get("v") != 1 or raw.get("owner") != owner:
                raise ValueError("not a v1 manifest of this owner")
            segs = [SegmentEntry(*map(_field, row)) for row in raw["segments"]]
            blobs = {str(k): [str(h) for h in v] for k, v in raw["blobs"].items()}
            snaps = [[int(i), str(h), int(n)] for i, h, n in raw.get("snaps", [])]
            return cls(owner, segs, blobs, float(raw["pushed"]), snaps)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MirrorTampered(f"manifest: malformed ({exc})") from None


def _field(x: Any) -> Any:
    if isinstance(x, (int, str)) and not isinstance(x, bool):
        return x
    raise ValueError("bad manifest field")


def pack_segment(index: int, after: Seq, upto: Seq, ops: list[bytes]) -> bytes:
    """Segment ``index``'s plaintext: its header line, then each canonical op on a line of its own."""
    head = json.dumps(
        {"v": 1, "i": index, "after": after, "upto": upto, "n": len(ops)}, separators=(",", ":")
    )
    return b"\n".join([head.encode(), *ops])


def unpack_segment(name: str, data: bytes, entry: SegmentEntry) -> list[bytes]:
    """The encoded ops of a segment's plaintext, checked against its manifest entry."""
    lines = data.split(b"\n")
    try:
        head = json.loads(lines[0])
    except ValueError:
        raise MirrorTampered(f"{name}: malformed header") from None
    if head != {"v": 1, "i": entry.index, "after": entry.after, "upto": entry.upto, "n": entry.ops}:
        raise MirrorTampered(f"{name}: its header does not match the manifest")
    ops = lines[1:] if entry.ops else []
    if len(ops) != entry.ops:
        raise MirrorTampered(f"{name}: {len(ops)} ops where the manifest says {entry.ops}")
    return ops


SNAPSHOT_DOMAIN = b"statebus-mirror-snapshots-v1\n"
"""What the owner's signature of a batch covers before its bytes (it can be nothing else signed)."""

SnapshotRow = tuple[str, bytes, str | None]
"""``(key, snapshot bytes, version of the key's first op after it or None)``."""


def pack_snapshots(index: int, rows: list[SnapshotRow], sign: Callable[[bytes], bytes]) -> bytes:
    """Snapshot batch ``index``'s plaintext (rule 4): a header line, one JSON line a snapshot, and
    the owner's signature over all of it."""
    lines = [json.dumps({"v": 1, "i": index, "n": len(rows)}, separators=(",", ":")).encode()]
    lines += [
        json.dumps({"key": k, "data": d.decode(), "first": f}, separators=(",", ":")).encode()
        for k, d, f in rows
    ]
    body = b"\n".join(lines)
    return body + b"\n" + sign(SNAPSHOT_DOMAIN + body).hex().encode()


def unpack_snapshots(
    name: str, data: bytes, index: int, count: int, verify: Callable[[bytes, bytes], bool]
) -> list[SnapshotRow]:
    """The snapshots of a batch's plaintext, its signature checked (``verify(body, signature)``)."""
    body, _, sig = data.rpartition(b"\n")
    try:
        good = verify(SNAPSHOT_DOMAIN + body, bytes.fromhex(sig.decode()))
    except ValueError:
        good = False
    if not good:
        raise MirrorTampered(f"{name}: not signed by the owner's key")
    lines = body.split(b"\n")
    try:
        if json.loads(lines[0]) != {"v": 1, "i": index, "n": count} or len(lines) != count + 1:
            raise ValueError("its header does not match the manifest")
        rows = [json.loads(line) for line in lines[1:]]
        return [
            (str(r["key"]), str(r["data"]).encode(), None if r["first"] is None else str(r["first"]))
            for r in rows
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise MirrorTampered(f"{name}: malformed ({exc})") from None
