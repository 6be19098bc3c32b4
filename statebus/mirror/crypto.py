"""Mirror keys and sealing: what makes a mirror hold only ciphertext it cannot read.

Rules:

1. The mirror key is the SLIP-0010 child ``mirror`` of the namespace root
   (``m/44'/7433'/0'/<label mirror>'``): hardened, so nothing public (the pubkey, the delegation
   records, anything the mirror sees) leads to it; the phrase gives it back on any machine.
2. Every object has a name the owner chooses (``manifest``, ``seg/41``, ``blob/<sha256>/3``). Its key
   is ``BLAKE2b(key=mirror key, person="sb-mirror-key", name)``; its opaque id on the mirror is
   ``BLAKE2b(key=mirror key, person="sb-mirror-id", name)``, 32 hex characters. The mirror never sees
   a name.
3. A sealed object is ``nonce (24) | XChaCha20-Poly1305(frame)`` with the owner's pubkey and the id as
   associated data, so an object served under another id, or for another owner, fails to open.
   ``frame`` is ``len (u32 BE) | plaintext | zero padding`` up to a bucket: the sealed size is
   always a bucket (:func:`bucket`), so the mirror learns sizes only to within a factor of two.
4. Opening checks the tag before anything is parsed; a changed byte raises :class:`MirrorTampered`
   naming the object.
"""

from __future__ import annotations

import hashlib
import os
import struct

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from statebus.errors import InvalidValue, MirrorTampered
from statebus.identity.keys import Identity, derive

MIRROR_PATH = "mirror"
"""The SLIP-0010 label of the mirror key under the namespace root."""
NONCE = 24
TAG = 16
OVERHEAD = NONCE + TAG + 4
MIN_BUCKET = 4096
BIG_STEP = 1 << 20
"""Past 1 MiB buckets grow by 1 MiB steps, not by doubling."""
MAX_SEALED = 16 << 20
"""The largest sealed object (a mirror refuses larger ones)."""


def bucket(n: int) -> int:
    """The sealed size of ``n`` plaintext bytes: the least power of two ≥ 4 KiB holding it, or past
    1 MiB, the next multiple of 1 MiB."""
    need = n + OVERHEAD
    if need > BIG_STEP:
        return -(-need // BIG_STEP) * BIG_STEP
    size = MIN_BUCKET
    while size < need:
        size *= 2
    return size


class MirrorCipher:
    """Seals and opens one owner's mirror objects.

    >>> from statebus.identity.keys import identity_from_mnemonic, new_mnemonic
    >>> c = MirrorCipher(identity_from_mnemonic(new_mnemonic()))
    >>> sealed = c.seal("seg/0", b"hello")
    >>> len(sealed), c.open("seg/0", sealed)
    (4096, b'hello')
    """

    __slots__ = ("_key", "owner")

    def __init__(self, root: Identity) -> None:
        if not root.can_derive:
            raise InvalidValue("the mirror key derives from the namespace root (init from a phrase)")
        self._key = derive(root, MIRROR_PATH).export_secret()[0]
        self.owner = root.pubkey

    def __repr__(self) -> str:
        return f"MirrorCipher(owner={self.owner!r})"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a MirrorCipher is never pickled")

    def object_id(self, name: str) -> str:
        """The opaque id the mirror stores ``name`` under."""
        return hashlib.blake2b(
            name.encode(), key=self._key, person=b"sb-mirror-id", digest_size=16
        ).hexdigest()

    def _object_key(self, name: str) -> bytes:
        return hashlib.blake2b(name.encode(), key=self._key, person=b"sb-mirror-key", digest_size=32).digest()

    def _aad(self, name: str) -> bytes:
        return f"statebus-mirror-v1\n{self.owner}\n{self.object_id(name)}".encode()

    def seal(self, name: str, plaintext: bytes) -> bytes:
        """``plaintext`` sealed under ``name``'s key, padded to its bucket."""
        size = bucket(len(plaintext))
        if size > MAX_SEALED:
            raise InvalidValue(f"a mirror object holds at most {MAX_SEALED - OVERHEAD} bytes")
        frame = struct.pack(">I", len(plaintext)) + plaintext
        frame += bytes(size - NONCE - TAG - len(frame))
        nonce = os.urandom(NONCE)
        return nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(
            frame, self._aad(name), nonce, self._object_key(name)
        )

    def open(self, name: str, sealed: bytes) -> bytes:
        """The plaintext of ``sealed``. Raises :class:`MirrorTampered` (naming ``name``) when it does
        not authenticate: altered, truncated, or another object's."""
        if len(sealed) < NONCE + TAG + 4:
            raise MirrorTampered(f"{name}: {len(sealed)} bytes is too short to be a mirror object")
        try:
            frame = crypto_aead_xchacha20poly1305_ietf_decrypt(
                sealed[NONCE:], self._aad(name), sealed[:NONCE], self._object_key(name)
            )
        except CryptoError:
            raise MirrorTampered(
                f"{name}: the ciphertext does not authenticate (altered or swapped)"
            ) from None
        (n,) = struct.unpack(">I", frame[:4])
        if n > len(frame) - 4:
            raise MirrorTampered(f"{name}: bad length inside the frame")
        return frame[4 : 4 + n]
