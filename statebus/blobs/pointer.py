"""The pointer a key holds when its value is a blob: ``{"hash", "size", "type"}``, signed in the op.

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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from statebus.blobs.store import HASH_RE
from statebus.errors import BadBlob

BLOB_TYPE: Final = "application/vnd.statebus.blob+json"
"""The content type, inside an op, of a value that is a blob pointer."""
MAX_POINTER_BYTES: Final = 512
MAX_TYPE_CHARS: Final = 255


@dataclass(frozen=True, slots=True)
class BlobPointer:
    hash: str
    size: int
    type: str

    def encode(self) -> bytes:
        """The canonical bytes an op carries (rule 2)."""
        body = {"hash": self.hash, "size": self.size, "type": self.type}
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> BlobPointer:
        """The pointer in an op's body. Raises :class:`BadBlob` when it is not one (rule 3)."""
        try:
            if len(data) > MAX_POINTER_BYTES:
                raise ValueError("too long")
            body = json.loads(data)
            hash, size, ctype = body["hash"], body["size"], body["type"]
            ok = (
                isinstance(hash, str)
                and HASH_RE.fullmatch(hash) is not None
                and type(size) is int
                and size >= 0
                and isinstance(ctype, str)
                and 0 < len(ctype) <= MAX_TYPE_CHARS
                and set(body) == {"hash", "size", "type"}
            )
        except (ValueError, TypeError, KeyError):
            ok = False
        if not ok:
            raise BadBlob("the value is not a well-formed blob pointer {hash, size, type}")
        return cls(hash, size, ctype)


def is_pointer(content_type: str | None) -> bool:
    """True when a stored value of this content type is a blob pointer."""
    return content_type == BLOB_TYPE
