"""The pointer a key holds when its value is a blob: ``{"hash", "size", "type"}``, signed in the op.

A blob big enough to swarm (``swarm_min_bytes``) also names its torrent: ``"infohash_v1"`` and
``"infohash_v2"`` (``statebus.swarm.torrent``, deterministic), so the owner's signature covers the
torrent a fetcher may take as well as the bytes.

A blob value is stored as an ordinary ``set`` op whose body is the pointer's canonical JSON bytes and
whose ``content_type`` is :data:`BLOB_TYPE`; the bytes themselves live in the
:class:`~statebus.blobs.BlobStore`. So the op log, merge, signatures and federation carry pointers
unchanged, and the signature covers the blob's sha256: a replica checks fetched bytes against it.

Rules:

1. ``hash`` is the lowercase hex sha256 of the bytes, ``size`` their length, ``type`` the content type
   they are served with (a reader never sees :data:`BLOB_TYPE` itself).
2. The encoding is canonical (sorted keys, no spaces, UTF-8), so equal pointers are equal bytes.
3. A pointer that does not decode (a hand-made op) is :class:`~statebus.errors.BadBlob`: its key
   serves no bytes.
4. The info-hashes come both or neither (lowercase hex: 40 digits for v1, 64 for v2) and are left out
   of the encoding when absent, so a pointer without them (a small blob, or one written before they
   were) keeps its bytes, and its fetchers rely on the sha256 alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Final

from statebus.blobs.store import HASH_RE
from statebus.errors import BadBlob

BLOB_TYPE: Final = "application/vnd.statebus.blob+json"
"""The content type, inside an op, of a value that is a blob pointer."""
MAX_POINTER_BYTES: Final = 768
MAX_TYPE_CHARS: Final = 255
_V1_RE: Final = re.compile(r"[0-9a-f]{40}")
_FIELDS: Final = frozenset({"hash", "size", "type"})
_TORRENT_FIELDS: Final = _FIELDS | {"infohash_v1", "infohash_v2"}


@dataclass(frozen=True, slots=True)
class BlobPointer:
    hash: str
    size: int
    type: str
    infohash_v1: str = ""
    """The v1 (SHA-1) info-hash of the blob's torrent, hex; empty when the pointer names none (rule 4)."""
    infohash_v2: str = ""
    """The v2 (SHA-256) info-hash of the blob's torrent, hex; empty when the pointer names none."""

    def encode(self) -> bytes:
        """The canonical bytes an op carries (rule 2)."""
        body: dict[str, object] = {"hash": self.hash, "size": self.size, "type": self.type}
        if self.infohash_v1:
            body["infohash_v1"], body["infohash_v2"] = self.infohash_v1, self.infohash_v2
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> BlobPointer:
        """The pointer in an op's body. Raises :class:`BadBlob` when it is not one (rule 3)."""
        try:
            if len(data) > MAX_POINTER_BYTES:
                raise ValueError("too long")
            body = json.loads(data)
            hash, size, ctype = body["hash"], body["size"], body["type"]
            v1, v2 = body.get("infohash_v1", ""), body.get("infohash_v2", "")
            ok = (
                isinstance(hash, str)
                and HASH_RE.fullmatch(hash) is not None
                and type(size) is int
                and size >= 0
                and isinstance(ctype, str)
                and 0 < len(ctype) <= MAX_TYPE_CHARS
                and (
                    set(body) == _FIELDS
                    or (
                        set(body) == _TORRENT_FIELDS
                        and isinstance(v1, str)
                        and _V1_RE.fullmatch(v1) is not None
                        and isinstance(v2, str)
                        and HASH_RE.fullmatch(v2) is not None
                    )
                )
            )
        except (ValueError, TypeError, KeyError):
            ok = False
        if not ok:
            raise BadBlob(
                "the value is not a well-formed blob pointer {hash, size, type[, infohash_v1, infohash_v2]}"
            )
        return cls(hash, size, ctype, v1, v2)


def is_pointer(content_type: str | None) -> bool:
    """True when a stored value of this content type is a blob pointer."""
    return content_type == BLOB_TYPE
