"""The content-addressed blob store of a data folder: bytes by their sha256, written once, durable.

Layout (under ``<data>/blobs``)::

    sha256/ab/abcdef…      the bytes of the blob whose lowercase hex sha256 is ``abcdef…``
    sha256/ab/abcdef….ns   the namespaces charged for it, one pubkey a line (absent: none)
    tmp/put-<random>       a blob being written (removed on failure; stale ones at open)

or, in a data folder encrypted at rest (``sealer=``), ``sealed/<n[:2]>/<n>`` (and ``<n>.ns``), where
``n`` is a keyed hash of the sha256 and the file holds sealed chunks (:mod:`statebus.blobs.sealed`);
the API is the same, reads decrypt only the chunks they touch, and :meth:`BlobStore.path` is refused
(a caller that wants a plaintext file on disk, the swarm's seeding, has none to get).

Rules:

1. A blob is only ever visible whole: its bytes go to a temp file in ``tmp/``, which is fsynced,
   renamed to its hash (an atomic replace on one file system) and the directory fsynced, before
   :meth:`BlobStore.put` returns. A crash leaves a stale temp file, never a partial blob.
2. Size caps are checked before bytes are kept: a declared size over the cap is refused before the
   first chunk is read, and a stream that passes the cap is cut at the chunk that passes it; the temp
   file is removed and nothing is stored (``TooLarge``, 413).
3. A blob is named by what it holds. ``put(..., expect=hash)`` refuses bytes whose sha256 differs
   (``BadBlob``, 422) and keeps nothing; a hash is 64 lowercase hex digits or :class:`InvalidValue`.
4. Quota: ``put(..., namespace=ns)`` charges the blob's size to ``ns`` on the node's one
   :class:`Quota` counter (the op gate's ``QuotaTracker``) once per blob and namespace, before the
   rename; ``QuotaExceeded`` keeps nothing. :meth:`gc` releases what it removes.
5. :meth:`gc` removes blobs no key points to (the caller names the live hashes), but never one
   younger than ``grace`` seconds: a blob put just before its op is committed is not yet pointed to.

API (the seam for blob pointers, app bundles, torrents and avatars)::

    store = BlobStore(data_dir / "blobs", max_bytes=settings.max_blob_bytes, quota=gate.quota)
    info = await store.put(chunks, size=n, namespace=ns)    # AsyncIterable[bytes] → BlobInfo(hash, size)
    info = store.put_bytes(b"...")                           # the same, for bytes in hand (sync)
    store.has(h); store.size(h)                              # bool; int or None
    with store.open(h) as f: f.seek(start); f.read(n)        # range reads; NotFound if absent
    store.read(h, start, end)                                # bytes [start, end)
    store.adopt(path, expect=h, namespace=ns)                # a finished download, hard-linked in
    store.gc(live_hashes, grace=60.0)                        # → [BlobInfo] removed
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import time
from collections.abc import AsyncIterable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from statebus.blobs.sealed import BlobSealer, PlainWriter, SealedWriter, open_sealed, plain_size, read_hash
from statebus.errors import BadBlob, InvalidValue, NotFound, TooLarge
from statebus.types import PubKey

HASH_RE = re.compile(r"[0-9a-f]{64}")
STALE_TMP_SECONDS = 3600.0


class Quota(Protocol):
    """What the store needs of the node's quota counter (``statebus.access.limits.QuotaTracker``)."""

    def charge(self, namespace: PubKey, nbytes: int) -> None: ...

    def release(self, namespace: PubKey, nbytes: int) -> None: ...


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A stored blob: its lowercase hex sha256 and its size in bytes."""

    hash: str
    size: int


def check_hash(value: str) -> str:
    """``value`` if it is 64 lowercase hex digits (a sha256), else :class:`InvalidValue`."""
    if not isinstance(value, str) or HASH_RE.fullmatch(value) is None:
        raise InvalidValue("a blob hash is 64 lowercase hex digits (sha256)")
    return value


class BlobStore:
    """Blobs by sha256 under ``root``.

    Args:
        root: the folder (created, mode 0700); ``<data>/blobs`` for a node.
        max_bytes: the largest blob :meth:`put` accepts (``max_blob_bytes``).
        quota: the node's quota counter; None counts nothing.
        fsync: False skips fsync (tests, ``durability = "process"``: the rename still makes a blob
            whole or absent after a crash of the process).
        sealer: seal every blob at rest under these keys (a data folder encrypted at rest).
    """

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int,
        quota: Quota | None = None,
        fsync: bool = True,
        sealer: BlobSealer | None = None,
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.quota = quota
        self.fsync = fsync
        self.sealer = sealer
        self._tmp = self.root / "tmp"
        self._objects = self.root / ("sha256" if sealer is None else "sealed")
        for folder in (self.root, self._tmp, self._objects):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        now = time.time()
        for stale in self._tmp.iterdir():
            try:
                if now - stale.stat().st_mtime > STALE_TMP_SECONDS:
                    stale.unlink()
            except OSError:
                pass

    # ------------------------------------------------------------------ reads
    @property
    def sealed(self) -> bool:
        """Whether blobs are sealed at rest (no plaintext file to hand out)."""
        return self.sealer is not None

    def path(self, hash: str) -> Path:
        """Where blob ``hash``'s plaintext lives (whether or not it exists). Refused (NotFound) in a
        sealed store, which has no plaintext file."""
        if self.sealer is not None:
            raise NotFound(f"blob {hash} is sealed at rest on this node: there is no plaintext file of it")
        return self._file(hash)

    def file(self, hash: str) -> Path:
        """The file on disk holding blob ``hash`` (its plaintext, or sealed), whether or not it exists."""
        return self._file(hash)

    def _file(self, hash: str) -> Path:
        check_hash(hash)
        name = hash if self.sealer is None else self.sealer.name(hash)
        return self._objects / name[:2] / name

    def has(self, hash: str) -> bool:
        return self._file(hash).is_file()

    def size(self, hash: str) -> int | None:
        """The blob's size in bytes, or None if it is not stored."""
        try:
            on_disk = self._file(hash).stat().st_size
        except FileNotFoundError:
            return None
        return on_disk if self.sealer is None else plain_size(on_disk)

    def open(self, hash: str) -> BinaryIO:
        """The blob opened for reading (seek for ranges); :class:`NotFound` if it is not stored,
        :class:`BadBlob` if a sealed blob does not authenticate."""
        try:
            f = self._file(hash).open("rb")
        except FileNotFoundError:
            raise NotFound(f"no blob {hash} on this node") from None
        return f if self.sealer is None else open_sealed(f, self.sealer, hash)

    def read(self, hash: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of the blob (``end`` None: to its end)."""
        with self.open(hash) as f:
            f.seek(start)
            return f.read() if end is None else f.read(max(0, end - start))

    def hashes(self) -> Iterator[str]:
        """Every stored blob's hash (no order)."""
        for sub in self._objects.iterdir():
            for entry in sub.iterdir():
                if HASH_RE.fullmatch(entry.name):
                    if self.sealer is None:
                        yield entry.name
                        continue
                    with entry.open("rb") as f:
                        named = read_hash(f, self.sealer)
                    if named is not None:
                        yield named

    # ------------------------------------------------------------------ writes
    async def put(
        self,
        chunks: AsyncIterable[bytes],
        *,
        size: int | None = None,
        expect: str | None = None,
        namespace: PubKey | None = None,
        limit: int | None = None,
    ) -> BlobInfo:
        """Store the bytes ``chunks`` yields; return the blob's hash and size.

        Args:
            size: the declared size (a ``Content-Length``), checked against the cap before any
                byte is read; the stream must then hold exactly that many bytes.
            expect: the sha256 the bytes must have (a signed pointer's): otherwise ``BadBlob``.
            namespace: charge the blob to this namespace's quota (None: no charge, the owner's).
            limit: a cap below ``max_bytes`` for this put.

        Raises:
            TooLarge: over the cap (declared, or when the stream passes it). Nothing is kept.
            BadBlob: the sha256 is not ``expect``, or the stream is shorter or longer than ``size``.
            QuotaExceeded: the namespace is over its quota.
        """
        cap = self.max_bytes if limit is None else min(limit, self.max_bytes)
        if expect is not None:
            check_hash(expect)
        if size is not None and size > cap:
            raise TooLarge(f"the blob is {size} bytes; the limit is {cap}")
        tmp = self._tmp / f"put-{secrets.token_hex(8)}"
        digest = hashlib.sha256()
        total = 0
        try:
            with tmp.open("xb") as f:
                out = self._writer(f)
                async for chunk in chunks:
                    total += len(chunk)
                    if total > cap:
                        raise TooLarge(f"the blob is over its limit of {cap} bytes")
                    if size is not None and total > size:
                        raise BadBlob(f"the blob is longer than its declared {size} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                out.finish(digest.hexdigest(), total)
                f.flush()
                if self.fsync:
                    await asyncio.to_thread(os.fsync, f.fileno())
            if size is not None and total != size:
                raise BadBlob(f"the blob ended at {total} of its declared {size} bytes")
            return await asyncio.to_thread(self._commit, tmp, digest.hexdigest(), total, expect, namespace)
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(
        self, data: bytes, *, expect: str | None = None, namespace: PubKey | None = None
    ) -> BlobInfo:
        """:meth:`put` for bytes already in memory (synchronous; same rules and errors)."""
        if len(data) > self.max_bytes:
            raise TooLarge(f"the blob is {len(data)} bytes; the limit is {self.max_bytes}")
        if expect is not None:
            check_hash(expect)
        tmp = self._tmp / f"put-{secrets.token_hex(8)}"
        hash = hashlib.sha256(data).hexdigest()
        try:
            with tmp.open("xb") as f:
                out = self._writer(f)
                out.write(data)
                out.finish(hash, len(data))
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            return self._commit(tmp, hash, len(data), expect, namespace)
        finally:
            tmp.unlink(missing_ok=True)

    def adopt(self, path: Path, *, expect: str, namespace: PubKey | None = None) -> BlobInfo:
        """Keep the finished file at ``path`` (a swarm download) as blob ``expect``, by a hard link.

        The file is hashed first (rule 3: ``BadBlob`` unless its sha256 is ``expect``), the size cap
        and quota apply as for :meth:`put`, and ``path`` itself is left in place (its owner may go on
        serving it). Falls back to a copy when ``path`` is on another file system.
        """
        check_hash(expect)
        size = path.stat().st_size
        if size > self.max_bytes:
            raise TooLarge(f"the blob is {size} bytes; the limit is {self.max_bytes}")
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        tmp = self._tmp / f"put-{secrets.token_hex(8)}"
        try:
            try:
                if self.sealer is not None:
                    raise OSError("a sealed store copies (and seals) instead of linking")
                os.link(path, tmp)
            except OSError:
                with path.open("rb") as src, tmp.open("xb") as dst:
                    out = self._writer(dst)
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                    out.finish(digest.hexdigest(), size)
                    if self.fsync:
                        os.fsync(dst.fileno())
            return self._commit(tmp, digest.hexdigest(), size, expect, namespace)
        finally:
            tmp.unlink(missing_ok=True)

    def _writer(self, f: BinaryIO) -> PlainWriter | SealedWriter:
        return PlainWriter(f) if self.sealer is None else SealedWriter(f, self.sealer)

    def _commit(
        self, tmp: Path, hash: str, size: int, expect: str | None, namespace: PubKey | None
    ) -> BlobInfo:
        if expect is not None and hash != expect:
            raise BadBlob(f"the bytes hash to {hash}, not {expect}")
        final = self._file(hash)
        final.parent.mkdir(mode=0o700, exist_ok=True)
        if namespace is not None:
            self._charge(final, namespace, size)
        if final.exists():
            os.utime(final)  # a fresh put of a stored blob: its grace before gc starts again
        else:
            os.replace(tmp, final)
            if self.fsync:
                _fsync_dir(final.parent)
        return BlobInfo(hash, size)

    def _charge(self, final: Path, namespace: PubKey, size: int) -> None:
        owners = _owners(final)
        if namespace in owners:
            return
        if self.quota is not None:
            self.quota.charge(namespace, size)  # QuotaExceeded: nothing kept (the caller unlinks tmp)
        with _owners_path(final).open("a", encoding="utf-8") as f:
            f.write(namespace + "\n")

    def usage(self) -> dict[PubKey, int]:
        """Bytes of blobs charged per namespace (read from disk: for a quota counter's ``measure``)."""
        used: dict[PubKey, int] = {}
        for hash in self.hashes():
            final = self._file(hash)
            size = self.size(hash) or 0
            for ns in _owners(final):
                used[ns] = used.get(ns, 0) + size
        return used

    # ------------------------------------------------------------------ garbage collection
    def delete(self, hash: str) -> BlobInfo | None:
        """Remove one blob (releasing its quota charges); None if it was not stored."""
        final = self._file(hash)
        size = self.size(hash)
        if size is None:
            return None
        owners = _owners(final)
        final.unlink(missing_ok=True)
        _owners_path(final).unlink(missing_ok=True)
        if self.quota is not None:
            for ns in owners:
                self.quota.release(ns, size)
        return BlobInfo(hash, size)

    def gc(self, live: Collection[str], *, grace: float = 60.0) -> list[BlobInfo]:
        """Remove every blob not in ``live`` and older than ``grace`` seconds; return what went."""
        cutoff = time.time() - grace
        removed: list[BlobInfo] = []
        for hash in list(self.hashes()):
            if hash in live:
                continue
            try:
                if self._file(hash).stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            info = self.delete(hash)
            if info is not None:
                removed.append(info)
        return removed


def _owners_path(final: Path) -> Path:
    return final.with_name(final.name + ".ns")


def _owners(final: Path) -> list[PubKey]:
    try:
        return [PubKey(ns) for ns in _owners_path(final).read_text(encoding="utf-8").split()]
    except FileNotFoundError:
        return []


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
