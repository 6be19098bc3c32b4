"""What an owner keeps on a mirror, in plaintext form (sealed by :mod:`statebus.mirror.crypto`).

    seg/<i>             op-log segment i: a header line, then one canonical op (``encode_op``) a line
    blob/<sha256>/<j>   part j of a blob (at most :data:`BLOB_PART` bytes each)
    manifest            the index: every segment and blob part with the sha256 of its *sealed* bytes

Rules:

1. Segments are appended, never changed: segment ``i`` holds this node's own ops with sequence
   numbers in ``(after, upto]``, in order. A push adds segments after the last one the manifest names.
2. The manifest is replaced after the objects it names are stored, so a push that stops half way
   leaves the previous manifest valid, and the next push resumes from it.
3. The manifest holds the sha256 of each sealed object: restore refuses an object whose bytes differ
   from what was pushed, even a well-formed older one of the same name.
"""

from __future__ import annotations

import json
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
            return cls(owner, segs, blobs, float(raw["pushed"]))
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
