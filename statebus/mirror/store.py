"""MirrorStore: the mirror side. Opaque ciphertext objects per owner, under consent and a quota.

Layout: ``<data>/mirror/<owner pubkey>/<object id>``, one file per object (0600, folder 0700).

Rules:

1. Only owners named in ``mirror_for`` are served (consent, as a follow is); anyone else gets
   :class:`Forbidden` and nothing is written.
2. An owner's objects together stay within ``mirror_quota_bytes``: a put that would pass it raises
   :class:`QuotaExceeded` with the figures, and changes nothing (replacing an object counts only the
   difference).
3. A put is durable before it returns (written to a temporary file, fsynced, renamed, folder fsynced).
4. The store never interprets an object: ids are 32 hex characters, contents are bytes of at most
   :data:`~statebus.mirror.crypto.MAX_SEALED`.
5. A proof is ``sha256(nonce | object)`` with the caller's fresh nonce: only a store that holds the
   object's bytes can answer it.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from statebus.errors import Forbidden, InvalidValue, NotFound, QuotaExceeded, TooLarge
from statebus.keys import is_pubkey
from statebus.mirror.crypto import MAX_SEALED
from statebus.types import PubKey

MIRROR_DIR = "mirror"
_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    id: str
    size: int
    stored: float
    """When it was stored (Unix seconds): a mirror learns this."""


class MirrorStore:
    """The ciphertext objects this node keeps for the owners it mirrors.

    Args:
        data_dir: the node's data folder (objects go under ``<data>/mirror/``).
        owners: the pubkeys this node mirrors for (``Settings.mirror_for``).
        quota: bytes each owner may keep here (``Settings.mirror_quota_bytes``).
    """

    def __init__(self, data_dir: str | os.PathLike[str], owners: Collection[str], quota: int) -> None:
        self.root = Path(data_dir) / MIRROR_DIR
        self.owners = frozenset(owners)
        self.quota = quota
        self._lock = threading.Lock()
        self._used: dict[PubKey, int] = {}

    def consents(self, owner: str) -> bool:
        return owner in self.owners

    def _folder(self, owner: str) -> Path:
        if not is_pubkey(owner):
            raise InvalidValue("the owner is a 52-character pubkey")
        if owner not in self.owners:
            raise Forbidden(f"this node does not mirror for {owner} (not in its mirror_for setting)")
        return self.root / owner

    def _path(self, owner: str, oid: str) -> Path:
        if not _ID.fullmatch(oid):
            raise InvalidValue("a mirror object id is 32 lowercase hex characters")
        return self._folder(owner) / oid

    def used(self, owner: str) -> int:
        """Bytes ``owner`` keeps here."""
        folder = self._folder(owner)
        with self._lock:
            if owner not in self._used:
                self._used[owner] = sum(p.stat().st_size for p in folder.glob("*") if _ID.fullmatch(p.name))
            return self._used[owner]

    def put(self, owner: str, oid: str, data: bytes) -> ObjectInfo:
        path = self._path(owner, oid)
        if len(data) > MAX_SEALED:
            raise TooLarge(f"a mirror object is at most {MAX_SEALED} bytes")
        used = self.used(owner)
        with self._lock:
            old = path.stat().st_size if path.exists() else 0
            if used - old + len(data) > self.quota:
                raise QuotaExceeded(
                    f"mirror quota for {owner} is {self.quota} bytes (mirror_quota_bytes); it holds {used}, "
                    f"this object needs {len(data) - old} more"
                )
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{oid}.{os.getpid()}.{threading.get_ident()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            self._used[owner] = used - old + len(data)
        return ObjectInfo(oid, len(data), path.stat().st_mtime)

    def get(self, owner: str, oid: str) -> bytes:
        path = self._path(owner, oid)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no mirror object {oid} for {owner}") from None

    def delete(self, owner: str, oid: str) -> bool:
        path = self._path(owner, oid)
        used = self.used(owner)
        with self._lock:
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                return False
            self._used[owner] = used - size
        return True

    def listing(self, owner: str) -> list[ObjectInfo]:
        folder = self._folder(owner)
        out = []
        for p in sorted(folder.glob("*")):
            if _ID.fullmatch(p.name):
                st = p.stat()
                out.append(ObjectInfo(p.name, st.st_size, st.st_mtime))
        return out

    def proof(self, owner: str, oid: str, nonce: bytes) -> str:
        """``sha256(nonce | object)`` in hex: the answer to a storage challenge."""
        if not 16 <= len(nonce) <= 64:
            raise InvalidValue("a challenge nonce is 16 to 64 bytes")
        return hashlib.sha256(nonce + self.get(owner, oid)).hexdigest()
