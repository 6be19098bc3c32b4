"""The torrent of one blob: hybrid (v1 + v2), named by the blob's sha256, deterministic.

Rules:

1. The torrent holds one file whose name is the blob's lowercase hex sha256, with no tracker, no web
   seed and no creation date, so the same bytes always give the same info-hashes: the owner and
   every replica compute the same torrent, and the owner signs it (``statebus.federation.swarm``).
2. Pieces are 256 KiB (a 50 MB blob: 200 pieces), small enough for a 1 MB blob to have 4 pieces to
   share, large enough to keep the metadata small (about 20 KB for 50 MB).
3. :func:`TorrentMeta.parse` refuses metadata that is not one file of the declared sha256 name and size
   (``BadBlob``): a torrent can only ever name the blob it claims.
4. The owner computes the torrent once, when the blob is written (:func:`signed_pointer`), and its
   pointer carries both info-hashes under the op's signature; a fetcher then takes only that torrent
   (:func:`check_signed`, before any piece is asked for). A pointer without them (a hot small blob, or
   one written before) leaves only the whole-sha256 check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import libtorrent as lt

from statebus.blobs import BlobPointer
from statebus.errors import BadBlob

PIECE_BYTES: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class TorrentMeta:
    """A blob's torrent: its bencoded metadata and the info-hashes (hex) it is known by."""

    hash: str
    """The blob's sha256 (the torrent's only file is named by it)."""
    size: int
    infohash_v1: str
    infohash_v2: str
    data: bytes
    """The bencoded ``.torrent`` (the info dictionary is what the info-hashes cover)."""

    def info(self) -> lt.torrent_info:
        decoded: Any = lt.bdecode(self.data)
        return lt.torrent_info(decoded)

    @classmethod
    def parse(cls, data: bytes, *, hash: str, size: int) -> TorrentMeta:
        """The torrent in ``data``, which must be the single file ``hash`` of ``size`` bytes (rule 3)."""
        try:
            decoded: Any = lt.bdecode(data)
            if decoded is None:
                raise ValueError("not bencoded")
            ti = lt.torrent_info(decoded)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise BadBlob(f"the torrent does not decode: {exc}") from None
        info = decoded.get(b"info", {})
        tree = info.get(b"file tree", {})
        one = (
            info.get(b"name") == hash.encode()
            and info.get(b"length") == size
            and b"files" not in info
            and list(tree) == [hash.encode()]
            and tree[hash.encode()].get(b"", {}).get(b"length") == size
        )
        if not one:
            raise BadBlob(
                "the torrent does not describe this blob (one file named by its sha256, of its size)"
            )
        hashes = ti.info_hashes()
        if not (hashes.has_v1() and hashes.has_v2()):
            raise BadBlob("the torrent is not hybrid (v1 and v2)")
        return cls(hash, size, str(hashes.v1), str(hashes.v2), data)


@dataclass(frozen=True, slots=True)
class TorrentRef:
    """A blob's torrent known only by its v1 info-hash (from a provider record on our DHT): the
    metadata comes from the peers (``ut_metadata``) and must pass :meth:`TorrentRef.check`."""

    hash: str
    size: int
    """The pointer's size; 0 when unknown (fetched by sha256 alone): then any size up to ``max_size``."""
    infohash_v1: str
    max_size: int = 0
    infohash_v2: str = ""
    """The owner-signed v2 info-hash, when the pointer names one: the metadata must have it too."""

    def magnet(self) -> str:
        return f"magnet:?xt=urn:btih:{self.infohash_v1}"

    def check(self, ti: lt.torrent_info | None) -> None:
        """Refuse metadata from peers that is not the one file ``hash`` of ``size`` bytes, hybrid (rule 3)."""
        if ti is None:
            raise BadBlob("the peers sent no torrent metadata")
        try:
            files = ti.layout()
            size = files.file_size(0) if files.num_files() == 1 else -1
            fits = size == self.size or (not self.size and 0 < size <= self.max_size)
            one = files.num_files() == 1 and files.file_name(0) == self.hash and fits
        except (RuntimeError, ValueError, TypeError) as exc:
            raise BadBlob(f"the peers' torrent metadata does not read: {exc}") from None
        if not one:
            raise BadBlob(
                "the peers' torrent does not describe this blob (one file named by its sha256, of its size)"
            )
        hashes = ti.info_hashes()
        if not (hashes.has_v1() and hashes.has_v2()) or str(hashes.v1) != self.infohash_v1:
            raise BadBlob("the peers' torrent is not the hybrid torrent of that info-hash")
        if self.infohash_v2 and str(hashes.v2) != self.infohash_v2:
            raise BadBlob("the peers' torrent is not the one the owner signed (its v2 info-hash differs)")


def check_signed(pointer: BlobPointer, infohash_v1: str, infohash_v2: str) -> None:
    """Refuse a torrent whose info-hashes are not the ones the owner signed in ``pointer`` (rule 4);
    a pointer that names none accepts any (its fetch relies on the whole sha256)."""
    if not pointer.infohash_v1:
        return
    if infohash_v1 != pointer.infohash_v1 or infohash_v2 != pointer.infohash_v2:
        raise BadBlob(
            f"the offered torrent of blob {pointer.hash} (info-hash {infohash_v1}) is not the one "
            f"its owner signed ({pointer.infohash_v1})"
        )


def make_torrent(path: Path) -> TorrentMeta:
    """The torrent of the blob stored at ``path`` (a file named by its sha256; rule 1).

    Hashes the whole file (about 70 ms for 50 MB); call it in a thread.
    """
    size = path.stat().st_size
    ct = lt.create_torrent([lt.create_file_entry(path.name, size)], PIECE_BYTES, 0)
    lt.set_piece_hashes(ct, str(path.parent))
    entry = ct.generate()
    entry.pop(b"creation date", None)
    entry.pop(b"created by", None)
    data = lt.bencode(entry)
    decoded: Any = lt.bdecode(data)
    ti = lt.torrent_info(decoded)
    hashes = ti.info_hashes()
    return TorrentMeta(path.name, size, str(hashes.v1), str(hashes.v2), bytes(data))


def signed_pointer(pointer: BlobPointer, path: Path) -> BlobPointer:
    """``pointer`` naming the torrent of the blob stored at ``path`` (rule 4): what the owner writes,
    and signs, for a blob of ``swarm_min_bytes`` or more. Hashes the whole file; call it in a thread."""
    meta = make_torrent(path)
    return BlobPointer(pointer.hash, pointer.size, pointer.type, meta.infohash_v1, meta.infohash_v2)
