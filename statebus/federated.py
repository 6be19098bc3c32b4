"""A federated node in one asyncio loop: HTTP node + peer endpoints + DHT + followers.

This composes what ``statebus.server`` builds (node, app, uvicorn) with ``statebus.federation``
(DHT directory, :class:`~statebus.federation.service.Federation`) and ``statebus.http.peers`` (the
server-to-server routes). Devnet, the federation tests and the benchmarks run nodes through it::

    node = await start_node(tmp / "a", dht_name="devnet", dht_secret=b"…", bootstrap=[])
    print(node.url, node.pubkey)
    await node.stop()

Signals are left to the caller (uvicorn's own handlers are not installed), so many nodes can share a
process and stop in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from statebus.access.control import access_control
from statebus.config import Settings
from statebus.errors import InvalidValue, PeerUnavailable
from statebus.federation.dht import KademliaDirectory
from statebus.federation.dht_storage import StorageLimits
from statebus.federation.policy import FOLLOWS, SHARES, Follow, check_pattern, follow_id, new_follow
from statebus.federation.service import Federation
from statebus.http.app import build_app
from statebus.http.peers import PeerEndpoints, routes
from statebus.identity import Identity, keystore
from statebus.runtime import Node
from statebus.server import StatebusServer, build_node, login_url, owner_token, uvicorn_config

START_TIMEOUT = 10.0


class EmbeddedServer(StatebusServer):
    """uvicorn without its signal handlers: the process owner decides when nodes stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def federated_app(node: Node, settings: Settings, federation: Federation) -> tuple[Starlette, PeerEndpoints]:
    """The node's app with the peer routes mounted first (what ``create_app`` should do)."""
    app = build_app(node, settings, owner_token=owner_token(settings), close_node=False)
    endpoints = PeerEndpoints(node, settings, federation)
    app.router.routes[0:0] = routes(node, settings, federation, endpoints)
    app.state.peers = endpoints
    app.state.federation = federation
    return app, endpoints


@dataclass
class FederatedNode:
    settings: Settings
    identity: Identity
    node: Node
    federation: Federation
    server: EmbeddedServer
    endpoints: PeerEndpoints
    directory: KademliaDirectory | None
    task: asyncio.Task[None] | None = None

    @property
    def pubkey(self) -> str:
        return self.identity.pubkey

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.server.port}"

    @property
    def login_url(self) -> str:
        """The owner's login link (secret)."""
        return login_url(self.settings, self.server.port)

    @property
    def token(self) -> str:
        return owner_token(self.settings)

    async def share(self, pattern: str) -> None:
        """Let peers read ``pattern`` of this node's namespace (``/~/.shares/<id>``)."""
        p = check_pattern(pattern, self.pubkey)
        await self.node.save(f"/~/{SHARES}/{follow_id(p)}", {"pattern": p})

    async def follow(self, pattern: str, via: Sequence[str] = ()) -> Follow:
        """Follow ``pattern`` (``/~/.follows/<id>``), trying ``via`` addresses besides the DHT."""
        f = new_follow(self.pubkey, pattern, tuple(via))
        await self.node.save(f"/~/{FOLLOWS}/{f.id}", f.to_json())
        return f

    async def unfollow(self, pattern: str) -> None:
        await self.node.delete(f"/~/{FOLLOWS}/{follow_id(check_pattern(pattern, self.pubkey))}")

    async def stop(self) -> None:
        """Stop following, end peer streams, stop HTTP, write everything, leave the DHT."""
        await self.federation.stop()
        self.endpoints.close_all()
        self.server.statebus_app.state.streams.close_all()
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        await self.node.aclose()
        if self.directory is not None:
            await self.directory.stop()


async def start_node(
    data_dir: Path,
    *,
    dht_name: str | None = "devnet",
    dht_secret: bytes = b"",
    bootstrap: Sequence[tuple[str, int]] = (),
    backoff_base: float = 0.25,
    backoff_cap: float = 30.0,
    **settings: Any,
) -> FederatedNode:
    """Start a federated node on ``data_dir`` (created on first use; the identity is kept there).

    ``dht_name=None`` runs without a DHT (peers then come from ``via`` addresses only). Settings
    default to 127.0.0.1, port 0, DHT port 0, log level warning.
    """
    options: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "dht_port": 0, "log_level": "warning"}
    options.update(settings)
    if dht_name is not None:
        options["dht_name"] = dht_name
    config = dataclasses.replace(Settings(data_dir=data_dir), **options)
    return await start_federated(
        config,
        dht=dht_name is not None,
        dht_secret=dht_secret,
        bootstrap=bootstrap,
        backoff_base=backoff_base,
        backoff_cap=backoff_cap,
    )


async def start_federated(
    config: Settings,
    *,
    dht: bool = True,
    dht_secret: bytes | None = None,
    bootstrap: Sequence[tuple[str, int]] | None = None,
    backoff_base: float = 0.25,
    backoff_cap: float = 30.0,
    on_new_identity: Callable[[Identity, str], bool | None] | None = None,
) -> FederatedNode:
    """Start the node ``config`` describes: HTTP, peer endpoints, the DHT (``config.dht_*``) and
    its followers. What ``statebus serve`` runs; the caller owns signals and calls ``stop()``.

    ``dht_secret`` and ``bootstrap`` default to ``config.dht_secret`` and ``config.dht_bootstrap``.
    """
    node = build_node(config, on_new_identity=on_new_identity)
    identity = keystore.load(config.data_dir)
    directory = None
    if dht:
        if dht_secret is None:
            dht_secret = config.dht_secret.reveal().encode() if config.dht_secret is not None else b""
        if bootstrap is None:
            bootstrap = parse_bootstrap(config.dht_bootstrap)
        seed, _ = identity.export_secret()
        directory = KademliaDirectory(
            seed,
            config.dht_name,
            dht_secret,
            interface=config.host,
            port=config.dht_port,
            wait_timeout=0.5,
            limits=StorageLimits.from_settings(config),
            self_check_interval=config.dht_self_check_interval,
        )
        try:
            await directory.start(list(bootstrap))
        except BaseException:
            await node.aclose()
            raise
    control = access_control(node, config)
    fed = Federation(
        node,
        identity,
        config,
        directory=directory,
        backoff_base=backoff_base,
        backoff_cap=backoff_cap,
        access=control,
        gate=control.op_gate,  # one gate, one quota counter for federation and the signed-op route
    )
    app, endpoints = federated_app(node, config, fed)
    server = EmbeddedServer(uvicorn_config(app, config, loop="asyncio"), app)
    task = asyncio.get_running_loop().create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT
    while not server.started:
        if task.done() or asyncio.get_running_loop().time() > deadline:
            server.should_exit = True
            await node.aclose()
            if directory is not None:
                await directory.stop()
            raise PeerUnavailable(f"the node's HTTP server did not start on {config.host}:{config.port}")
        await asyncio.sleep(0.01)
    fnode = FederatedNode(config, identity, node, fed, server, endpoints, directory, task)
    await fed.start([fnode.url])
    return fnode


def parse_bootstrap(items: Sequence[str]) -> list[tuple[str, int]]:
    """``host:port`` strings (settings, CLI) as DHT bootstrap addresses."""
    out = []
    for item in items:
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidValue(f"a bootstrap peer is host:port, not {item!r}")
        out.append((host, int(port)))
    return out


class Cluster:
    """Many federated nodes in one process, in one DHT (tests, benchmarks, in-process devnets).

    ``await cluster.add("a")`` starts a node in ``base/a`` (the first one starts the DHT, later ones
    join through any running node); ``await cluster.stop("a")`` takes it down (its data stays) and
    ``await cluster.add("a")`` brings it back on a new port; ``await cluster.aclose()`` stops them all.
    """

    def __init__(self, base: Path, *, dht_name: str = "devnet", dht_secret: bytes = b"", **settings: Any):
        self.base = base
        self.dht_name = dht_name
        self.dht_secret = dht_secret
        self.settings = settings
        self.nodes: dict[str, FederatedNode] = {}

    def __getitem__(self, name: str) -> FederatedNode:
        return self.nodes[name]

    async def add(self, name: str, **settings: Any) -> FederatedNode:
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
