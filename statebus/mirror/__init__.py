"""The end-to-end encrypted mirror: a node's whole namespace, as ciphertext, on nodes it chooses.

    crypto.py     keys from the seed (SLIP-0010 ``mirror``), per-object keys, sealing into padded buckets
    objects.py    what the owner packs: op-log segments, blob parts and the manifest (pure)
    store.py      the mirror side: ciphertext files per owner, consent and quota, storage proofs
    client.py     signed HTTP requests to a mirror
    push.py       the owner side: targets, incremental and resumable push, challenges, status

Restoring from a mirror is :mod:`statebus.federation.mirror_restore` (it goes through the federation's
``Ingest``, which verifies every op); the mirror's HTTP routes are :mod:`statebus.http.mirror`.
"""

from __future__ import annotations

from statebus.mirror.crypto import MirrorCipher
from statebus.mirror.store import MirrorStore

__all__ = ["MirrorCipher", "MirrorStore"]
