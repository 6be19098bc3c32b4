"""``GET /metrics``: the node's Prometheus metrics, in the text exposition format.

Served to the owner (owner token, login cookie, or a request signed with the node key); to anyone
when ``settings.metrics_public`` is true. Each app has its own :class:`CollectorRegistry`, so several
nodes in one process (tests, devnets) never share or clash on metric names.

Almost everything is read at scrape time by :class:`NodeCollector` from objects the node already
keeps (sequence numbers, the group committer's ``batches``/``ops_written``, stream counts, the store's
file sizes, the federation's followers when ``app.state.federation`` exists): nothing is added to the
write path. The only per-request cost is :class:`RequestCounter`, a small ASGI middleware that adds
one to a dict entry per HTTP response (method × status class).

Metrics (all prefixed ``statebus_``): ``seq``, ``durable_seq``, ``pending_ops``,
``commit_batches_total``, ``commit_ops_total`` (ops/s: its rate), ``storage_healthy``,
``storage_failures_total``, ``storage_rolled_back_ops_total``, ``event_streams`` (subscribers),
``fanout_queued_events`` and ``fanout_queued_events_max`` (fan-out lag, in changes),
``http_streams``, ``http_requests_total{method,code}``, ``store_bytes{file}``, and with federation
``follows``, ``follows_by_status{status}``, ``federation_known_peers``,
``federation_ops_applied_total``, ``federation_ops_rejected_total``, ``dht_neighbours``,
``peer_streams``, ``peer_sent_bytes_total``, ``peer_shed_total``, ``peer_relays`` (shedding), and with a
swarm (setting ``swarm``) ``swarm_torrents{role}``, ``swarm_peers``,
``swarm_uploaded_bytes_total``, ``swarm_downloaded_bytes_total``, ``swarm_share_ratio``,
``swarm_fetched_total``, ``swarm_hash_failures_total``, ``swarm_bans_total``,
``swarm_announces_total``, ``swarm_hot_blobs``; plus the
``process_*``/``python_*`` metrics of ``prometheus_client``. deploy/grafana-dashboard.json charts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.datastructures import State
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from statebus.apps.sandbox.base import COST_BUCKETS
from statebus.config import Settings
from statebus.errors import SIGN_IN_HINT, Forbidden, StatebusError, Unauthorized
from statebus.http.auth import OwnerAuth
from statebus.http.errors import statebus_error_response
from statebus.mirror.push import STATE_FILE as MIRRORS_FILE
from statebus.mirror.push import MirrorTargets
from statebus.mirror.push import status as mirror_status
from statebus.runtime import Node

METRICS_PATH: Final = "/metrics"
STORE_FILE: Final = "store.sqlite3"
"""The store's file name in the data folder (``statebus.server.STORE_FILE``, a layer above)."""
STORE_SUFFIXES: Final = {"": "db", "-wal": "wal", "-shm": "shm"}
METHODS: Final = frozenset({"GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS"})
"""Methods counted under their own name; any other is counted as ``other`` (bounded label values)."""


class NodeMetrics:
    """The metrics of one app: its registry, the request counts, the route and the middleware.

    Args:
        node: the node whose sequence numbers, committer and streams are read at scrape time.
        settings: ``data_dir`` (the store's files) and ``metrics_public``.
        streams: the app's open streaming responses (anything with ``len()``), if known.
        state: the app's ``state``; ``state.federation`` is read at scrape time when present.
        process: also export the ``process_*``/``python_*`` metrics of this process.
    """

    def __init__(
        self,
        node: Node,
        settings: Settings,
        *,
        streams: Any = None,
        state: State | None = None,
        process: bool = True,
    ) -> None:
        self.node = node
        self.settings = settings
        self.streams = streams
        self.state = state
        self.requests: dict[tuple[str, str], int] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(self))
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def render(self) -> bytes:
        """The current metrics in the Prometheus text format."""
        return generate_latest(self.registry)

    def store_path(self) -> Path:
        """The SQLite file of the node's store."""
        path = self.node.storage_path
        return path if path is not None else Path(self.settings.data_dir) / STORE_FILE

    def middleware(self) -> Middleware:
        """The :class:`RequestCounter` middleware for ``Starlette(middleware=[...])``."""
        return Middleware(RequestCounter, metrics=self)

    def routes(self, auth: OwnerAuth) -> list[BaseRoute]:
        """``GET /metrics``, for the owner (and anyone when ``metrics_public``)."""
        public = bool(getattr(self.settings, "metrics_public", False))

        async def metrics(request: Request) -> Response:
            try:
                client = auth.authenticate(request)
                if not client.owner and not public:
                    if client.anonymous:
                        raise Unauthorized(f"the metrics are the owner's. {SIGN_IN_HINT}")
                    raise Forbidden("the metrics are the owner's: send Authorization: Bearer <owner token>")
            except StatebusError as exc:
                return statebus_error_response(exc)
            return Response(
                self.render(), media_type=CONTENT_TYPE_LATEST, headers={"cache-control": "no-store"}
            )

        return [Route(METRICS_PATH, metrics, methods=["GET", "HEAD"])]


class RequestCounter:
    """ASGI middleware: counts HTTP responses by method and status class when they start.

    A streaming response (SSE, Braid) is counted when its headers go out. A request that fails before
    any response is counted as ``5xx``. Websockets and lifespan pass through untouched.

    Args:
        app: the wrapped app.
        metrics: whose ``requests`` are counted.
        on_error: when given, an exception escaping ``app`` before the response started is answered
            with ``on_error()`` (an ASGI response, e.g. a JSON 500) and then re-raised, as Starlette's
            ``ServerErrorMiddleware`` does; for a counter used outside Starlette's middleware stack.
    """

    def __init__(
        self, app: ASGIApp, metrics: NodeMetrics, on_error: Callable[[], ASGIApp] | None = None
    ) -> None:
        self.app = app
        self.counts = metrics.requests
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        if method not in METHODS:
            method = "other"
        counts = self.counts
        started = False

        async def counted(message: Message) -> None:
            nonlocal started
            if not started and message["type"] == "http.response.start":
                started = True
                key = (method, f"{message['status'] // 100}xx")
                counts[key] = counts.get(key, 0) + 1
            await send(message)

        try:
            await self.app(scope, receive, counted)
        except BaseException as exc:
            if not started:
                key = (method, "5xx")
                counts[key] = counts.get(key, 0) + 1
                if self.on_error is not None and isinstance(exc, Exception):
                    await self.on_error()(scope, receive, send)
            raise


class NodeCollector(Collector):
    """Reads the node's state at scrape time (no work on the write path)."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self.metrics
        node = m.node
        stats = node.commit_stats()
        yield _gauge("statebus_seq", "Sequence number of the node's latest op.", node.seq)
        yield _gauge(
            "statebus_durable_seq",
            "Sequence number up to which every op is on disk.",
            node.durable_seq,
        )
        yield _gauge("statebus_pending_ops", "Ops (and snapshots) waiting for the next commit.", node.pending)
        yield _counter("statebus_commit_batches", "Group-commit transactions written.", stats.batches)
        yield _counter("statebus_commit_ops", "Ops written by group commits.", stats.ops_written)
        yield _gauge(
            "statebus_storage_healthy",
            "1 while commits succeed; 0 from a failed commit (disk full) until a probe or commit succeeds.",
            int(stats.healthy),
        )
        yield _counter(
            "statebus_storage_failures", "Commits that failed and were rolled back.", stats.failures
        )
        yield _counter(
            "statebus_storage_rolled_back_ops",
            "Ops dropped by rollbacks (never acknowledged, never served).",
            stats.ops_rolled_back,
        )
        yield _gauge(
            "statebus_event_streams", "Open event streams (every subscription transport).", node.stream_count
        )
        queued, deepest = node.stream_backlog()
        yield _gauge(
            "statebus_fanout_queued_events",
            "Fan-out lag: changes committed but not yet taken by their subscribers, all streams together.",
            queued,
        )
        yield _gauge(
            "statebus_fanout_queued_events_max",
            "Fan-out lag of the slowest subscriber: the changes its stream holds (cut at max_buffer).",
            deepest,
        )
        if m.streams is not None:
            yield _gauge(
                "statebus_http_streams", "Open streaming HTTP responses (SSE, Braid).", len(m.streams)
            )
        requests = CounterMetricFamily(
            "statebus_http_requests", "HTTP responses by method and status class.", labels=["method", "code"]
        )
        for (method, code), count in sorted(m.requests.items()):
            requests.add_metric([method, code], count)
        yield requests
        store = GaugeMetricFamily(
            "statebus_store_bytes", "Size of the SQLite store's files.", labels=["file"]
        )
        base = m.store_path()
        for suffix, label in STORE_SUFFIXES.items():
            try:
                size = Path(f"{base}{suffix}").stat().st_size
            except OSError:
                continue
            store.add_metric([label], size)
        yield store
        yield from _federation(getattr(m.state, "federation", None) if m.state is not None else None)
        yield from _peers(getattr(m.state, "peers", None) if m.state is not None else None)
        yield from _connections(getattr(m.state, "connections", None) if m.state is not None else None)
        yield from _apps(getattr(m.state, "apps", None) if m.state is not None else None)
        auth = getattr(m.state, "auth", None) if m.state is not None else None
        yield from _app_capabilities(getattr(getattr(auth, "access", None), "capabilities", None))
        yield from _mirrors(node, m.settings.data_dir)


def _mirrors(node: Node, data_dir: Any) -> Iterator[Metric]:
    """The encrypted mirrors of ``mirrors.json`` (statebus.mirror): how far behind each is, when it
    was last pushed to and last proved it holds our data, and what it says it holds. The families
    are declared without samples when the node has no mirror, or when ``mirrors.json`` is malformed
    (``statebus mirror status`` says why)."""
    try:
        mirrors = (
            mirror_status(node, MirrorTargets(data_dir)) if Path(data_dir, MIRRORS_FILE).exists() else []
        )
    except StatebusError:
        mirrors = []
    families = {
        "lag": GaugeMetricFamily(
            "statebus_mirror_lag_ops", "This node's own ops not yet on the mirror.", labels=["mirror"]
        ),
        "push": GaugeMetricFamily(
            "statebus_mirror_last_push_timestamp_seconds",
            "When the last push ended (0: never).",
            labels=["mirror"],
        ),
        "proof": GaugeMetricFamily(
            "statebus_mirror_proof_ok",
            "1 if the mirror's last storage challenge was answered right.",
            labels=["mirror"],
        ),
        "proved": GaugeMetricFamily(
            "statebus_mirror_last_proof_timestamp_seconds",
            "When the last challenge was asked (0: never).",
            labels=["mirror"],
        ),
        "used": GaugeMetricFamily(
            "statebus_mirror_used_bytes",
            "Bytes of ciphertext the mirror says it holds for this node.",
            labels=["mirror"],
        ),
    }
    for s in mirrors:
        families["lag"].add_metric([s.url], s.lag_ops)
        families["push"].add_metric([s.url], s.last_push)
        families["proof"].add_metric([s.url], 1 if s.last_proof.get("ok") else 0)
        families["proved"].add_metric([s.url], float(s.last_proof.get("at", 0) or 0))
        families["used"].add_metric([s.url], s.used)
    yield from families.values()


def _app_capabilities(store: Any) -> Iterator[Metric]:
    """What installed apps' pages did with their capabilities (statebus.access.capabilities), by app:
    their writes are the owner's ops, so this is where they are attributed to the app."""
    if store is None or not store.use:
        return
    used = CounterMetricFamily(
        "statebus_app_capability_requests",
        "Key requests made with an app's capability, by app and outcome (read, write, refused).",
        labels=["app", "outcome"],
    )
    live = GaugeMetricFamily("statebus_app_capabilities", "Live capabilities of an app.", labels=["app"])
    for name, use in sorted(store.use.items()):
        for outcome in ("read", "write", "refused"):
            used.add_metric([name, outcome], getattr(use, outcome + "s" if outcome != "refused" else outcome))
        live.add_metric([name], store.live(name))
    yield used
    yield live


def _apps(apps: Any) -> Iterator[Metric]:
    """Metrics of a ``statebus.apps.handlers.AppHost`` (hosted apps' handler calls), by duck typing."""
    if apps is None:
        return
    status = apps.status()
    families = {
        "calls": CounterMetricFamily("statebus_app_calls", "Handler calls by app.", labels=["app"]),
        "traps": CounterMetricFamily("statebus_app_traps", "Handler calls that trapped.", labels=["app"]),
        "rejected": CounterMetricFamily(
            "statebus_app_rejected",
            "Writes an app refused (its verdict, a throw, its schema).",
            labels=["app"],
        ),
        "denied": CounterMetricFamily(
            "statebus_app_host_denied",
            "Host calls refused (outside the grants, over budget).",
            labels=["app"],
        ),
    }
    memory = GaugeMetricFamily(
        "statebus_app_memory_bytes", "Linear memory of the app's sandbox.", labels=["app"]
    )
    running = GaugeMetricFamily("statebus_app_running", "1 while the app's sandbox runs.", labels=["app"])
    cost = HistogramMetricFamily("statebus_app_call_seconds", "Seconds per handler call.", labels=["app"])
    for s in status:
        for attr, family in families.items():
            family.add_metric([s.name], getattr(s, attr))
        memory.add_metric([s.name], s.memory_bytes)
        running.add_metric([s.name], int(s.state == "running"))
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, COST_BUCKETS), "+Inf"], s.cost_buckets, strict=False):
            cumulative += count
            buckets.append((bound, cumulative))
        cost.add_metric([s.name], buckets, s.total_cost)
    yield from families.values()
    yield memory
    yield running
    yield cost


def _federation(fed: Any) -> Iterator[Metric]:
    """Metrics of a ``statebus.federation.Federation``, read by duck typing (http may not import it)."""
    if fed is None:
        return
    followers = getattr(fed, "followers", None)
    if isinstance(followers, dict):
        yield _gauge("statebus_follows", "Follows this node is running.", len(followers))
        states = GaugeMetricFamily(
            "statebus_follows_by_status",
            "Follows by status (live, syncing, incomplete, …).",
            labels=["status"],
        )
        counts: dict[str, int] = {}
        for follower in followers.values():
            status = str(getattr(follower, "status", "unknown"))
            if status == "live" and getattr(follower, "incomplete", None):
                status = "incomplete"  # as the follow's own state key says
            counts[status] = counts.get(status, 0) + 1
        for status, count in sorted(counts.items()):
            states.add_metric([status], count)
        yield states
        applied = sum(int(getattr(f, "applied", 0)) for f in followers.values())
        rejected = sum(int(getattr(f, "rejected", 0)) for f in followers.values())
        yield _counter("statebus_federation_ops_applied", "Ops from followed peers applied.", applied)
        yield _counter("statebus_federation_ops_rejected", "Ops from followed peers refused.", rejected)
    relays = getattr(fed, "relays", None)
    if relays is not None and hasattr(relays, "__len__"):
        yield _gauge(
            "statebus_peer_relays", "Followers streaming from here that offered to relay.", len(relays)
        )
    known = getattr(fed, "known", None)
    if isinstance(known, dict):
        yield _gauge("statebus_federation_known_peers", "Peers whose addresses this node knows.", len(known))
    yield from _swarm(getattr(getattr(fed, "swarm", None), "session", None))
    yield from _swarm_plane(getattr(fed, "swarm", None))
    neighbours = getattr(getattr(fed, "directory", None), "neighbours", None)
    if callable(neighbours):
        try:
            count = int(neighbours())
        except Exception:  # the DHT not started or stopped: leave the metric out
            return
        yield _gauge("statebus_dht_neighbours", "Contacts in the DHT routing table.", count)


def _peers(peers: Any) -> Iterator[Metric]:
    """Metrics of the peer endpoints (``statebus.http.peers.PeerEndpoints``): streams, bytes, shedding."""
    open_streams = getattr(peers, "open_streams", None)
    if not callable(open_streams):
        return
    yield _gauge("statebus_peer_streams", "Ops streams other nodes hold open here.", len(open_streams()))
    yield _counter(
        "statebus_peer_sent_bytes", "Bytes of ops streams and sync answers sent to peers.", peers.sent_bytes
    )
    yield _counter("statebus_peer_shed", "Peer requests shed to relays (max_peer_streams).", peers.shed)


def _swarm(session: Any) -> Iterator[Metric]:
    """Metrics of the node's ``statebus.swarm.SwarmSession`` (duck typing, as for federation)."""
    stats_of = getattr(session, "stats", None)
    if not callable(stats_of):
        return
    try:
        stats = stats_of()
    except Exception:  # the session not started or closed: leave the metrics out
        return
    torrents = GaugeMetricFamily("statebus_swarm_torrents", "Blobs in the swarm, by role.", labels=["role"])
    for role in ("origin", "fetched"):
        torrents.add_metric([role], sum(1 for t in stats.torrents if t.role == role))
    yield torrents
    yield _gauge(
        "statebus_swarm_peers", "Swarm peers connected, over all blobs.", sum(t.peers for t in stats.torrents)
    )
    yield _counter("statebus_swarm_uploaded_bytes", "Blob bytes uploaded to swarm peers.", stats.uploaded)
    yield _counter(
        "statebus_swarm_downloaded_bytes", "Blob bytes downloaded from swarm peers.", stats.downloaded
    )
    size = sum(t.size for t in stats.torrents if t.role == "fetched")
    up = sum(t.uploaded for t in stats.torrents if t.role == "fetched")
    yield _gauge(
        "statebus_swarm_share_ratio",
        "Uploaded ÷ size of the blobs this node fetched and serves.",
        up / size if size else 0.0,
    )
    yield _counter("statebus_swarm_fetched", "Blobs fetched over the swarm.", stats.fetched)
    yield _counter(
        "statebus_swarm_hash_failures", "Swarm pieces that failed their hash check.", stats.hash_failures
    )
    yield _counter("statebus_swarm_bans", "Swarm peers banned for bad pieces.", stats.bans)


def _swarm_plane(plane: Any) -> Iterator[Metric]:
    """Provider records and hot blobs of the node's ``statebus.federation.swarm.SwarmPlane``."""
    announces, hot = getattr(plane, "announces", None), getattr(plane, "hot", None)
    if isinstance(announces, int):
        yield _counter("statebus_swarm_announces", "Provider records announced on the DHT.", announces)
    if isinstance(hot, set):
        yield _gauge(
            "statebus_swarm_hot_blobs", "Small blobs swarmed because peers ask for them often.", len(hot)
        )


def _connections(guard: Any) -> Iterator[Metric]:
    """Metrics of the server's connection layer (``statebus.http.connections.ConnectionGuard``), when
    the app runs under ``statebus.server``."""
    table = getattr(guard, "table", None)
    closed = getattr(guard, "closed", None)
    if table is None or not isinstance(closed, dict):
        return
    yield _gauge("statebus_connections", "Open client connections.", len(table))
    yield _gauge(
        "statebus_connections_reserve", "Connections on the owner's reserve slots.", table.reserve_in_use
    )
    yield _gauge("statebus_connections_max", "Most client connections held open.", table.caps.total)
    ended = CounterMetricFamily(
        "statebus_connections_closed", "Connections the node closed or refused, by reason.", labels=["reason"]
    )
    for reason, count in sorted(closed.items()):
        ended.add_metric([reason], count)
    yield ended


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def routes(
    node: Node,
    settings: Settings,
    *,
    auth: OwnerAuth | None = None,
    metrics: NodeMetrics | None = None,
) -> list[BaseRoute]:
    """The ``/metrics`` route of ``node`` (a new :class:`NodeMetrics` unless ``metrics`` is given).

    ``auth`` decides who is the owner; by default the owner token in ``settings.data_dir``.
    """
    if auth is None:
        from statebus.http.info import owner_auth

        auth = owner_auth(settings)
    return (metrics or NodeMetrics(node, settings)).routes(auth)
