"""SqliteStorage: the durable storage adapter, one SQLite file in the node's data folder.

Layout: the node keeps ``<data>/store.sqlite3`` plus SQLite's ``store.sqlite3-wal`` and
``store.sqlite3-shm`` beside it while open (see docs/storage.md).

Durability (``durability=``, the node's setting of that name): ``"power"`` (the default) runs the WAL
journal with ``synchronous=FULL``, so a commit is fsynced to the WAL before ``append`` returns; an
acknowledged batch survives ``kill -9`` and power loss. ``"process"`` runs it with
``synchronous=NORMAL``: ``append`` returns once the commit is written to the WAL (in the kernel's
page cache, no fsync), which survives ``kill -9`` or a crash of the process but not a power cut or a
kernel crash; :meth:`SqliteStorage.sync` fsyncs the WAL and checkpoints it (the group committer
calls it at most ``SYNC_INTERVAL`` after a commit; SQLite's automatic checkpoints are off in this
mode, so a commit never waits for an fsync), and ``close`` checkpoints and fsyncs. The database is
created with ``auto_vacuum=INCREMENTAL`` and every ``compact`` runs ``incremental_vacuum``, so
folded ops give their pages back to the file system (at the next WAL checkpoint).

One process at a time: while open, the store holds an exclusive ``flock`` on ``store.sqlite3.lock``
(which names the holder's pid); a second opener, in this process or another, gets ``StoreInUse``.
Two writers would each number ops from their own sequence counter. The kernel drops the lock when
the holder dies, ``kill -9`` included, so a stale lock file never blocks a restart.

Schema: ``PRAGMA user_version`` holds the store's schema version (:data:`SCHEMA_VERSION`). Opening
an older store migrates it in one transaction (:data:`MIGRATIONS`, one step per version); a store
from a newer statebus is refused with :class:`StoreTooNew`, untouched, naming the statebus that wrote
it (the ``meta`` table's ``written_by``). Back the data up before an upgrade (``statebus export``).

Integrity: opening an existing store runs ``PRAGMA quick_check`` (about 0.1 s per 100k ops, measured
in docs/storage.md; ``check="full"`` runs ``integrity_check``) and refuses a damaged file with
:class:`StoreDamaged`, one line naming the file and the first problem, before anything is served.

Encryption at rest: ``key=`` (32 bytes) opens or creates the file as a SQLCipher database
(:mod:`statebus.storage.cipher`): every page of it and of its WAL is encrypted and authenticated. A
wrong key, no key for an encrypted file, or a key for a plain one is refused with ``StoreLocked``
before anything is changed; :class:`StoreSnapshot` takes the same ``key=``.

Threads: one write connection behind a lock serves ``append`` and ``compact``; reads borrow a
connection from a small pool and run in a read transaction, so they see one consistent state and
never wait for the writer (WAL lets readers and one writer run at once).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from statebus.errors import (
    NotFound,
    ShuttingDown,
    StoreDamaged,
    StoreInUse,
    StoreTooNew,
    StoreUnsupported,
    VersionConflict,
)
from statebus.storage import cipher
from statebus.storage.base import KeyRecord, Snapshot, StoredOp
from statebus.storage.ranges import check_batch, pattern_bounds, walk_children
from statebus.types import Key, Seq

STORE_FILE = "store.sqlite3"
"""The database's file name inside a node's data folder."""

try:
    __version__ = importlib.metadata.version("statebus-server")  # storage may not import statebus itself
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare source tree
    __version__ = "0+unknown"

SCHEMA_VERSION = 2
"""The store's schema version (``PRAGMA user_version``). 1: ops, snapshots, keys (statebus 0.1.0
before issue 17); 2: adds ``meta`` (``written_by``: the statebus version that last opened it)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ops (
    seq INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    version TEXT NOT NULL,
    data BLOB NOT NULL,
    "exists" INTEGER NOT NULL,
    UNIQUE (key, version)
);
CREATE INDEX IF NOT EXISTS ops_key_seq ON ops (key, seq);
CREATE TABLE IF NOT EXISTS snapshots (
    key TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_seq ON snapshots (seq);
CREATE TABLE IF NOT EXISTS keys (
    key TEXT PRIMARY KEY,
    "exists" INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keys_live ON keys (key) WHERE "exists" = 1;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

MIGRATIONS: dict[int, str] = {
    1: "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
}
"""``MIGRATIONS[v]`` takes a store from schema ``v`` to ``v + 1`` (statements split on ``;``)."""
_SET_META = (
    "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)

_INSERT_OP = 'INSERT INTO ops (seq, key, version, data, "exists") VALUES (?, ?, ?, ?, ?)'
_UPSERT_KEY = (
    'INSERT INTO keys (key, "exists", last_seq) VALUES (?, ?, ?) '
    'ON CONFLICT (key) DO UPDATE SET "exists" = excluded."exists", last_seq = excluded.last_seq'
)
_UPSERT_SNAPSHOT = (
    "INSERT INTO snapshots (key, seq, data) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET seq = excluded.seq, data = excluded.data"
)
_OP_COLUMNS = 'seq, key, version, data, "exists"'

OpRow = tuple[int, str, str, bytes, int]

CHECKS = {"quick": "quick_check", "full": "integrity_check", "none": ""}
"""The integrity checks an existing store can be opened with (see :class:`SqliteStorage`)."""

DURABILITY = {"power": "FULL", "process": "NORMAL"}
"""The durability modes a store can be opened with, and the ``synchronous`` pragma of each."""

_SEQ_WALK_MAX = 10_000
"""A subtree scan whose cursor is at most this far behind walks the log by sequence number."""
_SMALL_SUBTREE = 1_000
"""Below this many keys, a subtree scan from far back walks the subtree's keys instead."""


class SqliteStorage:
    """A durable :class:`~statebus.storage.base.Storage` in one SQLite database file.

    >>> import tempfile
    >>> store = SqliteStorage.open_folder(tempfile.mkdtemp())
    >>> store.append([StoredOp(seq=1, key="/ns/a/b", version="1-x", data=b"op")])
    >>> store.children("/ns/", after="", limit=10)
    ['a/']
    >>> store.close()

    Args:
        path: The database file; created (with its schema) if missing.
        timeout: Seconds a connection waits for a lock held by another connection.
        check: ``"quick"`` (``PRAGMA quick_check``, the default), ``"full"`` (``integrity_check``)
            or ``"none"``: the check an existing file must pass before it is opened.

    Raises:
        StoreDamaged: the file fails the check, or is not a database at all.
        StoreInUse: another open store holds its lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 10.0,
        check: str = "quick",
        durability: str = "power",
        key: bytes | None = None,
    ) -> None:
        if check not in CHECKS:
            raise ValueError(f"check must be one of {', '.join(CHECKS)}, not {check!r}")
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {', '.join(DURABILITY)}, not {durability!r}")
        self.durability = durability
        """``"power"``: ``append`` fsyncs; ``"process"``: call :meth:`sync` (the committer does)."""
        self.path = Path(path)
        self._timeout = timeout
        self._wal_path = self.path.with_name(self.path.name + "-wal")
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._all_readers: list[sqlite3.Connection] = []
        self._closed = False
        self._key = key
        self._lock_fd = _lock_store(self.path)
        writer: sqlite3.Connection | None = None
        try:
            cipher.check_kind(self.path, key)
            is_new = not self.path.exists()
            writer = self._writer = self._connect()
            if not is_new and key is not None:
                _check_key(writer, self.path)
            if not is_new and check != "none":
                _check(writer, self.path, CHECKS[check])
            self._create_schema()
            row = writer.execute("SELECT MAX(last_seq) FROM keys").fetchone()
        except cipher.DATABASE_ERRORS as exc:
            _abandon(writer, self._lock_fd)
            raise StoreDamaged(_damaged(self.path, str(exc))) from None
        except BaseException:
            _abandon(writer, self._lock_fd)
            raise
        if is_new:
            _fsync_dir(self.path.parent)  # the new file's directory entry survives power loss too
        self._max_seq: Seq = int(row[0] or 0)

    @classmethod
    def open_folder(cls, data_dir: str | os.PathLike[str]) -> SqliteStorage:
        """Open (creating it if needed) the store of a node's data folder: ``<data>/store.sqlite3``."""
        folder = Path(data_dir)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / STORE_FILE)

    def append(self, batch: Sequence[StoredOp]) -> None:
        """Store a batch of ops in one transaction, fsynced before this returns.

        Raises:
            VersionConflict: a ``(key, version)`` is already stored or repeats in the batch;
                nothing of the batch is written.
            InvalidOp: sequence numbers do not increase past :meth:`max_seq`.
        """
        if not batch:
            return
        with self._write_lock:
            self._check_open()
            check_batch(batch, self._max_seq)
            latest = {op.key: (op.key, int(op.exists), op.seq) for op in batch}
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    _INSERT_OP, [(op.seq, op.key, op.version, op.data, int(op.exists)) for op in batch]
                )
                conn.executemany(_UPSERT_KEY, list(latest.values()))
                conn.execute("COMMIT")
            except cipher.INTEGRITY_ERRORS:
                conn.execute("ROLLBACK")
                raise VersionConflict(self._conflict_detail(batch)) from None
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._max_seq = batch[-1].seq

    def load(self, key: Key) -> KeyRecord | None:
        """The snapshot and later ops of ``key`` (one consistent read); None if never written."""
        with self._reading() as conn:
            if conn.execute("SELECT 1 FROM keys WHERE key = ?", (key,)).fetchone() is None:
                return None
            row = conn.execute("SELECT seq, data FROM snapshots WHERE key = ?", (key,)).fetchone()
            rows = conn.execute(
                f"SELECT {_OP_COLUMNS} FROM ops WHERE key = ? ORDER BY seq", (key,)
            ).fetchall()
        snapshot = Snapshot(key=key, seq=row[0], data=row[1]) if row else None
        return KeyRecord(snapshot=snapshot, ops=[_op(r) for r in rows])

    def scan(self, pattern: str, after: Seq, limit: int) -> list[StoredOp]:
        """Ops with ``seq > after`` whose key matches ``pattern``, in sequence order (indexed)."""
        if limit <= 0:
            return []
        select = f"SELECT {_OP_COLUMNS} FROM ops"
        bounds = pattern_bounds(pattern)
        with self._reading() as conn:
            if pattern == "":
                rows = conn.execute(f"{select} WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
            elif bounds is None:
                rows = conn.execute(
                    f"{select} WHERE key = ? AND seq > ? ORDER BY seq LIMIT ?", (pattern, after, limit)
                )
            else:
                # Walk the log from the cursor when it is recent or the subtree is big; walk the
                # subtree's keys (then sort) when it is small and the cursor is far back.
                by_key = self._max_seq - after > _SEQ_WALK_MAX and _is_small(conn, bounds)
                index = "INDEXED BY ops_key_seq" if by_key else ""
                rows = conn.execute(
                    f"{select} {index} WHERE key > ? AND key < ? AND seq > ? ORDER BY seq LIMIT ?",
                    (*bounds, after, limit),
                )
            return [_op(r) for r in rows.fetchall()]

    def children(self, prefix: Key, after: str, limit: int) -> list[str]:
        """The names directly under ``prefix`` holding an existing key: one indexed query each.

        Raises:
            InvalidKey: ``prefix`` does not end in ``/``.
        """
        with self._reading() as conn:

            def first_live(low: str, inclusive: bool, high: str) -> str | None:
                op = ">=" if inclusive else ">"
                row = conn.execute(
                    f'SELECT key FROM keys WHERE "exists" = 1 AND key {op} ? AND key < ? '
                    "ORDER BY key LIMIT 1",
                    (low, high),
                ).fetchone()
                return None if row is None else str(row[0])

            return walk_children(prefix, after, limit, first_live)

    def compact(self, snapshot: Snapshot) -> None:
        """Replace the ops of ``snapshot.key`` up to ``snapshot.seq`` by the snapshot and give
        their pages back (``incremental_vacuum``). An older snapshot than the stored one changes
        nothing. A snapshot that says whether its key exists starts a key never written.

        Raises:
            NotFound: the key was never written (and the snapshot does not say whether it exists).
        """
        with self._write_lock:
            self._check_open()
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("SELECT 1 FROM keys WHERE key = ?", (snapshot.key,)).fetchone() is None:
                    if snapshot.exists is None:
                        raise NotFound(f"cannot compact {snapshot.key!r}: it was never written")
                    conn.execute(_UPSERT_KEY, (snapshot.key, int(snapshot.exists), snapshot.seq))
                row = conn.execute("SELECT seq FROM snapshots WHERE key = ?", (snapshot.key,)).fetchone()
                if row is None or row[0] <= snapshot.seq:
                    conn.execute(_UPSERT_SNAPSHOT, (snapshot.key, snapshot.seq, snapshot.data))
                    conn.execute("DELETE FROM ops WHERE key = ? AND seq <= ?", (snapshot.key, snapshot.seq))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            # executescript steps the pragma to the end (``execute`` frees one page per call).
            if conn.execute("PRAGMA freelist_count").fetchone()[0]:
                conn.executescript("PRAGMA incremental_vacuum;")

    def horizon(self, pattern: str) -> Seq:
        """The highest snapshot sequence number among keys matching ``pattern`` (0 if none)."""
        bounds = pattern_bounds(pattern)
        with self._reading() as conn:
            if pattern == "":
                row = conn.execute("SELECT MAX(seq) FROM snapshots").fetchone()
            elif bounds is None:
                row = conn.execute("SELECT MAX(seq) FROM snapshots WHERE key = ?", (pattern,)).fetchone()
            else:
                row = conn.execute(
                    "SELECT MAX(seq) FROM snapshots WHERE key > ? AND key < ?", bounds
                ).fetchone()
        return int(row[0] or 0)

    def probe(self) -> None:
        """One small real write (the header page, ``user_version`` rewritten unchanged), committed
        like an ``append``: it succeeds once the disk takes writes again. Raises what SQLite raises
        (``database or disk is full``)."""
        with self._write_lock:
            self._check_open()
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                conn.execute(f"PRAGMA user_version = {version}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def sync(self) -> None:
        """fsync the WAL: every batch ``append`` returned before this call then survives a power cut
        too. Needed only in ``"process"`` durability (in ``"power"`` each commit is already
        fsynced), where it then checkpoints the WAL into the database (``PASSIVE``: both files
        fsynced), so the WAL holds about one interval of commits. Under the write lock, so no
        commit runs meanwhile. Raises OSError or sqlite3.Error."""
        with self._write_lock:
            self._check_open()
            try:
                fd = os.open(self._wal_path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return  # no WAL: everything is in the main file, which checkpoints fsync
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if self.durability == "process":
                # moves the WAL into the database (fsyncing both), so the next commit starts
                # the WAL over: it holds at most about a second of commits
                self._writer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def max_seq(self) -> Seq:
        """The highest sequence number ever appended (0 when empty); survives compaction."""
        return self._max_seq

    def close(self) -> None:
        """Close every connection; the last close checkpoints the WAL into the main file."""
        with self._write_lock, self._pool_lock:
            if self._closed:
                return
            self._closed = True
            for conn in self._all_readers:
                conn.close()
            self._idle.clear()
            self._all_readers.clear()
            try:
                self._writer.execute("PRAGMA optimize")
            finally:
                self._writer.close()
                os.close(self._lock_fd)  # releases the flock

    def _connect(self) -> sqlite3.Connection:
        return cipher.connect(
            self.path, self._key, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )

    def _create_schema(self) -> None:
        conn = self._writer
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:  # before any pragma that could change the file
            raise StoreTooNew(_too_new(conn, self.path, version))
        # auto_vacuum only takes effect before the first table exists: set it first, always.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreUnsupported(f"{self.path} cannot use WAL mode (journal_mode is {mode})")
        conn.execute(f"PRAGMA synchronous = {DURABILITY[self.durability]}")
        if self.durability == "process":
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # sync() checkpoints instead
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            conn.execute("VACUUM")  # a file made without it: convert once (rewrites the file)
        conn.execute("BEGIN IMMEDIATE")
        try:
            has_ops = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ops'"
            ).fetchone()
            if version == 0 and has_ops is not None:
                version = 1  # made before the version was recorded: schema 1
            if has_ops is not None:
                for step in range(version, SCHEMA_VERSION):
                    for statement in MIGRATIONS[step].split(";"):
                        if statement.strip():
                            conn.execute(statement)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute(_SET_META, ("written_by", f"statebus {__version__}"))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """Borrow a read connection and hold one read transaction (one snapshot) on it."""
        with self._pool_lock:
            self._check_open()
            if self._idle:
                conn = self._idle.pop()
            else:
                conn = self._connect()
                conn.execute("PRAGMA query_only = 1")
                self._all_readers.append(conn)
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            except cipher.DATABASE_ERRORS as exc:
                if "malformed" not in str(exc):
                    raise
                raise StoreDamaged(_damaged(Path(self.path.name), str(exc), opening=False)) from None
            finally:
                conn.execute("COMMIT")
        finally:
            with self._pool_lock:
                if not self._closed:
                    self._idle.append(conn)

    def _check_open(self) -> None:
        if self._closed:
            raise ShuttingDown(f"the store {self.path.name} is closed")

    def _conflict_detail(self, batch: Sequence[StoredOp]) -> str:
        for op in batch:
            found = self._writer.execute(
                "SELECT 1 FROM ops WHERE key = ? AND version = ?", (op.key, op.version)
            ).fetchone()
            if found is not None:
                return f"version {op.version!r} of {op.key!r} is already stored"
        return "a version in the batch is already stored"


def _abandon(writer: sqlite3.Connection | None, lock_fd: int) -> None:
    if writer is not None:
        writer.close()
    os.close(lock_fd)


def _check_key(conn: sqlite3.Connection, path: Path) -> None:
    """Read the first page under the key (SQLCipher checks its HMAC): StoreLocked if it does not open."""
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except cipher.DATABASE_ERRORS:
        raise cipher.wrong_key(path) from None


def _check(conn: sqlite3.Connection, path: Path, pragma: str) -> None:
    """Run ``PRAGMA quick_check``/``integrity_check``; raise StoreDamaged unless it says ok."""
    rows = conn.execute(f"PRAGMA {pragma}(1)").fetchall()
    if [tuple(r) for r in rows] != [("ok",)]:
        raise StoreDamaged(_damaged(path, str(rows[0][0]) if rows else "no answer"))


def _too_new(conn: sqlite3.Connection, path: Path, version: int) -> str:
    """The refusal of a store whose schema is newer than this statebus reads."""
    writer = "a newer statebus"
    with contextlib.suppress(*cipher.DATABASE_ERRORS):
        row = conn.execute("SELECT value FROM meta WHERE name = 'written_by'").fetchone()
        if row is not None:
            writer = str(row[0])[:60]
    return (
        f"the store {path} has schema version {version}, written by {writer}; this statebus "
        f"{__version__} reads schema {SCHEMA_VERSION} at most. It was not opened or changed: run the "
        "newer statebus (downgrades are not supported; restore an export made before the upgrade)"
    )


def _damaged(path: Path, problem: str, *, opening: bool = True) -> str:
    first = " ".join(problem.split())[:200]
    what = "it was not opened" if opening else "stop the node"
    return (
        f"the store {path} is damaged ({first}); {what}. Move it away and take the data back "
        f"with `statebus restore --from URL`, or restore a backup"
    )


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_small(conn: sqlite3.Connection, bounds: tuple[str, str]) -> bool:
    """Whether the subtree holds fewer than ``_SMALL_SUBTREE`` keys (a bounded index count)."""
    row = conn.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM keys WHERE key > ? AND key < ? LIMIT ?)",
        (*bounds, _SMALL_SUBTREE),
    ).fetchone()
    return int(row[0]) < _SMALL_SUBTREE


def _op(row: OpRow) -> StoredOp:
    seq, key, version, data, exists = row
    return StoredOp(seq=seq, key=key, version=version, data=bytes(data), exists=bool(exists))


def _lock_store(path: Path) -> int:
    """Take the exclusive lock of the store at ``path``; return its file descriptor.

    Raises:
        StoreInUse: another open store (any process) holds it.
    """
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 16, 0).decode("ascii", "replace").strip()
        os.close(fd)
        holder = f"process {pid}" if pid.isdigit() else "another process"
        raise StoreInUse(f"the store {path} is open in {holder}; stop that node first") from None
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


class StoreSnapshot:
    """A consistent, read-only view of a store file, for ``statebus export``: it takes no lock, so
    the node may go on serving (and writing) from the same file while it is read. WAL gives this
    reader one snapshot, fixed by its first read, for as long as it is open.

    Args:
        path: the store file (``<data>/store.sqlite3``).
        key: the at-rest key of an encrypted store (None: a plain one).

    Raises:
        NotFound: there is no store at ``path``.
        StoreTooNew: the store's schema is newer than this statebus reads.
        StoreDamaged: the file is not a database.
        StoreLocked: the store is encrypted and ``key`` is None or wrong (or plain and a key is given).
    """

    def __init__(self, path: str | os.PathLike[str], *, key: bytes | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise NotFound(f"no store at {self.path}")
        cipher.check_kind(self.path, key)
        uri = f"file:{self.path.resolve().as_posix().replace('?', '%3F').replace('#', '%23')}?mode=ro"
        self._conn = cipher.connect(uri, key, uri=True, isolation_level=None, check_same_thread=False)
        try:
            if key is not None:
                _check_key(self._conn, self.path)
            self._conn.execute("PRAGMA query_only = 1")
            self._conn.execute("BEGIN")
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreTooNew(_too_new(self._conn, self.path, version))
            row = self._conn.execute("SELECT MAX(last_seq) FROM keys").fetchone()  # fixes the snapshot
        except cipher.DATABASE_ERRORS as exc:
            self._conn.close()
            raise StoreDamaged(_damaged(self.path, str(exc))) from None
        except BaseException:
            self._conn.close()
            raise
        self.max_seq: Seq = int(row[0] or 0)
        """The highest sequence number in the snapshot."""

    def ops(self, pattern: str, chunk: int = 5000) -> Iterator[StoredOp]:
        """The snapshot's ops under ``pattern`` (``""``: all; a subtree ``/ns/a/``), in seq order."""
        bounds = pattern_bounds(pattern)
        after = 0
        while True:
            if bounds is None:
                rows = self._conn.execute(
                    f"SELECT {_OP_COLUMNS} FROM ops WHERE seq > ? ORDER BY seq LIMIT ?", (after, chunk)
                ).fetchall()
            else:
                rows = self._conn.execute(
                    f"SELECT {_OP_COLUMNS} FROM ops WHERE key > ? AND key < ? AND seq > ? "
                    "ORDER BY seq LIMIT ?",
                    (*bounds, after, chunk),
                ).fetchall()
            yield from (_op(r) for r in rows)
            if len(rows) < chunk:
                return
            after = rows[-1][0]

    def compacted(self, pattern: str) -> list[tuple[Key, Seq]]:
        """Keys under ``pattern`` whose earlier ops were folded into a snapshot, with its seq."""
        bounds = pattern_bounds(pattern)
        if bounds is None:
            rows = self._conn.execute("SELECT key, seq FROM snapshots ORDER BY key").fetchall()
        else:
            rows = self._conn.execute(
                "SELECT key, seq FROM snapshots WHERE key > ? AND key < ? ORDER BY key", bounds
            ).fetchall()
        return [(str(k), int(s)) for k, s in rows]

    def snapshots(
        self, pattern: str, want: Callable[[Key, Seq], bool] | None = None
    ) -> list[tuple[Snapshot, StoredOp | None]]:
        """The compaction snapshots under ``pattern`` (those ``want(key, seq)`` accepts), each with
        the first op of its key after it (None if it has none), by key (for the encrypted mirror)."""
        bounds = pattern_bounds(pattern) or ("", "\U0010ffff")
        rows = self._conn.execute(
            "SELECT key, seq FROM snapshots WHERE key > ? AND key < ? ORDER BY key", bounds
        ).fetchall()
        out: list[tuple[Snapshot, StoredOp | None]] = []
        for key, seq in rows:
            if want is not None and not want(key, seq):
                continue
            (data,) = self._conn.execute("SELECT data FROM snapshots WHERE key = ?", (key,)).fetchone()
            first = self._conn.execute(
                f"SELECT {_OP_COLUMNS} FROM ops WHERE key = ? AND seq > ? ORDER BY seq LIMIT 1", (key, seq)
            ).fetchone()
            snap = Snapshot(key=str(key), seq=int(seq), data=bytes(data))
            out.append((snap, None if first is None else _op(first)))
        return out

    def close(self) -> None:
        with contextlib.suppress(*cipher.ERRORS):
            self._conn.execute("COMMIT")
        self._conn.close()

    def __enter__(self) -> StoreSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
