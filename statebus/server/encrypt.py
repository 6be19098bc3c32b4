"""``statebus encrypt``: copy a plain data folder into a new folder encrypted at rest, the old one untouched.

Rules:

1. The source node is stopped: its store is opened (and so locked) for the whole copy; a running node
   makes this refuse with ``StoreInUse``.
2. The target is a new folder (absent or empty); the source's data is not changed (it is opened and
   closed as a node would: its WAL checkpointed). Replacing the source by
   the target, and destroying the source, is the owner's step afterwards (docs/storage.md says why:
   deleting a plain file does not wipe its blocks).
3. The copy is whole: the store page by page (``sqlcipher_export``: every op, snapshot and key row,
   compacted history included), every blob (resealed, with its quota charges), the identity (sealed),
   ``mirrors.json`` (sealed), and the folder's other files as they are. Nothing is copied in plaintext
   that the encrypted folder seals.
4. The key is the source identity's at-rest key (derived from the namespace root it holds), so the
   same phrase opens the result. A recovery phrase still waiting to be shown is refused: shown first.
5. The result is checked before this returns: the target store opens with the key and holds as many
   ops, snapshots and keys, up to the same sequence number, as the source.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from statebus.blobs import BlobStore
from statebus.errors import CliError
from statebus.identity import atrest, keystore
from statebus.mirror.push import STATE_FILE as MIRRORS_FILE
from statebus.mirror.push import MirrorTargets
from statebus.server.assembly import BLOBS_DIR
from statebus.storage import cipher
from statebus.storage.sqlite import STORE_FILE, SqliteStorage

SKIP = {STORE_FILE, f"{STORE_FILE}-wal", f"{STORE_FILE}-shm", f"{STORE_FILE}.lock", "node.json", BLOBS_DIR}
"""Top-level entries not copied as they are: the store and blobs (re-encrypted), the run file."""


@dataclass
class EncryptReport:
    target: Path
    pubkey: str
    seq: int
    ops: int
    snapshots: int
    blobs: int


def _counts(path: Path, key: bytes | None) -> tuple[int, int, int]:
    """Ops, snapshots and key rows of the store at ``path``."""
    conn = cipher.connect(path, key)
    try:
        ops, snaps, keys = (
            int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
            for table in ("ops", "snapshots", "keys")
        )
    finally:
        conn.close()
    return ops, snaps, keys


def encrypt_folder(source: Path, target: Path) -> tuple[EncryptReport, bytes]:
    """Copy the plain folder ``source`` into the new encrypted folder ``target`` (rules 1–5); return
    what was copied and the at-rest key (for the caller to store where the node will find it).

    Raises:
        CliError: ``source`` is encrypted already or has no node; ``target`` is not new; a phrase waits.
        StoreInUse: a node runs on ``source``.
    """
    source, target = Path(source), Path(target)
    if atrest.encrypted(source):
        raise CliError(f"{source} is encrypted at rest already")
    if not keystore.exists(source) or not (source / STORE_FILE).exists():
        raise CliError(f"no node in {source}: nothing to encrypt")
    if target.exists() and any(target.iterdir()):
        raise CliError(f"{target} is not empty: encrypt into a new folder")
    if source.resolve() in target.resolve().parents or target.resolve() == source.resolve():
        raise CliError(f"{target} is inside {source}: encrypt into a folder beside it")
    if keystore.phrase_pending(source):
        raise CliError(
            "a recovery phrase waits to be shown in the source folder: run `statebus phrase` first"
        )
    identity = keystore.load(source)
    key = atrest.derive_key(identity)
    store = SqliteStorage(source / STORE_FILE)  # rule 1: the lock, and a checkpointed, consistent file
    try:
        seq = store.max_seq()
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        atrest.write_marker(target, identity, key)
        atrest.remember(target, key)
        _copy_store(source / STORE_FILE, target / STORE_FILE, key)
        blobs = _copy_blobs(source / BLOBS_DIR, target / BLOBS_DIR, key)
        _copy_rest(source, target)
        keystore.save(target, identity, key=key)  # sealed (rule 3)
        if (source / MIRRORS_FILE).exists():
            mirrors = MirrorTargets(source)
            sealed = MirrorTargets(target)
            sealed.mirrors = mirrors.mirrors
            sealed.save()
        want = _counts(source / STORE_FILE, None)
    finally:
        store.close()
    check = SqliteStorage(target / STORE_FILE, key=key)  # rule 5: it opens (and is migrated, WAL set)
    try:
        got = _counts(target / STORE_FILE, key)
        if check.max_seq() != seq or got != want:
            raise CliError(
                f"the encrypted copy in {target} does not match its source ({got} != {want}); keep {source}"
            )
    finally:
        check.close()
    return EncryptReport(target, identity.pubkey, seq, want[0], want[1], blobs), key


def _copy_store(plain: Path, encrypted: Path, key: bytes) -> None:
    conn = cipher.exporter(plain)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute(f"ATTACH DATABASE ? AS enc KEY \"x'{key.hex()}'\"", (str(encrypted),))
        conn.execute("PRAGMA enc.auto_vacuum = INCREMENTAL")  # before its first table, as the store does
        conn.execute("SELECT sqlcipher_export('enc')")
        conn.execute(f"PRAGMA enc.user_version = {version}")
        conn.execute("DETACH DATABASE enc")
    finally:
        conn.close()


def _copy_blobs(plain_root: Path, sealed_root: Path, key: bytes) -> int:
    if not plain_root.is_dir():
        return 0
    plain = BlobStore(plain_root, max_bytes=1 << 62)
    sealed = BlobStore(sealed_root, max_bytes=1 << 62, sealer=atrest.blob_sealer(key))
    count = 0
    for h in sorted(plain.hashes()):
        sealed.adopt(plain.path(h), expect=h)
        owners = plain.path(h).with_name(h + ".ns")
        if owners.exists():
            sealed_file = sealed.file(h)
            shutil.copyfile(owners, sealed_file.with_name(sealed_file.name + ".ns"))
        count += 1
    return count


def _copy_rest(source: Path, target: Path) -> None:
    for entry in source.iterdir():
        if entry.name in SKIP or entry.name == MIRRORS_FILE or entry.name == keystore.IDENTITY_DIR:
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, target / entry.name)
    ids = keystore.identity_dir(source)
    for entry in ids.iterdir():  # the key file is sealed by the caller; the phrase file was refused
        if entry.name not in {keystore.KEY_FILE, keystore.PHRASE_FILE} and entry.is_file():
            keystore.identity_dir(target).mkdir(mode=0o700, exist_ok=True)
            shutil.copy2(entry, keystore.identity_dir(target) / entry.name)
