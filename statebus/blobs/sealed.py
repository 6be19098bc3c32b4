"""Blobs sealed at rest: fixed-size chunks, each authenticated on its own, under keyed file names.

A blob store opened with a :class:`BlobSealer` (a data folder encrypted at rest) keeps, in place of
``sha256/ab/<sha256>``, the file ``sealed/<n[:2]>/<n>`` where ``n = BLAKE2b(name key, sha256)``::

    file id (16 random bytes) | nonce (24) | XChaCha20-Poly1305(sha256 (32) | size (u64 BE))    96 bytes
    chunk 0: nonce (24) | XChaCha20-Poly1305(plaintext bytes 0 .. 64 KiB)                   64 KiB + 40
    chunk 1: …                                                                   the last one shorter

Rules:

1. Nothing on disk names or shows content: a file's name is keyed (the plaintext hash cannot be
   tested against it without the key), its bytes are ciphertext; only its size (plaintext size +
   96 + 40 per 64 KiB chunk) and times show.
2. A chunk's associated data is ``file id | chunk index (u64) | final (1 byte)``: a chunk moved to
   another place, another file, or a file cut at a chunk boundary fails to open. The header's is
   the file id, and it names the blob's sha256, which a reader checks against the one it asked for.
3. A range read opens only the chunks it touches (:class:`SealedReader`); a chunk that does not
   authenticate raises :class:`BadBlob` naming the blob, and no byte of it is returned.
4. Bytes are sealed as they stream in (:class:`SealedWriter`): no plaintext is ever written to disk,
   not even to the temp file.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import struct
from typing import BinaryIO, cast

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from statebus.errors import BadBlob

CHUNK = 64 * 1024
"""Plaintext bytes per sealed chunk."""
NONCE = 24
TAG = 16
FILE_ID = 16
HEADER = FILE_ID + NONCE + 32 + 8 + TAG
"""Bytes of a sealed file's header."""
CHUNK_OVERHEAD = NONCE + TAG
_HEAD_AD = b"statebus-blob-v1 head\n"
_CHUNK_AD = b"statebus-blob-v1 chunk\n"


class BlobSealer:
    """The two keys of a sealed blob store: one seals chunks, one names files (both 32 bytes)."""

    __slots__ = ("_name_key", "_seal_key")

    def __init__(self, seal_key: bytes, name_key: bytes) -> None:
        if len(seal_key) != 32 or len(name_key) != 32:
            raise ValueError("blob keys are 32 bytes")
        self._seal_key = seal_key
        self._name_key = name_key

    def __repr__(self) -> str:
        return "BlobSealer(…)"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a BlobSealer is never pickled")

    def name(self, hash: str) -> str:
        """The file name of blob ``hash`` (rule 1): 64 hex characters that only the key relates to it."""
        return hashlib.blake2b(bytes.fromhex(hash), key=self._name_key, person=b"sb-blob-name").hexdigest()[
            :64
        ]

    def seal_chunk(self, file_id: bytes, index: int, final: bool, data: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE)
        ad = _CHUNK_AD + file_id + struct.pack(">QB", index, final)
        return nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(data, ad, nonce, self._seal_key)

    def open_chunk(self, file_id: bytes, index: int, final: bool, sealed: bytes) -> bytes:
        ad = _CHUNK_AD + file_id + struct.pack(">QB", index, final)
        return crypto_aead_xchacha20poly1305_ietf_decrypt(sealed[NONCE:], ad, sealed[:NONCE], self._seal_key)

    def seal_header(self, file_id: bytes, hash: str, size: int) -> bytes:
        nonce = secrets.token_bytes(NONCE)
        body = bytes.fromhex(hash) + struct.pack(">Q", size)
        return (
            file_id
            + nonce
            + crypto_aead_xchacha20poly1305_ietf_encrypt(body, _HEAD_AD + file_id, nonce, self._seal_key)
        )

    def open_header(self, head: bytes) -> tuple[bytes, str, int]:
        """``(file id, sha256 hex, size)`` of a sealed file's header; CryptoError/ValueError if it
        does not authenticate."""
        if len(head) != HEADER:
            raise ValueError("short header")
        file_id, nonce = head[:FILE_ID], head[FILE_ID : FILE_ID + NONCE]
        body = crypto_aead_xchacha20poly1305_ietf_decrypt(
            head[FILE_ID + NONCE :], _HEAD_AD + file_id, nonce, self._seal_key
        )
        return file_id, body[:32].hex(), struct.unpack(">Q", body[32:])[0]


def chunks_of(size: int) -> int:
    """How many chunks a blob of ``size`` bytes is sealed in (an empty one still has one)."""
    return max(1, -(-size // CHUNK))


def sealed_size(size: int) -> int:
    """The size on disk of a sealed blob of ``size`` plaintext bytes."""
    return HEADER + chunks_of(size) * CHUNK_OVERHEAD + size


def plain_size(on_disk: int) -> int:
    """The plaintext size of a sealed file of ``on_disk`` bytes (the inverse of :func:`sealed_size`)."""
    body = on_disk - HEADER
    return body - CHUNK_OVERHEAD * max(1, -(-body // (CHUNK + CHUNK_OVERHEAD)))


class SealedWriter:
    """Seals bytes into ``f`` as they come (rule 4): :meth:`write` as often as needed, then :meth:`finish`."""

    def __init__(self, f: BinaryIO, sealer: BlobSealer) -> None:
        self._f = f
        self._sealer = sealer
        self._file_id = secrets.token_bytes(FILE_ID)
        self._buf = bytearray()
        self._index = 0
        f.write(bytes(HEADER))  # the header's place, written by finish() once the hash is known

    def write(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) > CHUNK:  # keep at least one byte back: the last chunk is marked final
            self._f.write(
                self._sealer.seal_chunk(self._file_id, self._index, False, bytes(self._buf[:CHUNK]))
            )
            del self._buf[:CHUNK]
            self._index += 1

    def finish(self, hash: str, size: int) -> None:
        self._f.write(self._sealer.seal_chunk(self._file_id, self._index, True, bytes(self._buf)))
        self._buf.clear()
        self._f.seek(0)
        self._f.write(self._sealer.seal_header(self._file_id, hash, size))
        self._f.seek(0, io.SEEK_END)


class PlainWriter:
    """The same interface for a plain store: the bytes go to ``f`` as they are."""

    def __init__(self, f: BinaryIO) -> None:
        self.write = f.write

    def finish(self, hash: str, size: int) -> None:
        return None


class SealedReader(io.RawIOBase):
    """A sealed blob opened for reading and seeking, decrypting only the chunks a read touches (rule 3).

    Raises:
        BadBlob: the header does not authenticate or names another blob, or a chunk read does not
            authenticate.
    """

    def __init__(self, raw: BinaryIO, sealer: BlobSealer, hash: str) -> None:
        super().__init__()
        self._raw = raw
        self._sealer = sealer
        self._hash = hash
        try:
            self._file_id, named, self.size = sealer.open_header(raw.read(HEADER))
        except (CryptoError, ValueError, struct.error):
            raw.close()
            raise BadBlob(f"the sealed blob {hash} does not authenticate (altered, or another key)") from None
        if named != hash:
            raw.close()
            raise BadBlob(f"the sealed file of blob {hash} holds another blob (moved or swapped)")
        self._chunks = chunks_of(self.size)
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _chunk(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        final = index == self._chunks - 1
        length = (self.size - index * CHUNK if final else CHUNK) + CHUNK_OVERHEAD
        self._raw.seek(HEADER + index * (CHUNK + CHUNK_OVERHEAD))
        sealed = self._raw.read(length)
        try:
            data = self._sealer.open_chunk(self._file_id, index, final, sealed)
        except (CryptoError, ValueError):
            raise BadBlob(f"chunk {index} of the sealed blob {self._hash} does not authenticate") from None
        self._cached = (index, data)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self._pos >= self.size:
            return 0
        index, offset = divmod(self._pos, CHUNK)
        data = self._chunk(index)[offset : offset + len(buffer)]
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


def open_sealed(raw: BinaryIO, sealer: BlobSealer, hash: str) -> BinaryIO:
    """A buffered, seekable reader of the sealed blob in ``raw`` (taken over: closed with it)."""
    return cast(BinaryIO, io.BufferedReader(SealedReader(raw, sealer, hash), buffer_size=CHUNK))


def read_hash(path_open: BinaryIO, sealer: BlobSealer) -> str | None:
    """The sha256 a sealed file's header names; None if it does not authenticate."""
    try:
        return sealer.open_header(path_open.read(HEADER))[1]
    except (CryptoError, ValueError, struct.error):
        return None
