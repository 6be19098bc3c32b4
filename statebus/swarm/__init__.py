"""Swarming: blobs as BitTorrent torrents (libtorrent), with peers found only through our own machinery.

``torrent.py`` makes a deterministic hybrid (v1+v2) torrent of a stored blob; ``session.py`` holds the
process's one libtorrent session (every public discovery off), its alerts bridged to asyncio, and the
seed and fetch of blobs, checked against the owner-signed sha256 before they reach the blob store.
This package does I/O (files, sockets), so the core never imports it.
"""

from statebus.swarm.session import SwarmSession, SwarmStats, TorrentStats, session_settings
from statebus.swarm.torrent import TorrentMeta, TorrentRef, check_signed, make_torrent, signed_pointer

__all__ = [
    "SwarmSession",
    "SwarmStats",
    "TorrentMeta",
    "TorrentRef",
    "TorrentStats",
    "check_signed",
    "make_torrent",
    "session_settings",
    "signed_pointer",
]
