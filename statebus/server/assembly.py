"""Settings → identity, storage, bus, node, access rules → the Starlette app: each part built once.

    open_node(settings)          the node identity (created on first start) and the Node on
                                 ``<data>/store.sqlite3``, signed by that identity
    node_app(node, settings, …)  the app ``statebus serve`` ships: the node's routes, and the peer
                                 routes when a federation is given
    create_app(settings)         that app for a data folder, without federation (in-process tests,
                                 benchmarks); its lifespan closes the node
    make_server(settings)        uvicorn running :func:`create_app` on its own loop (the benchmarks)

Rules:
    1. The identity and the owner token are read from disk once per node, here, and passed down.
    2. One :class:`~statebus.access.control.AccessControl` per node, made here and handed to every
       transport (HTTP, websocket, peer endpoints, federation): one rate table, one quota counter.
    3. Every route is given to ``build_app``; nothing is spliced into the router afterwards.

On first start the node identity and owner token are created in ``<data>/identity/``. The recovery
phrase of a new identity is handed to ``on_new_identity``, which shows it once when a person can see
it (a terminal) and returns True; otherwise it stays in ``<data>/identity/recovery_phrase`` (0600)
until ``statebus phrase`` shows it (:mod:`statebus.server.phrase`). It is never logged.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from statebus.access.control import AccessControl
from statebus.apps.handlers import AppHost
from statebus.apps.install import AppService, BlobFailure, Follow
from statebus.apps.patterns import Grants
from statebus.apps.registry import AppRegistry
from statebus.apps.sandbox import Limits
from statebus.blobs import BlobStore
from statebus.bus import Bus
from statebus.config import Settings
from statebus.errors import NotFound, StatebusError
from statebus.federation.dht import KademliaDirectory
from statebus.federation.dht_view import DhtView
from statebus.federation.service import Federation
from statebus.http.app import build_app
from statebus.http.apps import AppRoutes
from statebus.http.blob_fetch import blob_fetch_routes
from statebus.http.dht import routes as dht_routes
from statebus.http.mirror import routes as mirror_routes
from statebus.http.peers import PeerEndpoints
from statebus.http.peers import routes as peer_routes
from statebus.identity import atrest, keystore
from statebus.identity.keys import Identity
from statebus.identity.signing import seal_batch
from statebus.invites.ledger import Ledger
from statebus.invites.routes import InviteRoutes
from statebus.mirror import MirrorStore
from statebus.oplog import Op
from statebus.runtime import Node, highwater
from statebus.server.listener import StatebusServer, uvicorn_config
from statebus.server.logs import install_log_redaction
from statebus.server.phrase import phrase_reminder, show_phrase_on_terminal
from statebus.storage.sqlite import SqliteStorage

log = logging.getLogger("statebus.server")

STORE_FILE = "store.sqlite3"
BLOBS_DIR = "blobs"

NewIdentityHook = Callable[[Identity, str], bool | None]
"""``on_new_identity(identity, phrase)`` shows a new identity's phrase; True when a person saw it."""


def ensure_identity(data_dir: Path, on_new_identity: NewIdentityHook | None = None) -> Identity:
    """Load the node identity, creating it (and the owner token) on first start.

    A new identity's phrase is kept on disk until shown: deleted at once when ``on_new_identity``
    returns True, else left for ``statebus phrase`` (:func:`~statebus.server.phrase.phrase_reminder`)."""
    if not keystore.exists(data_dir):
        identity, phrase = keystore.init(data_dir, keep_phrase=True)
        if on_new_identity is not None and on_new_identity(identity, phrase) is True:
            keystore.discard_phrase(data_dir)
        log.info("created node identity %s", identity.pubkey)
        return identity
    identity = keystore.load(data_dir)
    try:
        keystore.load_owner_token(data_dir)
    except NotFound:
        keystore.new_owner_token(data_dir)
    return identity


def owner_token(settings: Settings) -> str:
    """The owner token of the node in ``settings.data_dir`` (secret: never log it)."""
    return keystore.load_owner_token(settings.data_dir)


def batch_signer_for(identity: Identity) -> Callable[[list[Op]], list[Op]]:
    """Sign each commit's local, unsigned ops with one signature, in place (``seal_batch``: the op
    the write made is the op stored and sent); ops of other authors pass as they are."""

    def sign(ops: list[Op]) -> list[Op]:
        mine = [op for op in ops if op.author == identity.pubkey and not op.sig]
        if mine:
            seal_batch(mine, identity)
        return ops

    return sign


def open_node(settings: Settings, *, on_new_identity: NewIdentityHook | None = None) -> tuple[Identity, Node]:
    """The identity of ``settings.data_dir`` (created on first start) and its node: SQLite store,
    bus, Node. Ops written on the node are signed by the identity, one signature per group commit."""
    data = Path(settings.data_dir)
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = atrest.unlock(data, key_file=settings.at_rest_key_file)  # None: not encrypted at rest
    identity = ensure_identity(data, on_new_identity)
    storage = SqliteStorage(
        data / STORE_FILE,
        check="full" if settings.store_full_check else "quick",
        durability=settings.durability,
        key=key,
    )
    bus = Bus(
        storage,
        local=identity.pubkey,
        keep_ops=settings.history_keep_ops,
        max_doc_bytes=settings.max_yjs_doc_bytes,
        max_value_bytes=settings.max_value_bytes,
    )
    blobs = BlobStore(data / BLOBS_DIR, max_bytes=settings.max_blob_bytes, sealer=atrest.blob_sealer(key))
    node = Node(
        bus, batch_signer=batch_signer_for(identity), max_buffer=settings.subscriber_buffer, blobs=blobs
    )
    highwater.guard(node, data, accept_loss=settings.accept_store_loss)  # a deleted store refuses writes
    return identity, node


def build_node(settings: Settings, *, on_new_identity: NewIdentityHook | None = None) -> Node:
    """The node of ``settings.data_dir`` (:func:`open_node` without the identity)."""
    return open_node(settings, on_new_identity=on_new_identity)[1]


def app_service(
    node: Node,
    settings: Settings,
    host: AppHost | None,
    *,
    follow: Follow | None = None,
    blob_failure: BlobFailure | None = None,
) -> AppService:
    """The node's installed apps (``<data>/apps/``, ``/~/.apps/``), run by ``host``. Nothing is
    loaded yet: :func:`statebus.server.running.start` calls ``registry.load_all()`` on the loop."""
    registry = AppRegistry(settings.data_dir, node, max_bytes=settings.app_bundle_max_bytes, host=host)
    return AppService(registry, settings, follow=follow, blob_failure=blob_failure)


def _installed_grants(registry: AppRegistry) -> Callable[[str, str], Grants | None]:
    """The grants of an app installed from a given bundle (what a stored capability comes back with)."""

    def resolve(name: str, install: str) -> Grants | None:
        try:
            app = registry.get(name)
        except StatebusError:
            return None
        return app.granted if app is not None and app.bundle_hash == install else None

    return resolve


def node_app(
    node: Node,
    settings: Settings,
    *,
    owner_token: str | None,
    access: AccessControl,
    federation: Federation | None = None,
    close_node: bool = True,
    app_follow: Follow | None = None,
) -> Starlette:
    """The app ``statebus serve`` ships for ``node``; with ``federation``, the peer routes come
    first and ``app.state`` also holds ``peers`` (the :class:`PeerEndpoints`) and ``federation``.
    ``app.state.apps`` is the node's :class:`~statebus.apps.handlers.AppHost` (hosted apps) and
    ``app.state.app_registry`` its :class:`~statebus.apps.registry.AppRegistry` (installed apps, served
    on their origins and managed through the owner's routes, :mod:`statebus.http.apps`);
    ``app_follow`` is how an install from ``/<author>/.apps/<name>`` follows the author."""
    limits = Limits(memory_bytes=settings.app_memory_bytes, call_seconds=settings.app_call_timeout)
    apps = AppHost(node, access.op_gate, limits=limits)
    node.on_aclose.append(apps.aclose)
    fetcher = federation.blobs if federation is not None else None
    failure = fetcher.failures.get if fetcher is not None else None
    service = app_service(node, settings, apps, follow=app_follow, blob_failure=failure)
    ledger = Ledger(node, keystore.load(settings.data_dir), settings.data_dir, service.registry)
    mirrors = MirrorStore(settings.data_dir, settings.mirror_for, settings.mirror_quota_bytes)
    invite_routes = InviteRoutes(ledger)
    app_routes = [
        *mirror_routes(mirrors, access),
        *AppRoutes(service).routes(),
        *invite_routes.routes(),
    ]
    access.capabilities.persist(Path(settings.data_dir), _installed_grants(service.registry))
    if federation is None:
        app = build_app(
            node,
            settings,
            owner_token=owner_token,
            access=access,
            close_node=close_node,
            extra_routes=[*dht_routes(None), *app_routes],
            apps=service.registry,
        )
        app.state.apps = apps
        app.state.app_registry = service.registry
        app.state.invites = ledger
        app.state.invite_routes = invite_routes
        app.state.app_origins.use(service.registry, apps)  # the node page shows its handlers' state
        return app
    endpoints = PeerEndpoints(node, settings, federation, access)
    directory = federation.directory
    dht = DhtView(directory if isinstance(directory, KademliaDirectory) else None)
    app = build_app(
        node,
        settings,
        owner_token=owner_token,
        access=access,
        extra_routes=[
            *peer_routes(node, settings, federation, endpoints),
            *blob_fetch_routes(federation),
            *dht_routes(dht),
            *app_routes,
        ],
        close_node=close_node,
        apps=service.registry,
    )
    app.state.peers = endpoints
    app.state.federation = federation
    app.state.dht_view = dht
    app.state.invite_routes = invite_routes
    apps.courier = federation.courier  # apps with a send grant deliver notices through it
    app.state.apps = apps
    app.state.app_registry = service.registry
    app.state.invites = ledger
    app.state.app_origins.use(service.registry, apps)  # the node page shows its handlers' state
    return app


def create_app(settings: Settings, *, on_new_identity: NewIdentityHook | None = None) -> Starlette:
    """The ASGI app of the node in ``settings.data_dir``, without federation; its lifespan shutdown
    ends every stream and closes the node (everything acknowledged is on disk). Installed apps are
    managed and served but their handlers are not loaded (that needs a running loop: use
    :func:`statebus.server.running.start`)."""
    _, node = open_node(settings, on_new_identity=on_new_identity)
    token = keystore.load_owner_token(settings.data_dir)
    return node_app(node, settings, owner_token=token, access=AccessControl(node, settings))


def make_server(settings: Settings, **overrides: Any) -> StatebusServer:
    """uvicorn serving :func:`create_app` on a loop of its own (``overrides`` go to ``uvicorn.Config``);
    the benchmarks' server. ``statebus serve`` runs :func:`statebus.server.start` instead."""
    app = create_app(settings, on_new_identity=show_phrase_on_terminal)
    reminder = phrase_reminder(settings)
    if reminder is not None:
        sys.stderr.write(reminder)
        sys.stderr.flush()
    server = StatebusServer(uvicorn_config(app, settings, **overrides), app)
    install_log_redaction()
    return server
