"""What the invite tests share: an inviter with the guestbook installed, the CLI in a thread, and a
fingerprint of a data folder (every file's path, size and hash) to show a refusal wrote nothing."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

from statebus.apps.bundle import open_bundle, pack, sign
from statebus.apps.registry import AppRegistry, InstalledApp
from statebus.cli import main
from statebus.config import Settings
from statebus.server import RunningNode, start
from tests.apps.bundles import app_copy

MAX = 8 << 20
FAST: dict[str, Any] = {"sse_ping_interval": 0.3, "backoff_base": 0.05, "backoff_cap": 0.4}


async def install_guestbook(node: RunningNode, folder: Path, **changes: object) -> InstalledApp:
    """apps/guestbook, authored and signed by ``node``, installed on it with what it asks for."""
    src = app_copy(folder, node.identity, **changes)
    data = pack(src, MAX)
    bundle = open_bundle(data, sign(data, node.identity), MAX)
    registry: AppRegistry = node.server.statebus_app.state.app_registry
    return await registry.install(bundle, bundle.manifest.permissions)


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # a failure: one line on stderr, status 1
        return int(exc.code or 0)


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(run, list(argv))


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder``: relative path → sha256 (an absent folder is empty)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    } | {str(p.relative_to(folder)) + "/": "dir" for p in folder.rglob("*") if p.is_dir()}


async def start_joined(data: Path, **settings: Any) -> RunningNode:
    """Start the node of a joined data folder as `statebus serve` would (its DHT from dht.json)."""
    options = {"host": "127.0.0.1", "port": 0, "dht_port": 0, "log_level": "warning", **FAST, **settings}
    backoff = {k: options.pop(k) for k in ("backoff_base", "backoff_cap")}
    return await start(Settings(data_dir=data, **options), **backoff)
