"""The process's libtorrent session: public discovery off, alerts bridged to asyncio, blobs swarmed.

    swarm = SwarmSession(data_dir / "swarm", interface="127.0.0.1")
    await swarm.start()                                   # listens on interface:port (0: any free port)
    meta = await swarm.seed(store.path(h))               # the origin, or anyone holding the blob
    info = await swarm.fetch(meta, [("127.0.0.1", 6881)], store, namespace=ns, progress=show)
    swarm.add_peers(h, more)                             # seeders learned later (DHT, subscription)
    swarm.stats()                                        # SwarmStats: torrents, peers, bytes up/down
    await swarm.close()

Rules:

1. Peers come only from our own machinery (the caller's :meth:`add_peers` and the peers given to
   :meth:`fetch`: our DHT, the origin's subscription). The session is built with every public
   discovery off *in its constructor* (the defaults turn on the mainline DHT with public bootstrap
   routers, LSD and UPnP multicast and NAT-PMP, listening on 0.0.0.0:6881): see
   :func:`session_settings`. It listens and connects on ``interface`` only, torrents carry no
   tracker, and an IP filter admits only the ``allow`` ranges (loopback by default).
2. One session per process: the server's composition root makes one and hands it to the federation.
   Its alerts reach asyncio through a watcher thread: it blocks in ``wait_for_alert`` (which releases
   the GIL), wakes the loop with ``call_soon_threadsafe``, and waits until the loop has popped them.
   No Python callback ever runs on libtorrent's own threads: ``set_alert_notify`` was tried, and its
   callback, which needs the GIL, deadlocked against ``set_alert_notify`` and the session's
   destructor, which hold it. The session's last reference is dropped on a worker thread.
3. A fetch is refused before any byte is written when the blob is over the store's ``max_bytes``
   (``TooLarge``) or the namespace's quota (``QuotaExceeded``, checked on the store's counter).
4. libtorrent checks every piece (v1 SHA-1 and v2 SHA-256 Merkle trees) and bans a peer that sent a
   piece that failed; "finished" is only said once the cache is flushed *and* the whole file's sha256 is
   the owner-signed pointer's: then the file is linked into the blob store (``BlobStore.adopt``) and its
   quota charged. Otherwise the download is deleted and ``BadBlob`` raised.
5. Everyone who fetched, serves: a fetched blob is seeded for ``seed_seconds`` after it finished,
   until the session's ``upload_budget`` bytes (for fetched blobs, 0: none) are spent; then its torrent
   is removed (the store keeps the bytes). A node's own blobs (``seed``) are seeded until ``drop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import libtorrent as lt

from statebus.blobs import BlobInfo, BlobStore
from statebus.errors import BadBlob, SwarmFailed, TooLarge
from statebus.swarm.torrent import TorrentMeta, TorrentRef, make_torrent
from statebus.types import PubKey

log = logging.getLogger("statebus.swarm")

LOOPBACK: Final = (("127.0.0.0", "127.255.255.255"),)
TICK_SECONDS: Final = 0.5
ALERTS: Final = (
    lt.alert.category_t.status_notification
    | lt.alert.category_t.error_notification
    | lt.alert.category_t.peer_notification
    | lt.alert.category_t.storage_notification
)

Peer = tuple[str, int]
Progress = Callable[[int, int, int], None]
"""``progress(done_bytes, total_bytes, peers)``, called about twice a second during a fetch."""


def session_settings(interface: str, port: int = 0) -> dict[str, Any]:
    """The settings a session is constructed with: public discovery off, one interface (rule 1)."""
    return {
        "listen_interfaces": f"{interface}:{port}",
        "outgoing_interfaces": interface,
        "enable_dht": False,
        "dht_bootstrap_nodes": "",
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        "announce_to_all_trackers": False,
        "announce_to_all_tiers": False,
        "allow_multiple_connections_per_ip": True,  # every loopback peer is 127.0.0.1
        "enable_incoming_utp": False,  # TCP: uTP was 2.5-3x slower on loopback (research note)
        "enable_outgoing_utp": False,
        "enable_incoming_tcp": True,
        "enable_outgoing_tcp": True,
        "alert_mask": ALERTS,
        "aio_threads": 2,
        "hashing_threads": 1,
        "user_agent": "statebus",
        "peer_fingerprint": "-SB0001-",
    }


@dataclass
class TorrentStats:
    """One torrent of the session, as the node page and /metrics show it."""

    hash: str
    role: str
    """``origin`` (a blob this node holds and offers) or ``fetched`` (it fetched it, and serves it)."""
    size: int
    progress: float
    peers: int
    uploaded: int
    downloaded: int

    @property
    def ratio(self) -> float:
        return self.uploaded / self.size if self.size else 0.0


@dataclass
class SwarmStats:
    torrents: list[TorrentStats] = field(default_factory=list)
    uploaded: int = 0
    downloaded: int = 0
    hash_failures: int = 0
    bans: int = 0
    fetched: int = 0


@dataclass
class _Torrent:
    meta: TorrentMeta
    handle: lt.torrent_handle
    role: str
    finished: asyncio.Future[None]
    flushed: asyncio.Future[None] | None = None
    seed_until: float | None = None
    download: Path | None = None
    ref: TorrentRef | None = None
    """Set while the metadata of a torrent added by info-hash alone has not been checked yet."""


class SwarmSession:
    """One libtorrent session (rule 2).

    Args:
        work: a folder for downloads in progress (``<data>/swarm``).
        interface: the address to listen and connect on (never 0.0.0.0 by default).
        port: the listen port (0: any free port).
        allow: the address ranges peers may have (inclusive ``(first, last)`` pairs).
        seed_seconds: how long a fetched blob is seeded after it finished.
        upload_budget: bytes this node uploads for fetched blobs before it stops seeding them (0: none).
    """

    def __init__(
        self,
        work: Path,
        *,
        interface: str = "127.0.0.1",
        port: int = 0,
        allow: Sequence[tuple[str, str]] = LOOPBACK,
        seed_seconds: float = 3600.0,
        upload_budget: int = 10 * 1024**3,
    ) -> None:
        self.work = Path(work)
        self.interface = interface
        self.port = port
        self.allow = tuple(allow)
        self.seed_seconds = seed_seconds
        self.upload_budget = upload_budget
        self._ses: lt.session | None = None
        self._torrents: dict[str, _Torrent] = {}
        self._by_handle: dict[lt.torrent_handle, _Torrent] = {}
        self._wake = asyncio.Event()
        self._popped = threading.Event()
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        self._pump: asyncio.Task[None] | None = None
        self._tick: asyncio.Task[None] | None = None
        self._fetched_upload = 0
        self.hash_failures = 0
        self.bans = 0
        self.fetched = 0
        self._gone_up = 0
        self._gone_down = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.work.mkdir(mode=0o700, parents=True, exist_ok=True)
        stale = self.work / "fetch"  # downloads of an earlier run (a finished one is in the store)
        if stale.is_dir():
            for leftover in stale.iterdir():
                leftover.unlink(missing_ok=True)
        settings: Any = session_settings(self.interface, self.port)  # the stubs name no dict overload
        ses = lt.session(settings)
        ip_filter = lt.ip_filter()
        ip_filter.add_rule("0.0.0.0", "255.255.255.255", 1)  # block every address ...
        ip_filter.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1)
        for first, last in self.allow:  # ... but the allowed ranges
            ip_filter.add_rule(first, last, 0)
        ses.set_ip_filter(ip_filter)

        self._ses = ses
        self._closing.clear()
        self._watcher = threading.Thread(
            target=self._watch, args=(ses, loop), name="swarm alerts", daemon=True
        )
        self._watcher.start()
        self._pump = loop.create_task(self._pump_alerts(), name="swarm alerts")
        self._tick = loop.create_task(self._ticks(), name="swarm ticks")
        deadline = time.monotonic() + 5.0
        while not ses.is_listening() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not ses.is_listening():
            await self.close()
            raise SwarmFailed(f"the swarm session could not listen on {self.interface}:{self.port}")

    async def close(self) -> None:
        """Stop every torrent and destroy the session (downloads in progress are deleted)."""
        ses = self._ses
        if ses is None:
            return
        self._ses = None
        self._closing.set()
        self._popped.set()
        for task in (self._pump, self._tick):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.join)
            self._watcher = None
        for t in list(self._torrents.values()):
            if not t.finished.done():
                t.finished.set_exception(SwarmFailed("the swarm session closed"))
                t.finished.exception()
            ses.remove_torrent(t.handle, lt.session.delete_files if t.download is not None else 0)
        self._torrents.clear()
        self._by_handle.clear()
        holder = [ses]
        del ses
        await asyncio.to_thread(_destroy, holder)

    @property
    def address(self) -> Peer:
        """Where peers reach this session (``interface``, the listening port)."""
        if self._ses is None:
            raise SwarmFailed("the swarm session is not started")
        return (self.interface, self._ses.listen_port())

    def settings(self) -> dict[str, Any]:
        """The live session's settings (what libtorrent says, not what was asked)."""
        if self._ses is None:
            raise SwarmFailed("the swarm session is not started")
        return dict(self._ses.get_settings())

    # ------------------------------------------------------------------ seeding and fetching
    async def seed(
        self,
        path: Path,
        meta: TorrentMeta | None = None,
        *,
        check: bool = False,
        once: bool = False,
        fetched: bool = False,
    ) -> TorrentMeta:
        """Seed the blob stored at ``path`` (its torrent is made when not given); idempotent.

        The store's bytes are verified already, so libtorrent checks each piece only when it is
        first asked for (``seed_mode``); ``check=True`` hashes the whole file before it serves.
        ``once`` (super-seeding) hands each piece out once until a fetcher has passed it on: 50 MB to
        10 fetchers cost the origin 1.02-1.03x the blob instead of 2.6-3.6x, but took 14-16 s instead
        of 2-6 s on loopback, where the origin's uplink is no bottleneck (docs/performance.md). It is off by
        default: with it on, the test of a fetcher leaving mid-transfer stalled the others (the
        pieces handed only to the leaver were not handed out again in time).
        ``fetched`` seeds a blob this node fetched another way (over HTTP) as a fetched one: for
        ``seed_seconds``, within the upload budget (rule 5).
        """
        ses = self._session()
        current = self._torrents.get(path.name)
        if current is not None:
            return current.meta
        if meta is None:
            meta = await asyncio.to_thread(make_torrent, path)
        params = _params(meta, path.parent)
        if not check:
            params.flags |= lt.torrent_flags.seed_mode
        if once:
            params.flags |= lt.torrent_flags.super_seeding
        t = self._add(ses, params, meta, "fetched" if fetched else "origin", None)
        if fetched:  # a blob fetched another way (HTTP) is served like a swarm-fetched one (rule 5)
            t.seed_until = time.monotonic() + self.seed_seconds
        return meta

    def drop(self, hash: str) -> None:
        """Stop seeding/fetching blob ``hash`` (a fetch in progress fails with ``SwarmFailed``)."""
        t = self._torrents.pop(hash, None)
        if t is None or self._ses is None:
            return
        self._by_handle.pop(t.handle, None)
        st = t.handle.status()
        self._gone_up += st.total_payload_upload
        self._gone_down += st.total_payload_download
        if not t.finished.done():
            t.finished.set_exception(SwarmFailed(f"the swarm of blob {hash} was dropped"))
            t.finished.exception()
        self._ses.remove_torrent(t.handle, lt.session.delete_files if t.download is not None else 0)

    def add_peers(self, hash: str, peers: Iterable[Peer]) -> None:
        """Connect the torrent of blob ``hash`` to these peers (from our DHT or the origin)."""
        t = self._torrents.get(hash)
        if t is None:
            return
        me = self.address
        for peer in peers:
            if tuple(peer) != me:
                t.handle.connect_peer((peer[0], int(peer[1])))

    def peers_of(self, hash: str) -> list[Peer]:
        """The peers the torrent of ``hash`` is connected to now."""
        t = self._torrents.get(hash)
        if t is None:
            return []
        return [(p.ip[0], p.ip[1]) for p in t.handle.get_peer_info()]

    def has(self, hash: str) -> bool:
        return hash in self._torrents

    async def fetch(
        self,
        meta: TorrentMeta | TorrentRef,
        peers: Iterable[Peer],
        store: BlobStore,
        *,
        namespace: PubKey | None = None,
        timeout: float = 300.0,
        progress: Progress | None = None,
        metadata_timeout: float | None = None,
    ) -> BlobInfo:
        """Fetch blob ``meta.hash`` from the swarm into ``store``; it then seeds it (rule 5).

        ``meta`` is the torrent, or a :class:`TorrentRef` (an info-hash from a provider record on our
        DHT): then the metadata comes from the peers, and no piece is asked for until it describes
        exactly this blob (``TorrentRef.check``, else ``BadBlob``); with ``metadata_timeout``, peers
        that have not sent it within that many seconds fail the fetch (``SwarmFailed``).

        Raises:
            TooLarge, QuotaExceeded: refused before any byte is written (rule 3).
            BadBlob: the finished bytes are not the blob (rule 4); nothing is kept.
            SwarmFailed: not finished within ``timeout`` seconds, or being fetched already (nothing kept).
        """
        ses = self._session()
        if store.has(meta.hash):
            return BlobInfo(meta.hash, store.path(meta.hash).stat().st_size)
        if meta.size > store.max_bytes:
            raise TooLarge(f"the blob is {meta.size} bytes; the limit is {store.max_bytes}")
        if namespace is not None and store.quota is not None:
            check = getattr(store.quota, "check", None)
            if check is not None:
                check(namespace, meta.size)  # QuotaExceeded before a byte is written
        if meta.hash in self._torrents:
            raise SwarmFailed(f"blob {meta.hash} is being fetched already")
        folder = self.work / "fetch"
        folder.mkdir(mode=0o700, exist_ok=True)
        if isinstance(meta, TorrentRef):
            params = lt.parse_magnet_uri(meta.magnet())
            params.save_path = str(folder)
            params.flags &= ~lt.torrent_flags.auto_managed
            params.flags &= ~lt.torrent_flags.paused
            params.flags |= lt.torrent_flags.upload_mode  # no piece until the metadata is checked
            if not meta.size:  # size unknown (a fetch by sha256 alone): at most the store's limit
                meta = dataclasses.replace(
                    meta, max_size=min(meta.max_size or store.max_bytes, store.max_bytes)
                )
            known = TorrentMeta(meta.hash, meta.size, meta.infohash_v1, "", b"")
            t = self._add(ses, params, known, "fetched", folder / meta.hash)
            t.ref = meta
        else:
            t = self._add(ses, _params(meta, folder), meta, "fetched", folder / meta.hash)
        self.add_peers(meta.hash, peers)
        deadline = time.monotonic() + timeout
        no_metadata = None if metadata_timeout is None else time.monotonic() + metadata_timeout
        try:
            while not t.finished.done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SwarmFailed(f"blob {meta.hash} did not finish in {timeout:.0f} s")
                if t.ref is not None and no_metadata is not None and time.monotonic() >= no_metadata:
                    raise SwarmFailed(f"no peer sent the torrent of blob {meta.hash} in {metadata_timeout} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(t.finished), min(left, TICK_SECONDS))
                if progress is not None:
                    st = t.handle.status()
                    progress(st.total_wanted_done, t.meta.size, st.num_peers)
            t.finished.result()
            t.flushed = asyncio.get_running_loop().create_future()
            t.handle.flush_cache()
            await asyncio.wait_for(asyncio.shield(t.flushed), max(1.0, deadline - time.monotonic()))
            path = folder / meta.hash
            digest = await asyncio.to_thread(_sha256, path)
            if digest != meta.hash:
                raise BadBlob(f"the swarm's bytes hash to {digest}, not the signed {meta.hash}")
            info = await asyncio.to_thread(store.adopt, path, expect=meta.hash, namespace=namespace)
            if not t.meta.data:  # fetched by info-hash: the full torrent, for offers made from here
                t.meta = await asyncio.to_thread(make_torrent, path)
        except BaseException:
            self.drop(meta.hash)
            raise
        if progress is not None:
            progress(t.meta.size, t.meta.size, t.handle.status().num_peers)
        t.seed_until = time.monotonic() + self.seed_seconds
        self.fetched += 1
        return info

    # ------------------------------------------------------------------ visibility
    def stats(self) -> SwarmStats:
        out = SwarmStats(hash_failures=self.hash_failures, bans=self.bans, fetched=self.fetched)
        out.uploaded, out.downloaded = self._gone_up, self._gone_down
        for t in self._torrents.values():
            st = t.handle.status()
            out.torrents.append(
                TorrentStats(
                    t.meta.hash,
                    t.role,
                    t.meta.size,
                    st.progress,
                    st.num_peers,
                    st.total_payload_upload,
                    st.total_payload_download,
                )
            )
            out.uploaded += st.total_payload_upload
            out.downloaded += st.total_payload_download
        return out

    # ------------------------------------------------------------------ internals
    def _session(self) -> lt.session:
        if self._ses is None:
            raise SwarmFailed("the swarm session is not started")
        return self._ses

    def _add(
        self,
        ses: lt.session,
        params: lt.add_torrent_params,
        meta: TorrentMeta,
        role: str,
        download: Path | None,
    ) -> _Torrent:
        handle = ses.add_torrent(params)
        t = _Torrent(meta, handle, role, asyncio.get_running_loop().create_future(), download=download)
        if role == "origin":
            t.finished.set_result(None)
        self._torrents[meta.hash] = t
        self._by_handle[handle] = t
        return t

    def _watch(self, ses: lt.session, loop: asyncio.AbstractEventLoop) -> None:
        """The watcher thread (rule 2): wake the loop when alerts wait, then wait until it popped them."""
        while not self._closing.is_set():
            if not ses.wait_for_alert(250):
                continue
            self._popped.clear()
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop is closed
                return
            while not self._popped.wait(0.1) and not self._closing.is_set():
                pass

    async def _pump_alerts(self) -> None:
        while self._ses is not None:
            await self._wake.wait()
            self._wake.clear()
            ses = self._ses
            if ses is None:
                return
            try:
                for alert in ses.pop_alerts():
                    self._on_alert(alert)
            finally:
                self._popped.set()

    def _on_alert(self, alert: lt.alert) -> None:
        if isinstance(alert, lt.hash_failed_alert):
            self.hash_failures += 1
            log.warning("swarm: a piece of %s failed its hash check", alert.torrent_name)
            return
        if isinstance(alert, lt.peer_ban_alert):
            self.bans += 1
            log.warning("swarm: banned peer %s of %s (bad pieces)", alert.ip, alert.torrent_name)
            return
        t = self._by_handle.get(alert.handle) if isinstance(alert, lt.torrent_alert) else None
        if t is None:
            return
        if isinstance(alert, lt.metadata_received_alert) and t.ref is not None:
            ref, t.ref = t.ref, None
            ti = t.handle.torrent_file()
            try:
                ref.check(ti)
            except BadBlob as exc:
                if not t.finished.done():
                    t.finished.set_exception(exc)
                return
            if not t.meta.size and ti is not None:
                t.meta = dataclasses.replace(t.meta, size=ti.total_size())
            t.handle.unset_flags(lt.torrent_flags.upload_mode)
        elif isinstance(alert, lt.torrent_finished_alert):
            if not t.finished.done():
                t.finished.set_result(None)
        elif isinstance(alert, lt.cache_flushed_alert):
            if t.flushed is not None and not t.flushed.done():
                t.flushed.set_result(None)
        elif isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)) and not t.finished.done():
            t.finished.set_exception(SwarmFailed(f"swarm error on blob {t.meta.hash}: {alert.message()}"))

    async def _ticks(self) -> None:
        """Ends the seeding of fetched blobs whose time or the upload budget ran out (rule 5)."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            fetched = [t for t in self._torrents.values() if t.role == "fetched" and t.seed_until is not None]
            uploaded = sum(t.handle.status().total_payload_upload for t in fetched)
            over = uploaded + self._fetched_upload >= self.upload_budget
            for t in fetched:
                if over or now >= (t.seed_until or now):
                    log.info("swarm: stopped seeding %s (%s)", t.meta.hash, "budget" if over else "time")
                    self._fetched_upload += t.handle.status().total_payload_upload
                    self.drop(t.meta.hash)


def _params(meta: TorrentMeta, folder: Path) -> lt.add_torrent_params:
    params = lt.add_torrent_params()
    params.ti = meta.info()
    params.save_path = str(folder)
    params.flags &= ~lt.torrent_flags.auto_managed  # the queue must not pause it
    params.flags &= ~lt.torrent_flags.paused
    return params


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _destroy(holder: list[lt.session]) -> None:
    ses = holder.pop()
    ses.pause()
    del ses  # the last reference: the session's destructor joins its threads here
