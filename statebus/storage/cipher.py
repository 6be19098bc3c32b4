"""The store encrypted at rest: SQLCipher connections keyed from the seed (docs/storage.md).

Rules:

1. A store opened with a key is a SQLCipher 4 database: every page of the file, of its WAL and its free
   pages is encrypted (AES-256-CBC, a random IV per page write) and authenticated (HMAC-SHA512 per page);
   its first 16 bytes are a random salt. The key is the raw 32-byte at-rest key
   (``PRAGMA key = "x'…'"``, no passphrase stretching: the key is already uniformly random).
2. The key is the first statement on every connection; nothing is read before it.
3. Plain and encrypted files tell themselves apart by their first 16 bytes (``SQLite format 3\\0``), so
   an encrypted store opened without a key, or a plain one with a key, is refused with
   :class:`StoreLocked` before anything is read or written; a wrong key is refused by SQLCipher's first
   page HMAC, also as :class:`StoreLocked`.
4. ``sqlcipher3`` is a drop-in for :mod:`sqlite3` (the same DB-API), but its exceptions are its own
   classes: catch :data:`DATABASE_ERRORS` / :data:`INTEGRITY_ERRORS`, never ``sqlite3.*`` alone.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, cast

import sqlcipher3

from statebus.errors import StoreLocked

KEY_BYTES = 32
SQLITE_MAGIC = b"SQLite format 3\x00"

DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.DatabaseError, sqlcipher3.DatabaseError)
"""``sqlite3.DatabaseError`` of either driver."""
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, sqlcipher3.IntegrityError)
"""``sqlite3.IntegrityError`` of either driver."""
ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, sqlcipher3.Error)
"""``sqlite3.Error`` of either driver."""


def is_plain(path: Path) -> bool | None:
    """True: a plain SQLite file; False: not one (encrypted, or not a database); None: absent or empty."""
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return None
    if not head:
        return None
    return head == SQLITE_MAGIC


def check_kind(path: Path, key: bytes | None) -> None:
    """Refuse (rule 3) an encrypted store opened without a key, or a plain one opened with a key."""
    plain = is_plain(path)
    if plain is None:
        return
    if key is None and not plain:
        raise StoreLocked(
            f"the store {path} is encrypted at rest (or is not a database) and no key was given: unlock "
            "the data folder (docs/storage.md, 'Encryption at rest')"
        )
    if key is not None and plain:
        raise StoreLocked(f"the store {path} is not encrypted, but a key was given; nothing was changed")


def connect(path: str | os.PathLike[str], key: bytes | None, **kwargs: Any) -> sqlite3.Connection:
    """A connection to ``path``: plain :mod:`sqlite3` without a key, SQLCipher keyed with ``key``."""
    if key is None:
        return cast(sqlite3.Connection, sqlite3.connect(path, **kwargs))
    if len(key) != KEY_BYTES:
        raise ValueError("an at-rest key is 32 bytes")
    conn = cast(sqlite3.Connection, sqlcipher3.connect(path, **kwargs))
    try:
        conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
    except BaseException:
        conn.close()
        raise
    return conn


def exporter(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A SQLCipher connection to the plain store at ``path``, without a key: the one that can
    ``ATTACH … KEY`` an encrypted database and ``sqlcipher_export`` into it (``statebus encrypt``)."""
    return cast(sqlite3.Connection, sqlcipher3.connect(path, isolation_level=None))


def wrong_key(path: Path) -> StoreLocked:
    """The refusal of a store whose pages do not authenticate under the key given."""
    return StoreLocked(
        f"the store {path} does not open with the key given (a wrong key, or a damaged file); nothing "
        "was changed"
    )
