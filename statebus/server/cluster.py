"""Many nodes in one process, in one DHT: the federation tests, benchmarks, in-process devnets.

    cluster = Cluster(tmp)
    a = await cluster.add("a")         # the first node starts the DHT
    b = await cluster.add("b")         # later ones join through running nodes
    await cluster.stop("a")            # its data stays; add("a") brings it back on a new port
    await cluster.aclose()

Every node is started by :func:`statebus.server.start`, as ``statebus serve`` starts one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from statebus.config import Settings
from statebus.server.running import RunningNode, start


async def start_node(
    data_dir: Path,
    *,
    dht_name: str | None = "devnet",
    dht_secret: bytes = b"",
    bootstrap: list[tuple[str, int]] | None = None,
    backoff_base: float = 0.25,
    backoff_cap: float = 30.0,
    **settings: Any,
) -> RunningNode:
    """Start a node on ``data_dir`` (created on first use; the identity is kept there).

    ``dht_name=None`` runs without a DHT (peers then come from ``via`` addresses only). Settings
    default to 127.0.0.1, port 0, DHT port 0, log level warning.
    """
    options: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "dht_port": 0, "log_level": "warning"}
    options.update(settings)
    if dht_name is not None:
        options["dht_name"] = dht_name
    config = dataclasses.replace(Settings(data_dir=data_dir), **options)
    return await start(
        config,
        dht=dht_name is not None,
        dht_secret=dht_secret,
        bootstrap=bootstrap or [],
        backoff_base=backoff_base,
        backoff_cap=backoff_cap,
    )


class Cluster:
    """Many nodes in one process, in one DHT (``await cluster.add("a")`` … ``await cluster.aclose()``)."""

    def __init__(self, base: Path, *, dht_name: str = "devnet", dht_secret: bytes = b"", **settings: Any):
        self.base = base
        self.dht_name = dht_name
        self.dht_secret = dht_secret
        self.settings = settings
        self.nodes: dict[str, RunningNode] = {}

    def __getitem__(self, name: str) -> RunningNode:
        return self.nodes[name]

    async def add(self, name: str, **settings: Any) -> RunningNode:
        bootstrap = [
            (n.settings.host, n.directory.port) for n in self.nodes.values() if n.directory is not None
        ][:3]
        options = {**self.settings, **settings}
        node = await start_node(
            self.base / name,
            dht_name=self.dht_name,
            dht_secret=self.dht_secret,
            bootstrap=bootstrap,
            **options,
        )
        self.nodes[name] = node
        return node

    async def stop(self, name: str) -> None:
        await self.nodes.pop(name).stop()

    async def aclose(self) -> None:
        for name in list(self.nodes):
            await self.stop(name)
