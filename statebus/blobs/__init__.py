"""Blobs: large binary values stored content-addressed in the data folder (sha256), outside the op log.

A key whose value is a blob holds a small signed pointer ``{hash, size, type}``; the bytes live in
the :class:`BlobStore` (``store.py``, where the layout, durability and API are described). This
package does I/O (files), so the core never imports it; it sits beside ``storage`` in the layers.
"""

from statebus.blobs.pointer import BLOB_TYPE, BlobPointer, is_pointer
from statebus.blobs.sealed import BlobSealer
from statebus.blobs.store import BlobInfo, BlobStore, Quota, check_hash

__all__ = [
    "BLOB_TYPE",
    "BlobInfo",
    "BlobPointer",
    "BlobSealer",
    "BlobStore",
    "Quota",
    "check_hash",
    "is_pointer",
]
