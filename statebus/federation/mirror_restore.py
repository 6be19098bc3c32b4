"""Restore from a mirror: the whole namespace back from ciphertext, with the phrase alone.

After ``statebus init --recover`` the node holds its namespace root again, so it derives the mirror
key (:class:`~statebus.mirror.crypto.MirrorCipher`), fetches the sealed manifest from the mirror,
then every segment and blob part it names, and:

1. checks each object's sha256 against the manifest and opens it (authenticated decryption): a
   changed, truncated, swapped or stale object is refused with :class:`MirrorTampered` naming it
   (``seg/41``), and nothing of it is applied;
2. passes the ops through the same :class:`~statebus.federation.ingest.Ingest` as every restore
   (``own=True``): every op is verified against the owner's key and delegation records, so even a
   mirror that knew the key could not add an op the owner did not sign;
3. stores the blobs the ops point to, each checked against its sha256 (the blob store's ``expect``);
4. puts back the compaction snapshots (the last pushed one of each key, its batch checked like a
   segment and signed by the owner's key) in place of the ops they folded, so a key compacted
   between two pushes comes back whole (:meth:`~statebus.runtime.Node.adopt_snapshots`);
5. records the mirror in ``mirrors.json`` with the restored manifest and a cursor at the restored
   store's end, so the next push appends new segments after the old ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from statebus.access.op_gate import OpGate
from statebus.errors import MirrorTampered, RemoteError, StatebusError
from statebus.federation.ingest import Ingest
from statebus.identity import atrest
from statebus.identity.keys import Identity, verify_signature
from statebus.mirror.client import MirrorClient
from statebus.mirror.crypto import MirrorCipher
from statebus.mirror.objects import (
    MANIFEST,
    Manifest,
    SnapshotRow,
    blob_part_name,
    segment_name,
    snapshots_name,
    unpack_segment,
    unpack_snapshots,
)
from statebus.mirror.push import MirrorTargets
from statebus.runtime import Node

log = logging.getLogger("statebus.federation")

Progress = Callable[[str], None]


@dataclass
class MirrorRestoreReport:
    url: str
    segments: int = 0
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    blobs: int = 0
    snapshots: int = 0
    """Compaction snapshots put back."""
    rejected: list[str] = field(default_factory=list)
    bytes_moved: int = 0
    error: str = ""
    failed_object: str = ""
    """The object (``seg/41``, ``manifest``) that failed its check, if one did."""


async def restore_from_mirror(
    node: Node,
    identity: Identity,
    url: str,
    *,
    targets: MirrorTargets | None = None,
    progress: Progress | None = None,
    client: MirrorClient | None = None,
) -> MirrorRestoreReport:
    """Take the namespace back from the mirror at ``url``. Never raises for what the mirror does:
    the report says it (with the failing object)."""
    report = MirrorRestoreReport(url.rstrip("/"))
    cipher = MirrorCipher(identity)
    own = client or MirrorClient(report.url, node.local, identity)
    ingest = Ingest(node, OpGate.for_node(node, 0), own=True)
    name = MANIFEST
    try:
        manifest = Manifest.decode(
            cipher.open(MANIFEST, await own.get(cipher.object_id(MANIFEST))), node.local
        )
        total = len(manifest.segments)
        for entry in manifest.segments:
            name = segment_name(entry.index)
            sealed = await own.get(cipher.object_id(name))
            if hashlib.sha256(sealed).hexdigest() != entry.sealed_sha256:
                raise MirrorTampered(f"{name}: the mirror serves other bytes than were pushed")
            ops = unpack_segment(name, cipher.open(name, sealed), entry)
            result = await ingest.take(ops, peer=None)
            report.segments += 1
            report.received += len(ops)
            report.applied += result.applied
            report.duplicates += result.duplicates
            report.rejected.extend(result.rejected[: max(0, 10 - len(report.rejected))])
            if progress is not None:
                progress(
                    f"segment {report.segments}/{total}: {report.received} ops, {report.applied} applied"
                )
        for h, parts in manifest.blobs.items():
            chunks = []
            for j, want in enumerate(parts):
                name = blob_part_name(h, j)
                sealed = await own.get(cipher.object_id(name))
                if hashlib.sha256(sealed).hexdigest() != want:
                    raise MirrorTampered(f"{name}: the mirror serves other bytes than were pushed")
                chunks.append(cipher.open(name, sealed))
            if node.blobs is not None:
                await asyncio.to_thread(node.blobs.put_bytes, b"".join(chunks), expect=h)
                report.blobs += 1
            if progress is not None:
                progress(f"blob {report.blobs}/{len(manifest.blobs)}")
        latest: dict[str, SnapshotRow] = {}
        for index, digest, count in manifest.snapshots:
            name = snapshots_name(index)
            sealed = await own.get(cipher.object_id(name))
            if hashlib.sha256(sealed).hexdigest() != digest:
                raise MirrorTampered(f"{name}: the mirror serves other bytes than were pushed")
            rows = unpack_snapshots(
                name,
                cipher.open(name, sealed),
                index,
                count,
                lambda body, sig: verify_signature(node.local, body, sig),
            )
            latest.update((row[0], row) for row in rows)
        name = "snapshots"
        missing = await node.adopt_snapshots(list(latest.values()))
        report.snapshots = len(latest) - len(missing)
        if missing:
            log.warning("restore: %d snapshots name keys with no op on the mirror", len(missing))
        if progress is not None and latest:
            progress(f"{report.snapshots} compaction snapshots put back")
        await node.flush()
        if targets is not None:
            state = targets.add(report.url)
            state.snapshots = _local_snapshots(node)
            state.manifest = manifest.encode().decode()
            state.cursor = node.seq
            state.last_push = manifest.pushed
            targets.save()
    except MirrorTampered as exc:
        report.error, report.failed_object = f"{exc.code}: {exc.detail}", name
    except RemoteError as exc:
        report.error, report.failed_object = f"{exc.remote_code or exc.code}: {exc.detail}", name
    except StatebusError as exc:
        report.error = f"{exc.code}: {exc.detail}"
    finally:
        report.bytes_moved = own.bytes_received + own.bytes_sent
        if client is None:
            await own.aclose()
    if report.error:
        log.warning("restore from mirror %s failed at %s: %s", report.url, report.failed_object, report.error)
    return report


def _local_snapshots(node: Node) -> dict[str, int]:
    """key → seq of the restored store's snapshots: the mirror holds them already."""
    from statebus.storage.sqlite import StoreSnapshot

    if node.storage_path is None:
        return {}
    with StoreSnapshot(node.storage_path, key=atrest.key_for(node.storage_path.parent)) as store:
        return {s.key: s.seq for s, _ in store.snapshots(f"/{node.local}/")}
