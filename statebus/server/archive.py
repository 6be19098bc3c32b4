"""Backups: ``statebus export`` writes a self-verifying archive of a node's signed ops; ``statebus
import`` checks one whole and then applies it to a node, verifying every op again.

The archive is a tar file (docs/operations.md, "Back up and restore"):

    manifest.json      what is inside, with hashes; signed by the exporting node's key
    ops.bin            the signed ops, in the store's order: each a 4-byte big-endian length, then the
                       op's canonical bytes (``statebus.oplog.encode_op``), exactly as stored
    blobs/<sha256>     the bytes of every blob an exported op's pointer names (``statebus.blobs``),
                       each named by the SHA-256 of its bytes, copied from the node's blob store

Rules:
1. Export reads one consistent snapshot of the store (:class:`~statebus.storage.sqlite.StoreSnapshot`,
   a read transaction), so it runs while the node serves and writes; it takes no lock.
2. The manifest names the format and its version, the node, the subtree, the snapshot's seq, and
   for every member its size and SHA-256; ``signature`` is the node key's Ed25519 signature of the
   manifest without it (canonical JSON: sorted keys, no spaces, UTF-8).
3. Import refuses the whole archive, changing nothing, unless every check passes first: only the
   members above, regular files, no duplicates; the manifest's signature; each member's size and
   hash; the op count; every op decodes and its own signature verifies for its author; every blob
   is named by the SHA-256 of its bytes and by some op's signed pointer, with the pointer's size.
4. Then the ops go through :class:`~statebus.federation.ingest.Ingest`, like a restore from a peer:
   signatures again, delegations, the owner-only rules. Ops already present count as duplicates, so
   an import can be repeated, and it merges into an existing node.
5. Ops folded into a compaction snapshot are not ops any more: the manifest lists those keys
   (``compacted``) and their snapshot's seq, and import reports them (docs/operations.md, "Limits").
6. Blobs: export copies each pointed-to blob once, checking its bytes against its name as it copies
   (the store's files are written once, so a later write never changes a copy). A blob this node does
   not hold (a replica still fetching it, or damaged on disk) is left out and listed in the manifest's
   ``blobs_missing``, and export says so. Import stores the blobs before it applies the ops, so a
   pointer never lands without its bytes; another namespace's blobs are charged to it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import re
import struct
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from statebus import __version__
from statebus.access.op_gate import OpGate
from statebus.blobs import BLOB_TYPE, BlobPointer, BlobStore
from statebus.errors import ArchiveInvalid, BadBlob, BadSignature, CliError, NotFound, StatebusError
from statebus.federation.ingest import Ingest
from statebus.federation.policy import check_pattern
from statebus.identity import atrest, keystore
from statebus.identity.keys import verify_signature
from statebus.identity.signing import check_signature
from statebus.keys import is_pubkey, namespace_of
from statebus.oplog import decode_op
from statebus.runtime import Node
from statebus.server.assembly import BLOBS_DIR
from statebus.storage.sqlite import STORE_FILE, StoreSnapshot
from statebus.types import PubKey

FORMAT: Final = "statebus-archive"
FORMAT_VERSION: Final = 1
MANIFEST: Final = "manifest.json"
OPS: Final = "ops.bin"
BLOBS: Final = "blobs/"
_BLOB_NAME = re.compile(r"^blobs/[0-9a-f]{64}$")
MAX_MANIFEST_BYTES: Final = 16 * 1024 * 1024
MAX_OP_BYTES: Final = 256 * 1024 * 1024
"""No single op is larger (a frame claiming more is damage, not data)."""
APPLY_CHUNK: Final = 2000
"""Ops handed to :class:`Ingest` at a time (each chunk is made durable before the next)."""


@dataclass
class ExportReport:
    path: Path
    node: str
    subtree: str
    seq: int
    ops: int = 0
    op_bytes: int = 0
    compacted: list[tuple[str, int]] = field(default_factory=list)
    blobs: int = 0
    blob_bytes: int = 0
    blobs_missing: list[str] = field(default_factory=list)


@dataclass
class Archive:
    """An archive that passed every check of rule 3 (but not yet Ingest's)."""

    manifest: dict[str, Any]
    ops: list[bytes]
    blobs: dict[str, bytes]
    blob_namespaces: dict[str, set[str]] = field(default_factory=dict)
    """The namespaces whose ops point to each blob (charged for it on import)."""


@dataclass
class ImportReport:
    node: str
    ops: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    compacted: int = 0
    blobs: int = 0


def canonical(manifest: dict[str, Any]) -> bytes:
    """The signed bytes of ``manifest``: itself without ``signature``, as canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------------- export


def export_archive(
    data_dir: str | os.PathLike[str], dest: str | os.PathLike[str], subtree: str | None = None
) -> ExportReport:
    """Write the archive of the node in ``data_dir`` (all its ops, or those under ``subtree``) to
    ``dest``, which must not exist. Safe while the node serves (rule 1).

    Raises:
        CliError: ``dest`` exists, or there is no node identity in ``data_dir``.
        InvalidKey / InvalidValue: ``subtree`` is not a subtree (``/~/notes/``, ``/<pubkey>/a/``).
        NotFound, StoreTooNew, StoreDamaged: the store cannot be read.
    """
    data, target = Path(data_dir), Path(dest)
    if not keystore.exists(data):
        raise CliError(f"no node identity in {data}: nothing to export")
    if target.exists():
        raise CliError(f"{target} exists: choose a new file name (an export never overwrites)")
    identity = keystore.load(data)
    pattern = "" if subtree in (None, "") else check_pattern(str(subtree), identity.pubkey)
    target.parent.mkdir(parents=True, exist_ok=True)
    key = atrest.key_for(data)  # StoreLocked if encrypted and not unlocked: never exports ciphertext
    with (
        StoreSnapshot(data / STORE_FILE, key=key) as snap,
        tempfile.TemporaryFile(dir=target.parent) as spool,
    ):
        report = ExportReport(target, identity.pubkey, pattern, snap.max_seq)
        digest = hashlib.sha256()
        pointed: dict[str, int] = {}
        marker = BLOB_TYPE.encode()
        for op in snap.ops(pattern):
            frame = struct.pack(">I", len(op.data)) + op.data
            spool.write(frame)
            digest.update(frame)
            report.ops += 1
            report.op_bytes += len(frame)
            if marker in op.data:
                pointer = _pointer(op.data)
                if pointer is not None:
                    pointed[pointer.hash] = pointer.size
        report.compacted = snap.compacted(pattern)
        store = BlobStore(data / BLOBS_DIR, max_bytes=1, sealer=atrest.blob_sealer(key))  # reads only
        blobs = _spool_blobs(store, pointed, spool, report)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "statebus": __version__,
            "node": identity.pubkey,
            "subtree": pattern,
            "seq": snap.max_seq,
            "ops": {
                "member": OPS,
                "count": report.ops,
                "bytes": report.op_bytes,
                "sha256": digest.hexdigest(),
            },
            "blobs": [{"member": BLOBS + h, "bytes": n} for h, n in blobs],
            "blobs_missing": report.blobs_missing,
            "compacted": [{"key": k, "seq": s} for k, s in report.compacted],
        }
        manifest["signature"] = base64.b64encode(identity.sign(canonical(manifest))).decode()
        spool.seek(0)
        _write_tar(target, manifest, spool, report.op_bytes, blobs)
    return report


def _pointer(data: bytes) -> BlobPointer | None:
    """The blob pointer a stored op's value is, or None (another value, or a malformed pointer)."""
    try:
        op = decode_op(data)
        if op.content_type == BLOB_TYPE and isinstance(op.body, bytes):
            return BlobPointer.decode(op.body)
    except StatebusError:
        pass
    return None


def _spool_blobs(
    store: BlobStore, pointed: dict[str, int], spool: IO[bytes], report: ExportReport
) -> list[tuple[str, int]]:
    """Append each pointed-to blob's bytes to ``spool``, checked against its name (rule 6); return
    ``(hash, size)`` of those copied, in the order they were appended."""
    copied: list[tuple[str, int]] = []
    for h in sorted(pointed):
        start = spool.tell()
        digest, size = hashlib.sha256(), 0
        try:
            with store.open(h) as f:
                while chunk := f.read(1 << 20):
                    spool.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
        except (NotFound, BadBlob):
            pass
        if digest.hexdigest() != h or size != pointed[h]:
            spool.seek(start)
            spool.truncate()
            report.blobs_missing.append(h)
            continue
        copied.append((h, size))
        report.blobs += 1
        report.blob_bytes += size
    return copied


def _write_tar(
    target: Path, manifest: dict[str, Any], spool: IO[bytes], size: int, blobs: list[tuple[str, int]]
) -> None:
    """The tar file, written beside ``target``, fsynced, then renamed onto it (never half there):
    ``spool`` holds ``ops.bin`` (``size`` bytes), then each blob's bytes in ``blobs``' order."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                body = json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
                tar.addfile(_member(MANIFEST, len(body)), io.BytesIO(body))
                tar.addfile(_member(OPS, size), spool)
                for h, n in blobs:
                    tar.addfile(_member(BLOBS + h, n), spool)
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(name, 0o600)  # the node's data: the owner's eyes only
        os.replace(name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(time.time())
    return info


# ---------------------------------------------------------------------- read and verify


def read_archive(path: str | os.PathLike[str]) -> Archive:
    """Open ``path`` and run every check of rule 3.

    Raises:
        ArchiveInvalid: the first check that failed, in one line (nothing was applied anywhere).
    """
    members: dict[str, bytes] = {}
    try:
        tar = tarfile.open(path, mode="r:*")  # noqa: SIM115 (closed below; its errors are told apart)
    except (tarfile.TarError, OSError) as exc:
        raise ArchiveInvalid(f"{path} is not a statebus archive (not a tar file: {exc})") from None
    with tar:
        try:
            for info in tar:
                name = info.name
                if not info.isfile():
                    raise ArchiveInvalid(f"{path}: member {name!r} is not a regular file")
                if name in members:
                    raise ArchiveInvalid(f"{path}: member {name!r} appears twice")
                if name not in (MANIFEST, OPS) and not _BLOB_NAME.match(name):
                    raise ArchiveInvalid(f"{path}: unexpected member {name!r}")
                limit = MAX_MANIFEST_BYTES if name == MANIFEST else None
                if limit is not None and info.size > limit:
                    raise ArchiveInvalid(f"{path}: the manifest is over {limit} bytes")
                f = tar.extractfile(info)
                assert f is not None  # a regular file
                members[name] = f.read()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ArchiveInvalid(f"{path}: the tar file is damaged ({exc})") from None
    manifest = _manifest(path, members)
    ops = _ops(path, manifest, members.get(OPS, b""))
    blobs = _blobs(path, manifest, members)
    namespaces: dict[str, set[str]] = {}
    for i, raw in enumerate(ops):
        try:
            op = decode_op(raw)
            check_signature(op)
        except StatebusError as exc:
            raise ArchiveInvalid(
                f"{path}: op {i + 1} of {len(ops)} is refused ({exc.code}: {exc.detail})"
            ) from None
        pointer = _pointer(raw) if op.content_type == BLOB_TYPE else None
        if pointer is not None and pointer.hash in blobs:
            if pointer.size != len(blobs[pointer.hash]):
                raise ArchiveInvalid(f"{path}: blob {pointer.hash} is not the size op {i + 1}'s pointer says")
            namespaces.setdefault(pointer.hash, set()).add(namespace_of(op.key))
    for h in blobs:
        if h not in namespaces:
            raise ArchiveInvalid(f"{path}: blob {h} is named by no op's pointer in the archive")
    return Archive(manifest, ops, blobs, namespaces)


def _manifest(path: str | os.PathLike[str], members: dict[str, bytes]) -> dict[str, Any]:
    if MANIFEST not in members:
        raise ArchiveInvalid(f"{path}: no {MANIFEST}: not a statebus archive")
    try:
        manifest = json.loads(members[MANIFEST])
    except (ValueError, RecursionError):
        raise ArchiveInvalid(f"{path}: {MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveInvalid(f"{path}: {MANIFEST} does not describe a {FORMAT}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArchiveInvalid(
            f"{path}: archive format version {version!r}; this statebus {__version__} reads version "
            f"{FORMAT_VERSION} (a newer archive needs a newer statebus)"
        )
    node, signature = manifest.get("node"), manifest.get("signature")
    if not isinstance(node, str) or not is_pubkey(node):
        raise ArchiveInvalid(f"{path}: the manifest names no node key")
    try:
        sig = base64.b64decode(str(signature), validate=True)
    except ValueError:
        sig = b""
    if not verify_signature(node, canonical(manifest), sig):
        raise ArchiveInvalid(f"{path}: the manifest's signature does not verify for node {node} (altered?)")
    return manifest


def _ops(path: str | os.PathLike[str], manifest: dict[str, Any], data: bytes) -> list[bytes]:
    info = manifest.get("ops")
    if not isinstance(info, dict) or info.get("member") != OPS:
        raise ArchiveInvalid(f"{path}: the manifest does not describe {OPS}")
    if len(data) != info.get("bytes") or hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise ArchiveInvalid(
            f"{path}: {OPS} does not match the manifest's size and SHA-256 (altered or truncated)"
        )
    ops = list(_frames(path, data))
    if len(ops) != info.get("count"):
        raise ArchiveInvalid(f"{path}: {OPS} holds {len(ops)} ops, the manifest says {info.get('count')}")
    return ops


def _frames(path: str | os.PathLike[str], data: bytes) -> Iterator[bytes]:
    at = 0
    while at < len(data):
        if at + 4 > len(data):
            raise ArchiveInvalid(f"{path}: {OPS} ends inside a frame header")
        (size,) = struct.unpack_from(">I", data, at)
        if size > MAX_OP_BYTES or at + 4 + size > len(data):
            raise ArchiveInvalid(f"{path}: {OPS} has a frame running past its end")
        yield data[at + 4 : at + 4 + size]
        at += 4 + size


def _blobs(
    path: str | os.PathLike[str], manifest: dict[str, Any], members: dict[str, bytes]
) -> dict[str, bytes]:
    listed = manifest.get("blobs")
    if not isinstance(listed, list):
        raise ArchiveInvalid(f"{path}: the manifest's blobs is not a list")
    present = {name for name in members if name.startswith(BLOBS)}
    wanted = {str(b.get("member")) if isinstance(b, dict) else "" for b in listed}
    if present != wanted:
        raise ArchiveInvalid(f"{path}: the blobs present do not match the manifest's list")
    blobs: dict[str, bytes] = {}
    for entry in listed:
        name = str(entry["member"])
        data = members[name]
        digest = hashlib.sha256(data).hexdigest()
        if name != BLOBS + digest or len(data) != entry.get("bytes"):
            raise ArchiveInvalid(f"{path}: blob {name} does not match its SHA-256 name or size")
        blobs[digest] = data
    return blobs


# ---------------------------------------------------------------------- import


async def import_archive(node: Node, archive: Archive, quota_bytes: int) -> ImportReport:
    """Apply a checked archive to ``node`` (rule 4): its blobs first, then its ops (rule 6);
    durable when this returns.

    Args:
        quota_bytes: the quota of other namespaces (``quota_bytes_per_remote_namespace``), as for a
            follow; the node's own namespace has none.

    Raises:
        QuotaExceeded: another namespace's ops would go over ``quota_bytes`` (those before are kept).
    """
    report = ImportReport(str(archive.manifest["node"]), ops=len(archive.ops))
    report.compacted = len(archive.manifest.get("compacted") or [])
    if archive.blobs and node.blobs is None:
        raise CliError("this node keeps no blobs (no data folder): the archive's blobs cannot be restored")
    for h, data in archive.blobs.items():
        charged: list[PubKey | None] = [
            PubKey(ns) for ns in sorted(archive.blob_namespaces.get(h, ())) if ns != node.local
        ]
        for ns in charged or [None]:  # the node's own blobs are charged to nobody
            assert node.blobs is not None
            node.blobs.put_bytes(data, expect=h, namespace=ns)
        report.blobs += 1
    ingest = Ingest(node, OpGate.for_node(node, quota_bytes), own=True)
    for raw in archive.ops:
        try:
            ns = namespace_of(decode_op(raw).key)
        except (StatebusError, TypeError):
            continue  # Ingest refuses it with the reason
        if ns != node.local:
            ingest.allow_namespace(ns)  # the owner asked for this data: as if followed
    for start in range(0, len(archive.ops), APPLY_CHUNK):
        result = await ingest.take(archive.ops[start : start + APPLY_CHUNK])
        report.applied += result.applied
        report.duplicates += result.duplicates
        report.reasons.extend(result.rejected[: 5 - len(report.reasons)])
    report.rejected = report.ops - report.applied - report.duplicates
    await node.flush()
    return report


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Archive",
    "BadSignature",
    "ExportReport",
    "ImportReport",
    "canonical",
    "export_archive",
    "import_archive",
    "read_archive",
]
