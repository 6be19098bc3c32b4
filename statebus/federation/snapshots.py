"""Signed subtree snapshots between nodes: the owner keeps them, a follower that lacks history installs one.

    keeper = SnapshotKeeper(node, identity, keep=3, interval=10.0)
    kept = await keeper.newest("/<own>/yc/")      # the owner: made on demand, or when compaction folds
    result = await install_snapshot(ctx, url, pattern, keys, keeper)   # a follower (follow.py)

The format (a Merkle root over keys, base versions and base bytes, signed): ``statebus.federation.subtree``.

Rules:

1. The owner makes a snapshot of a subtree when a peer asks for one and none is newer than the
   subtree's compaction horizon (on demand), and again, at most once per ``interval`` seconds, for
   every subtree asked for before when compaction folds ops under it. It holds the stored bases
   (``Node.stored_bases``) at its durable cursor, signed by the node's key; the bytes are a blob in
   the node's blob store (counted live for blob GC), kept newest first, ``keep`` per subtree.
2. A snapshot is served only to a peer that may read every key it holds (the rows are bound to the
   signed root, so none can be left out); otherwise 403.
3. A follower installs a snapshot only for keys it cannot rebuild (``Node.incomplete``), or, when it
   is new (it holds nothing under the pattern), for keys it holds nothing of, before its first
   anti-entropy round; only after it checks (``subtree.unpack``: signature, Merkle root, rows)
   and only if its author may write every key it installs (the owner, or a live delegation, as
   for ops). Anything else refuses the whole snapshot (``BadSnapshot``) and changes nothing. It
   then takes the op tail by anti-entropy.
4. A follower keeps the snapshot it installed (a relay serves it to its own followers as is; it
   cannot sign one).
5. Its bytes move as a blob: over HTTP from the server's blob store, or, when both nodes swarm and
   it is at least ``swarm_min_bytes``, as a torrent (``statebus.federation.swarm``: the server's
   offer, then the nodes that fetched it before), falling back to HTTP on any failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from statebus.blobs import BlobPointer, check_hash
from statebus.errors import BadSnapshot, NotFound, RemoteError, StatebusError
from statebus.federation.ingest import Ingest
from statebus.federation.subtree import (
    CONTENT_TYPE,
    MAX_ROWS,
    BaseRow,
    SubtreeSnapshot,
    base_versions,
    pack,
    unpack,
)
from statebus.federation.swarm import OfferClient, SwarmPlane
from statebus.identity import Identity
from statebus.identity.keys import verify_signature
from statebus.keys import namespace_of
from statebus.runtime import Node
from statebus.types import Key, Seq

log = logging.getLogger("statebus.federation")

MAX_PATTERNS = 64
"""Subtrees whose snapshots a node keeps (the least recently asked for is dropped)."""
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Kept:
    """One snapshot a node keeps: the blob that holds it and what it covers."""

    pattern: Key
    hash: str
    size: int
    seq: Seq
    keys: tuple[Key, ...]

    @property
    def pointer(self) -> BlobPointer:
        return BlobPointer(self.hash, self.size, CONTENT_TYPE)


@runtime_checkable
class SnapshotClient(Protocol):
    """What a follower asks of another node (``PeerClient.snapshot``)."""

    async def snapshot(self, base: str, pattern: str, limit: int) -> bytes: ...


@runtime_checkable
class SwarmSnapshotClient(SnapshotClient, OfferClient, Protocol):
    """A client that can also ask what the newest snapshot is, to fetch it over the swarm."""

    async def snapshot_info(self, base: str, pattern: str) -> dict[str, Any]: ...


class SnapshotKeeper:
    """The signed subtree snapshots one node keeps (rules 1, 2 and 4).

    Args:
        node: the node (its blob store holds the bytes).
        identity: the node's key: signs the snapshots of its own namespace.
        keep: snapshots kept per subtree (newest first).
        interval: least seconds between two snapshots of a subtree made because compaction folded.
    """

    def __init__(self, node: Node, identity: Identity, *, keep: int = 3, interval: float = 10.0) -> None:
        self.node = node
        self.identity = identity
        self.keep = max(1, keep)
        self.interval = interval
        self.kept: dict[Key, list[Kept]] = {}
        """Subtree → its snapshots, newest first."""
        self.made = 0
        self._locks: dict[Key, asyncio.Lock] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._watching = False

    # ------------------------------------------------------------------ what is kept

    def hashes(self) -> list[str]:
        """The blobs of every kept snapshot (``Node.blob_roots``: GC keeps them)."""
        return [k.hash for kept in self.kept.values() for k in kept]

    def _keep(self, kept: Kept) -> None:
        found = self.kept.pop(kept.pattern, [])
        found = [kept, *(k for k in found if k.hash != kept.hash)]
        dropped, found = found[self.keep :], found[: self.keep]
        self.kept[kept.pattern] = found
        while len(self.kept) > MAX_PATTERNS:
            oldest = next(iter(self.kept))
            dropped += self.kept.pop(oldest)
        live = set(self.hashes())
        blobs = self.node.blobs
        for gone in dropped:
            if blobs is not None and gone.hash not in live:
                blobs.delete(gone.hash)

    async def newest(self, pattern: Key) -> Kept:
        """The newest snapshot of ``pattern`` (rule 1: made now when compaction folded under it since
        the last one, for this node's own namespace).

        Raises:
            NotFound: nothing under ``pattern`` was compacted (its ops alone rebuild it), or no
                snapshot of another namespace's subtree is held here, or this node has no blob store.
        """
        if self.node.blobs is None:
            raise NotFound("this node keeps no snapshots (it has no blob store)")
        kept = self.kept.get(pattern, [])
        if namespace_of(pattern) != self.node.local:
            if not kept:
                raise NotFound(f"no snapshot of {pattern} is held here")
            return kept[0]
        lock = self._locks.setdefault(pattern, asyncio.Lock())
        async with lock:
            kept = self.kept.get(pattern, [])
            horizon = self.node.horizon(pattern)
            if horizon == 0:
                raise NotFound(f"nothing under {pattern} was compacted: its ops rebuild it")
            if kept and kept[0].seq >= horizon:
                self.kept[pattern] = self.kept.pop(pattern)  # most recently asked for
                return kept[0]
            made = await self.make(pattern)
        self._watch()
        return made

    async def make(self, pattern: Key) -> Kept:
        """Sign a snapshot of this node's subtree ``pattern`` now and keep it (rule 1)."""
        node = self.node
        assert node.blobs is not None
        seq = node.durable_seq
        bases = await node.stored_bases(pattern, MAX_ROWS)
        rows = tuple(BaseRow(s.key, base_versions(s.data), s.data) for s in bases)
        snap = SubtreeSnapshot(node.local, pattern, seq, self.identity.pubkey, rows)
        data = await asyncio.to_thread(pack, snap, self.identity.sign)
        info = await asyncio.to_thread(node.blobs.put_bytes, data)
        kept = Kept(pattern, info.hash, info.size, seq, tuple(r.key for r in rows))
        self._keep(kept)
        self.made += 1
        log.info("signed a snapshot of %s at %d: %d keys, %d bytes", pattern, seq, len(rows), info.size)
        return kept

    async def adopt(self, snap: SubtreeSnapshot, data: bytes) -> Kept | None:
        """Keep a checked snapshot of another node's subtree (rule 4); None without a blob store."""
        blobs = self.node.blobs
        if blobs is None:
            return None
        info = await asyncio.to_thread(blobs.put_bytes, data)
        kept = Kept(snap.pattern, info.hash, info.size, snap.seq, tuple(r.key for r in snap.rows))
        self._keep(kept)
        return kept

    # ------------------------------------------------------------------ made when compaction folds

    def _watch(self) -> None:
        if not self._watching:
            self._watching = True
            self.node.on_durable.append(self._durable)

    def _durable(self, seq: Seq) -> None:
        if self._timer is None and (self._task is None or self._task.done()):
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.interval, self._refresh)

    def _refresh(self) -> None:
        self._timer = None
        if not self.node.closing:
            self._task = asyncio.get_running_loop().create_task(self._remake())

    async def _remake(self) -> None:
        own = f"/{self.node.local}/"
        for pattern in [p for p in self.kept if p.startswith(own)]:
            kept = self.kept.get(pattern)
            if kept and self.node.horizon(pattern) > kept[0].seq and not self.node.closing:
                try:
                    await self.newest(pattern)
                except Exception as exc:  # a background refresh must not die silently
                    log.warning("could not refresh the snapshot of %s: %s", pattern, exc)

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watching and self._durable in self.node.on_durable:
            self.node.on_durable.remove(self._durable)
        self._watching = False
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class Installed:
    """What one snapshot did for a follower."""

    pattern: Key
    seq: Seq = 0
    size: int = 0
    keys: list[Key] = field(default_factory=list)
    via: str = "http"
    """How its bytes came: ``http`` or ``swarm``."""


async def fetch_snapshot(
    node: Node, client: SnapshotClient, url: str, pattern: Key, swarm: SwarmPlane | None = None
) -> tuple[bytes, str]:
    """The bytes of the newest snapshot of ``pattern`` at ``url`` (unverified) and how they came:
    over the swarm when it is at least ``swarm_min_bytes`` and both nodes swarm (the swarm checks
    the bytes against the hash the server named; the signature and root are checked after), else,
    or when that fails, over HTTP (rule 5)."""
    limit = node.blobs.max_bytes if node.blobs is not None else DEFAULT_MAX_BYTES
    if swarm is not None and node.blobs is not None and isinstance(client, SwarmSnapshotClient):
        try:
            info = await client.snapshot_info(url, pattern)
            size = info.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadSnapshot("the snapshot info names no size")
            pointer = BlobPointer(check_hash(str(info.get("hash"))), size, CONTENT_TYPE)
            if swarm.wants(pointer) and size <= limit:
                await swarm.fetch(client, url, "", pointer, namespace_of(pattern), pattern=pattern)
                return await asyncio.to_thread(node.blobs.read, pointer.hash), "swarm"
        except StatebusError as exc:
            if isinstance(exc, RemoteError) and exc.status_hint in (403, 404):
                raise  # there is none for us: asking again over HTTP would say the same
            log.info("the snapshot of %s did not come over the swarm (%s): over HTTP", pattern, exc.detail)
    return await client.snapshot(url, pattern, limit), "http"


async def install_snapshot(
    node: Node,
    ingest: Ingest,
    client: SnapshotClient,
    url: str,
    pattern: Key,
    incomplete: Collection[Key] | None,
    keeper: SnapshotKeeper | None = None,
    swarm: SwarmPlane | None = None,
) -> Installed:
    """Fetch the newest snapshot of ``pattern`` from ``url``, check it and install the bases of the
    keys of ``incomplete`` it holds (rule 3), or, with None (a new follower, before its first
    anti-entropy), of every key it holds that this node holds nothing of; the caller then runs
    anti-entropy on ``pattern``.

    Raises:
        BadSnapshot: (422) it does not check, or its author may not write a key it installs.
        RemoteError, PeerUnavailable: from the peer (404: it holds none).
    """
    owner = namespace_of(pattern)
    data, via = await fetch_snapshot(node, client, url, pattern, swarm)
    snap = unpack(data, owner=owner, pattern=pattern, verify=verify_signature)
    ring = ingest.keyring(owner)
    for row in snap.rows:
        why = ring.why_not(snap.author, row.key)
        if why is not None:
            raise BadSnapshot(f"the snapshot's signer may not write {row.key}: {why}")
    if incomplete is None:
        rows = [(r.key, r.data) for r in snap.rows if node.fetch_or_none(r.key) is None]
    else:
        wanted = set(incomplete)
        rows = [(r.key, r.data) for r in snap.rows if r.key in wanted and node.incomplete(r.key) is not None]
    done = Installed(pattern, snap.seq, len(data), via=via)
    if rows:
        done.keys = await node.install_bases(rows)
    if keeper is not None:
        await keeper.adopt(snap, data)
    return done
