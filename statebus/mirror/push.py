"""The owner side: the mirrors a node pushes to, the push itself, storage challenges and status.

State: ``<data>/mirrors.json`` (0600) names each mirror (its URL, the quota the owner asked for)
and what the node knows of it: the manifest it last stored there, the local cursor pushed so far,
unused challenges, the last proof and the last error. None of it is secret from the owner; none of
it reaches the mirror in plaintext.

Rules:

1. A push sends this node's own ops with a sequence number above the mirror's cursor, as new sealed
   segments (:mod:`statebus.mirror.objects`), then the blob parts those ops point to, then the
   manifest. The cursor and the manifest entries are saved after every stored segment, so a push
   that stops (network, quota, kill) resumes after the last segment the mirror took.
2. For each segment, :data:`CHALLENGES` random nonces and their answers (``sha256(nonce | sealed)``)
   are kept locally; a challenge spends one, so every answer the mirror gives is to a fresh nonce and
   can come only from the bytes themselves. When a segment's nonces are spent, the next challenge
   of it first downloads it and checks its sha256 against the manifest, then makes new ones.
3. A mirror is a complete copy (:attr:`MirrorStatus.complete`) when it has every op (lag 0) and its
   last proof passed; ``statebus.federation.placement`` counts copies against the placement rules.
4. After the segments, the compaction snapshots of this node's keys that changed since the last
   push go as one new signed batch (``snap/<i>``, :mod:`statebus.mirror.objects` rule 4), so ops
   folded before they were pushed are not lost: restore puts the snapshot in their place.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from statebus.blobs import BLOB_TYPE, BlobPointer
from statebus.errors import InvalidValue, MirrorTampered, RemoteError, StatebusError
from statebus.identity import atrest
from statebus.identity.keys import Identity
from statebus.mirror.client import MirrorClient
from statebus.mirror.crypto import MirrorCipher, bucket
from statebus.mirror.objects import (
    BLOB_PART,
    MANIFEST,
    SEGMENT_BYTES,
    SEGMENT_OPS,
    Manifest,
    SegmentEntry,
    SnapshotRow,
    blob_part_name,
    pack_segment,
    pack_snapshots,
    segment_name,
    snapshots_name,
)
from statebus.oplog import decode_op
from statebus.runtime import Node
from statebus.types import Seq

log = logging.getLogger("statebus.mirror")

STATE_FILE = "mirrors.json"
CHALLENGES = 8
SCAN = 5000

Progress = Callable[[str], None]


@dataclass
class MirrorState:
    url: str
    quota: int | None = None
    added: float = 0.0
    cursor: Seq = 0
    """This node's sequence number up to which its own ops are on the mirror."""
    manifest: str | None = None
    """The manifest last stored there (its JSON)."""
    challenges: dict[str, list[list[str]]] = field(default_factory=dict)
    """object name → unused ``[nonce hex, answer hex]`` pairs."""
    last_push: float = 0.0
    last_error: str = ""
    last_proof: dict[str, Any] = field(default_factory=dict)
    """``{"at", "object", "ok", "detail"}`` of the last challenge."""
    used: int = 0
    """Bytes the mirror said it holds for us, at the last push."""
    snapshots: dict[str, int] = field(default_factory=dict)
    """key → seq of its compaction snapshot on the mirror (rule 4)."""

    def manifest_of(self, owner: str) -> Manifest:
        return Manifest.decode(self.manifest.encode(), owner) if self.manifest else Manifest(owner)


class MirrorTargets:
    """``<data>/mirrors.json``: the mirrors of this node and what it knows of each."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / STATE_FILE
        self._key = atrest.key_for(data_dir)  # encrypted at rest: the file names keys and blob hashes
        self.mirrors: dict[str, MirrorState] = self._read()
        self._loaded = set(self.mirrors)
        self._removed: set[str] = set()

    def _read(self) -> dict[str, MirrorState]:
        if not self.path.exists():
            return {}
        try:
            body = self.path.read_bytes()
            raw = json.loads(body if self._key is None else atrest.unseal(self._key, STATE_FILE, body))
            return {m["url"]: MirrorState(**m) for m in raw["mirrors"]}
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidValue(f"{self.path} is malformed ({exc}); fix or remove it") from None

    def save(self) -> None:
        """Write the file, merged with what another process (a CLI ``add``/``remove`` while the node
        pushes) wrote since it was read: a mirror added there is kept, one removed there stays removed."""
        disk = self._read()
        for url in [u for u in self.mirrors if u in self._loaded and u not in disk]:
            del self.mirrors[url]  # removed by the other process
        for url, state in disk.items():
            if url not in self.mirrors and url not in self._removed:
                self.mirrors[url] = state  # added by the other process
        self._loaded = set(self.mirrors)
        data = json.dumps({"v": 1, "mirrors": [vars(m) for m in self.mirrors.values()]}, indent=1).encode()
        if self._key is not None:
            data = atrest.seal(self._key, STATE_FILE, data)
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def add(self, url: str, quota: int | None = None) -> MirrorState:
        url = check_url(url)
        state = self.mirrors.get(url) or MirrorState(url, added=round(time.time(), 3))
        state.quota = quota
        self.mirrors[url] = state
        self._removed.discard(url)
        self.save()
        return state

    def remove(self, url: str) -> bool:
        url = url.rstrip("/")
        found = self.mirrors.pop(url, None) is not None
        self._removed.add(url)
        self.save()
        return found


def check_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise InvalidValue("a mirror is the http(s) URL of a statebus node that mirrors for you")
    return url.rstrip("/")


@dataclass
class PushReport:
    url: str
    segments: int = 0
    ops: int = 0
    blobs: int = 0
    bytes_sent: int = 0
    plain_bytes: int = 0
    snapshots: int = 0
    error: str = ""


def _own_ops(node: Node, after: Seq) -> list[tuple[Seq, bytes]]:
    batch = node.scan(f"/{node.local}/", after, SCAN)
    return [(s.seq, s.data) for s in batch]


def _blob_hashes(data: bytes) -> str | None:
    if BLOB_TYPE.encode() not in data:
        return None
    op = decode_op(data)
    if op.content_type == BLOB_TYPE and isinstance(op.body, bytes):
        try:
            return BlobPointer.decode(op.body).hash
        except StatebusError:
            return None
    return None


def _challenges(sealed: bytes) -> list[list[str]]:
    """:data:`CHALLENGES` fresh ``[nonce hex, sha256(nonce | sealed) hex]`` pairs (rule 2)."""
    pairs = []
    for _ in range(CHALLENGES):
        nonce = secrets.token_bytes(32)
        pairs.append([nonce.hex(), hashlib.sha256(nonce + sealed).hexdigest()])
    return pairs


def _sealed(cipher: MirrorCipher, name: str, plain: bytes) -> tuple[bytes, str, list[list[str]]]:
    """``plain`` sealed, the sealed bytes' sha256, and their challenges (CPU work, run off the loop)."""
    sealed = cipher.seal(name, plain)
    return sealed, hashlib.sha256(sealed).hexdigest(), _challenges(sealed)


async def _store(
    client: MirrorClient, cipher: MirrorCipher, state: MirrorState, name: str, plain: bytes
) -> str:
    sealed, digest, pairs = await asyncio.to_thread(_sealed, cipher, name, plain)
    if state.quota is not None and state.used + len(sealed) > state.quota:
        raise InvalidValue(f"mirror {state.url}: over the quota of {state.quota} bytes set with --quota")
    answer = await client.put(cipher.object_id(name), sealed)
    state.used = int(answer.get("used", state.used))
    state.challenges[name] = pairs
    return digest


async def push(
    node: Node,
    identity: Identity,
    targets: MirrorTargets,
    url: str,
    *,
    progress: Progress | None = None,
    client: MirrorClient | None = None,
) -> PushReport:
    """Push what the mirror at ``url`` lacks (rule 1). Never raises for what the mirror does: the
    report (and ``mirrors.json``) say it."""
    state = targets.mirrors[check_url(url)]
    report = PushReport(state.url)
    cipher = MirrorCipher(identity)
    own = client or MirrorClient(state.url, node.local, identity)
    try:
        manifest = state.manifest_of(node.local)
        if state.manifest is None:  # a mirror we know nothing of may hold our older pushes: append to them
            manifest = await _remote_manifest(own, cipher, node.local)
        blobs_wanted: set[str] = set()
        after = state.cursor
        while True:
            rows = deque(_own_ops(node, after))
            if not rows:
                break
            while rows:
                take: list[tuple[Seq, bytes]] = []
                size = 0
                while rows and len(take) < SEGMENT_OPS:
                    if take and size + len(rows[0][1]) + 1 > SEGMENT_BYTES:
                        break  # the segment stays inside its bucket
                    seq, data = rows.popleft()
                    take.append((seq, data))
                    size += len(data) + 1
                    if (h := _blob_hashes(data)) is not None:
                        blobs_wanted.add(h)
                index = manifest.segments[-1].index + 1 if manifest.segments else 0
                upto = take[-1][0]
                plain = pack_segment(index, after, upto, [d for _, d in take])
                name = segment_name(index)
                digest = await _store(own, cipher, state, name, plain)
                manifest.segments.append(
                    SegmentEntry(index, after, upto, len(take), digest, bucket(len(plain)), len(plain))
                )
                after = state.cursor = upto
                state.manifest = manifest.encode().decode()
                targets.save()  # resumable: this segment is stored, the cursor says so
                report.segments += 1
                report.ops += len(take)
                report.plain_bytes += len(plain)
                if progress is not None:
                    progress(f"{state.url}: segment {index}, {report.ops} ops pushed")
        if node.blobs is not None:
            for h in sorted(blobs_wanted - set(manifest.blobs)):
                if not node.blobs.has(h):
                    continue
                data = await asyncio.to_thread(node.blobs.read, h)
                parts = []
                for j in range(max(1, -(-len(data) // BLOB_PART))):
                    chunk = data[j * BLOB_PART : (j + 1) * BLOB_PART]
                    parts.append(await _store(own, cipher, state, blob_part_name(h, j), chunk))
                    report.plain_bytes += len(chunk)
                manifest.blobs[h] = parts
                report.blobs += 1
                state.manifest = manifest.encode().decode()
                targets.save()
        await _push_snapshots(node, identity, own, cipher, state, manifest, report)
        targets.save()
        manifest.pushed = round(time.time(), 3)
        sealed = cipher.seal(MANIFEST, manifest.encode())
        answer = await own.put(cipher.object_id(MANIFEST), sealed)
        state.used = int(answer.get("used", state.used))
        state.manifest = manifest.encode().decode()
        state.last_push = manifest.pushed
        state.last_error = ""
    except RemoteError as exc:
        report.error = state.last_error = f"{exc.remote_code or exc.code}: {exc.detail}"
    except StatebusError as exc:
        report.error = state.last_error = f"{exc.code}: {exc.detail}"
    finally:
        report.bytes_sent = own.bytes_sent
        targets.save()
        if client is None:
            await own.aclose()
    return report


def _changed_snapshots(node: Node, pushed: dict[str, int]) -> list[tuple[SnapshotRow, int]]:
    """This node's compaction snapshots not on the mirror yet (rule 4), each with its seq."""
    from statebus.storage.sqlite import StoreSnapshot

    path = node.storage_path
    if path is None:
        return []
    with StoreSnapshot(path, key=atrest.key_for(path.parent)) as store:
        rows = store.snapshots(f"/{node.local}/", lambda key, seq: pushed.get(key, -1) < seq)
    return [((s.key, s.data, None if first is None else first.version), s.seq) for s, first in rows]


async def _push_snapshots(
    node: Node,
    identity: Identity,
    own: MirrorClient,
    cipher: MirrorCipher,
    state: MirrorState,
    manifest: Manifest,
    report: PushReport,
) -> None:
    changed = await asyncio.to_thread(_changed_snapshots, node, state.snapshots)
    while changed:
        take: list[tuple[SnapshotRow, int]] = []
        size = 0
        while changed and (not take or size + len(changed[0][0][1]) < SEGMENT_BYTES // 2):
            take.append(changed.pop(0))
            size += len(take[-1][0][1]) + len(take[-1][0][0]) + 100
        index = manifest.snapshots[-1][0] + 1 if manifest.snapshots else 0
        plain = pack_snapshots(index, [row for row, _ in take], identity.sign)
        digest = await _store(own, cipher, state, snapshots_name(index), plain)
        manifest.snapshots.append([index, digest, len(take)])
        state.snapshots.update({row[0]: seq for row, seq in take})
        state.manifest = manifest.encode().decode()
        report.snapshots += len(take)
        report.plain_bytes += len(plain)


async def _remote_manifest(own: MirrorClient, cipher: MirrorCipher, owner: str) -> Manifest:
    """The manifest the mirror holds for us (its segments are kept and new ones appended after
    them), or a new one if it holds none."""
    try:
        sealed = await own.get(cipher.object_id(MANIFEST))
    except RemoteError as exc:
        if exc.status_hint == 404:
            return Manifest(owner)
        raise
    return Manifest.decode(cipher.open(MANIFEST, sealed), owner)


async def challenge(
    node: Node, identity: Identity, targets: MirrorTargets, url: str, *, client: MirrorClient | None = None
) -> dict[str, Any]:
    """Ask the mirror at ``url`` to prove it holds a random stored object (rule 2); record and return
    ``{"at", "object", "ok", "detail"}``."""
    state = targets.mirrors[check_url(url)]
    cipher = MirrorCipher(identity)
    own = client or MirrorClient(state.url, node.local, identity)
    manifest = state.manifest_of(node.local)
    names = [segment_name(s.index) for s in manifest.segments]
    names += [blob_part_name(h, j) for h, parts in manifest.blobs.items() for j in range(len(parts))]
    names += [snapshots_name(i) for i, _, _ in manifest.snapshots]
    result: dict[str, Any] = {"at": round(time.time(), 3), "object": "", "ok": False, "detail": ""}
    try:
        if not names:  # no op yet: nothing to hold, nothing to prove
            result["ok"], result["detail"] = True, "nothing to prove yet: no op pushed"
            return result
        name = random.SystemRandom().choice(names)
        result["object"] = name
        if not state.challenges.get(name):
            await _refill(own, cipher, state, manifest, name)
        nonce_hex, expected = state.challenges[name].pop()
        answer = await own.proof(cipher.object_id(name), bytes.fromhex(nonce_hex))
        result["ok"] = answer == expected
        result["detail"] = (
            "proved" if result["ok"] else "wrong answer: the mirror no longer holds these bytes"
        )
    except RemoteError as exc:
        result["detail"] = f"failed: {exc.remote_code or exc.code}: {exc.detail}"
    except StatebusError as exc:
        result["detail"] = f"failed: {exc.code}: {exc.detail}"
    finally:
        state.last_proof = result
        targets.save()
        if client is None:
            await own.aclose()
    return result


async def _refill(
    own: MirrorClient, cipher: MirrorCipher, state: MirrorState, manifest: Manifest, name: str
) -> None:
    sealed = await own.get(cipher.object_id(name))
    want = _expected_hash(manifest, name)
    if hashlib.sha256(sealed).hexdigest() != want:
        raise MirrorTampered(f"{name}: the mirror serves other bytes than were pushed")
    state.challenges[name] = await asyncio.to_thread(_challenges, sealed)


def _expected_hash(manifest: Manifest, name: str) -> str:
    kind, _, rest = name.partition("/")
    if kind == "seg":
        return next(s.sealed_sha256 for s in manifest.segments if s.index == int(rest))
    if kind == "snap":
        return next(str(h) for i, h, _ in manifest.snapshots if i == int(rest))
    h, _, j = rest.partition("/")
    return manifest.blobs[h][int(j)]


@dataclass
class MirrorStatus:
    url: str
    pushed_ops: int
    lag_ops: int
    last_push: float
    last_proof: dict[str, Any]
    last_error: str
    used: int

    @property
    def complete(self) -> bool:
        return self.lag_ops == 0 and bool(self.last_proof.get("ok")) and not self.last_error


def status(node: Node, targets: MirrorTargets) -> list[MirrorStatus]:
    """What each mirror holds of this node, and how far behind it is (in ops)."""
    out = []
    for state in targets.mirrors.values():
        manifest = state.manifest_of(node.local)
        lag, after = 0, state.cursor
        while batch := node.scan(f"/{node.local}/", after, SCAN):
            lag += len(batch)
            after = batch[-1].seq
        out.append(
            MirrorStatus(
                state.url, manifest.ops, lag, state.last_push, state.last_proof, state.last_error, state.used
            )
        )
    return out


async def keep_pushing(
    node: Node, identity: Identity, data_dir: str | os.PathLike[str], interval: float
) -> None:
    """What a running node does: every ``interval`` seconds, push to each mirror in ``mirrors.json``
    (re-read each round, so ``statebus mirror add`` takes effect without a restart) and challenge it."""
    while True:
        await asyncio.sleep(interval)
        try:
            targets = MirrorTargets(data_dir)
            for url in list(targets.mirrors):
                if url not in targets.mirrors:
                    continue  # removed meanwhile (``statebus mirror remove``)
                report = await push(node, identity, targets, url)
                if not report.error and url in targets.mirrors:
                    await challenge(node, identity, targets, url)
        except StatebusError as exc:
            log.warning("mirror push failed: %s: %s", exc.code, exc.detail)
