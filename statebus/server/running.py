"""The one way a node starts: :func:`start` builds it, serves it and starts its federation.

    running = await start(settings)           HTTP + peer endpoints + DHT + followers, in this loop
    print(running.url, running.pubkey)
    await running.stop()

    serve(settings, on_start=print_banner)    the same until SIGINT/SIGTERM (``statebus serve``)

``statebus serve``, the test live server (:mod:`statebus.testing.live_server`) and the in-process
:class:`~statebus.server.cluster.Cluster` all start nodes here. Signals are left to the caller
(uvicorn's own handlers are not installed), so many nodes can share a process and stop in order.

Rules:
    1. Built in order: identity and node, DHT directory, federation, app, HTTP; a part that fails
       to start closes what was built before it.
    2. ``stop()`` undoes it in reverse: followers, peer streams, HTTP streams and server, the node
       (everything acknowledged is on disk), the DHT.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from statebus.access.control import AccessControl
from statebus.apps.handlers import AppHost
from statebus.config import Settings
from statebus.errors import InvalidValue, PeerUnavailable
from statebus.federation.dht import KademliaDirectory
from statebus.federation.dht_storage import StorageLimits
from statebus.federation.policy import FOLLOWS, SHARES, Follow, check_pattern, follow_id, new_follow
from statebus.federation.service import Federation
from statebus.http.app import NodeApp
from statebus.http.peers import PeerEndpoints
from statebus.identity import Identity, keystore
from statebus.invites.ledger import DhtAccess
from statebus.invites.membership import Membership, read_membership
from statebus.invites.node_join import NodeJoins
from statebus.mirror.push import keep_pushing
from statebus.runtime import Node
from statebus.server.assembly import NewIdentityHook, node_app, open_node
from statebus.server.listener import EmbeddedServer, tune_gc, uvicorn_config
from statebus.server.phrase import phrase_may_wait, phrase_reminder, show_phrase_last
from statebus.server.runfile import remove_run_file, write_run_file

START_TIMEOUT = 10.0


def login_url(settings: Settings, token: str, port: int | None = None) -> str:
    """The link that logs the owner in to the web UI (secret: show it to the owner only)."""
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    return f"http://{host}:{port if port is not None else settings.port}/login?token={token}"


@dataclass
class RunningNode:
    """A started node: its parts, its address, and :meth:`stop`."""

    settings: Settings
    identity: Identity
    node: Node
    access: AccessControl
    federation: Federation
    server: EmbeddedServer
    endpoints: PeerEndpoints
    directory: KademliaDirectory | None
    token: str = field(repr=False)
    """The owner token (secret), read once at start."""
    task: asyncio.Task[None] | None = None

    @property
    def pubkey(self) -> str:
        return self.identity.pubkey

    @property
    def apps(self) -> AppHost:
        """The node's hosted apps (``app.state.apps``, made by :func:`~statebus.server.assembly.node_app`)."""
        apps: AppHost = self.server.statebus_app.state.apps
        return apps

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        host = self.settings.host if ":" not in self.settings.host else f"[{self.settings.host}]"
        return f"http://{host}:{self.server.port}"

    @property
    def login_url(self) -> str:
        """The owner's login link (secret)."""
        return login_url(self.settings, self.token, self.server.port)

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


async def _start_directory(
    settings: Settings, identity: Identity, secret: bytes | None, bootstrap: Sequence[tuple[str, int]] | None
) -> tuple[KademliaDirectory, bytes]:
    """The started DHT directory and its network secret (held for invites, never logged)."""
    name = settings.dht_name
    member = read_membership(settings.data_dir) if secret is None and settings.dht_secret is None else None
    if member is not None:  # joined by invite (statebus.invites.membership, rule 2)
        name, secret = member.name, member.secret
        bootstrap = [*parse_bootstrap(settings.dht_bootstrap), *parse_bootstrap(member.peers)]
    if secret is None:
        secret = settings.dht_secret.reveal().encode() if settings.dht_secret is not None else b""
    if bootstrap is None:
        bootstrap = parse_bootstrap(settings.dht_bootstrap)
    seed, _ = identity.export_secret()
    directory = KademliaDirectory(
        seed,
        name,
        secret,
        interface=settings.host,
        port=settings.dht_port,
        wait_timeout=0.5,
        limits=StorageLimits.from_settings(settings),
        self_check_interval=settings.dht_self_check_interval,
    )
    await directory.start(list(bootstrap))
    return directory, secret


async def start(
    settings: Settings,
    *,
    dht: bool = True,
    dht_secret: bytes | None = None,
    bootstrap: Sequence[tuple[str, int]] | None = None,
    backoff_base: float = 0.25,
    backoff_cap: float = 30.0,
    on_new_identity: NewIdentityHook | None = None,
    hold: asyncio.Event | None = None,
) -> RunningNode:
    """Start the node ``settings`` describes in the running loop: HTTP, peer endpoints, the DHT
    (``settings.dht_*``; none with ``dht=False``) and its followers. The caller owns signals and
    calls ``stop()``.

    Args:
        settings: everything configurable; ``port=0`` and ``dht_port=0`` pick free ports.
        dht: join the DHT (else peers come from ``via`` addresses only).
        dht_secret, bootstrap: default to ``settings.dht_secret`` and ``settings.dht_bootstrap``.
        backoff_base, backoff_cap: followers' reconnect delays in seconds.
        on_new_identity: shows a new identity's recovery phrase (:mod:`statebus.server.phrase`).
        hold: requests wait until this event is set (the node listens, but serves nothing yet).

    Raises:
        PeerUnavailable: the HTTP server did not start (the port is taken, say).
    """
    identity, node = open_node(settings, on_new_identity=on_new_identity)
    directory: KademliaDirectory | None = None
    network_secret = b""
    federation: Federation | None = None
    try:
        token = keystore.load_owner_token(settings.data_dir)
        access = AccessControl(node, settings)
        if dht:
            directory, network_secret = await _start_directory(settings, identity, dht_secret, bootstrap)
        federation = Federation(
            node,
            identity,
            settings,
            directory=directory,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            access=access,
            gate=access.op_gate,  # one gate, one quota counter for federation and the signed-op route
        )
        app = node_app(
            node,
            settings,
            owner_token=token,
            access=access,
            federation=federation,
            close_node=False,
            app_follow=_app_follower(node),
        )
        app.state.app_registry.load_all()  # every installed app, re-checked, into the AppHost
        if isinstance(app, NodeApp):
            app.hold = hold
        elif hold is not None:
            raise TypeError("only a NodeApp can hold requests")
        server = EmbeddedServer(uvicorn_config(app, settings, loop="asyncio"), app)
        task = await _listen(server, settings)
    except BaseException:
        await _close(node, directory, federation)
        raise
    running = RunningNode(
        settings, identity, node, access, federation, server, app.state.peers, directory, token, task
    )
    await federation.start([running.url])
    _open_invites(running, network_secret)
    _open_joins(running)
    pushes = asyncio.get_running_loop().create_task(
        keep_pushing(node, identity, settings.data_dir, settings.mirror_push_interval)
    )
    node.on_close.append(functools.partial(_cancel, pushes))  # the pusher stops before the store closes
    return running


def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()


def _open_invites(running: RunningNode, network_secret: bytes) -> None:
    """Tell the node's invite ledger its addresses, its DHT and how to follow back."""
    ledger = running.server.statebus_app.state.invites
    ledger.addrs, host = invite_addresses(running.settings, running.url)
    d = running.directory
    if d is not None and ledger.addrs:
        ledger.dht = DhtAccess(d.dht_name, network_secret, f"{host}:{d.port}")
    ledger.follow = running.follow


def _open_joins(running: RunningNode) -> None:
    """Let the owner join with a link while the node runs (``statebus join`` hands it over)."""
    app = running.server.statebus_app
    s = running.settings
    bound = s.dht_name if s.dht_secret is not None else None  # a node given a DHT secret stays in it
    enter = functools.partial(_enter_dht, running)
    app.state.invite_routes.joins = NodeJoins(
        app.state.invites, max_bytes=s.app_bundle_max_bytes, bound_dht=bound, enter=enter
    )


async def _enter_dht(running: RunningNode, member: Membership) -> None:
    """The running node leaves its DHT for the one an invite made it a member of (the inviter its
    first peer), publishes its addresses there, and points its federation, DHT routes and invites at it."""
    s = running.settings
    seed, _ = running.identity.export_secret()
    old = running.directory
    if old is not None:
        await old.stop()
    directory = KademliaDirectory(
        seed,
        member.name,
        member.secret,
        interface=s.host,
        port=s.dht_port,
        wait_timeout=0.5,
        limits=StorageLimits.from_settings(s),
        self_check_interval=s.dht_self_check_interval,
    )
    await directory.start(parse_bootstrap(member.peers))
    running.directory = directory
    running.federation.directory = directory
    app = running.server.statebus_app
    if getattr(app.state, "dht_view", None) is not None:
        app.state.dht_view.directory = directory
    if running.federation.urls:
        await directory.publish(list(running.federation.urls))
    ledger = app.state.invites
    addrs, host = invite_addresses(s, running.url)
    if addrs:
        ledger.dht = DhtAccess(member.name, member.secret, f"{host}:{directory.port}")


def invite_addresses(settings: Settings, url: str) -> tuple[tuple[str, ...], str]:
    """The addresses an invite gives (``public_origins``, then ``url`` unless the node listens on
    every interface: 0.0.0.0 is no address to give a friend) and the host of its DHT address."""
    origins = tuple(settings.public_origins)
    wildcard = settings.host in ("0.0.0.0", "::", "")
    addrs = origins if wildcard else (*origins, url)
    host = settings.host if not wildcard else (urlsplit(addrs[0]).hostname or "" if addrs else "")
    return addrs, f"[{host}]" if ":" in host else host


def _app_follower(node: Node) -> Callable[[str, Sequence[str]], Awaitable[None]]:
    """How an app install follows an author's ``/.apps/`` (as :meth:`RunningNode.follow`)."""

    async def follow(pattern: str, via: Sequence[str]) -> None:
        f = new_follow(node.local, pattern, tuple(via))
        await node.save(f"/~/{FOLLOWS}/{f.id}", f.to_json())

    return follow


async def _listen(server: EmbeddedServer, settings: Settings) -> asyncio.Task[None]:
    """Serve in a task of the running loop; return it once the socket listens."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(server.serve())
    deadline = loop.time() + START_TIMEOUT
    while not server.started:
        if task.done() or loop.time() > deadline:
            server.should_exit = True
            raise PeerUnavailable(f"the node's HTTP server did not start on {settings.host}:{settings.port}")
        await asyncio.sleep(0.01)
    return task


async def _close(node: Node, directory: KademliaDirectory | None, federation: Federation | None) -> None:
    """Close what a failed :func:`start` built, newest first."""
    if federation is not None:
        await federation.stop()  # safe before start: closes its HTTP client
    await node.aclose()
    if directory is not None:
        await directory.stop()


def parse_bootstrap(items: Sequence[str]) -> list[tuple[str, int]]:
    """``host:port`` strings (settings, CLI) as DHT bootstrap addresses."""
    out = []
    for item in items:
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidValue(f"a bootstrap peer is host:port, not {item!r}")
        out.append((host, int(port)))
    return out


def serve(
    settings: Settings,
    *,
    on_start: Callable[[RunningNode], None] | None = None,
    on_new_identity: NewIdentityHook | None = None,
    confirm_phrase: bool = True,
    **options: Any,
) -> None:
    """Run the node (:func:`start`; ``options`` go to it) until SIGINT or SIGTERM, then stop it:
    everything acknowledged is on disk when it returns. What ``statebus serve`` runs.

    Sets the process umask to 077 first (the database and its WAL files are private to the user),
    runs on uvloop when installed, tunes the collector once started (:func:`tune_gc`), writes the
    run file (``<data>/node.json``, removed on the way out), calls ``on_start(running)`` (the
    banner), then shows a recovery phrase still waiting to be shown: on a terminal, last, framed,
    waiting for Enter (:func:`~statebus.server.phrase.show_phrase_last`; ``confirm_phrase=False``
    prints it without waiting), else the reminder to run ``statebus phrase``.
    """
    os.umask(0o077)
    logging.getLogger("rpcudp").setLevel(logging.ERROR)  # late DHT replies are normal, not news
    loop_factory = None
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_run_until_signal(settings, on_start, on_new_identity, options, confirm_phrase))


async def _run_until_signal(
    settings: Settings,
    on_start: Callable[[RunningNode], None] | None,
    on_new_identity: NewIdentityHook | None,
    options: dict[str, Any],
    confirm_phrase: bool = True,
) -> None:
    # on a terminal the phrase of a new identity may wait for Enter: serve nothing until then
    hold = asyncio.Event() if phrase_may_wait(confirm_phrase) else None
    running = await start(settings, on_new_identity=on_new_identity, hold=hold, **options)
    tune_gc()  # no long full-collection pauses under many streams
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        write_run_file(settings.data_dir, running.url)
        if on_start is not None:
            on_start(running)
        shown = await show_phrase_last(settings, stop, confirm=confirm_phrase)
        if hold is not None:
            hold.set()
        if not shown:
            reminder = phrase_reminder(settings)
            if reminder is not None and settings.log_format == "json":
                logging.getLogger("statebus.server").warning(reminder.strip())  # no bare line among JSON
            elif reminder is not None:
                sys.stderr.write(reminder)
                sys.stderr.flush()
        await stop.wait()
    finally:
        remove_run_file(settings.data_dir)
        await running.stop()
