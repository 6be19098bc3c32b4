"""The composition root: settings → identity, storage, bus, node, access → app → uvicorn, federation.

    start(settings)      start a node in the running loop: HTTP, peer endpoints, DHT, followers
    serve(settings)      the same until SIGINT/SIGTERM (``statebus serve``)
    Cluster(base)        many started nodes in one process, in one DHT (tests, benchmarks)
    create_app(settings) the node's app without federation, for in-process tests and benchmarks

The package is the only place that imports every layer. Its modules:

    assembly.py   identity (read once), node, AccessControl (made once), the app
    running.py    start / RunningNode / serve: the one way a node starts
    cluster.py    Cluster and start_node
    listener.py   uvicorn under a node: connection layer, open-file limit, graceful shutdown, gc
    logs.py       secrets kept out of uvicorn's and websockets' logs
    phrase.py     the recovery phrase as a person is shown it: one text, one place
"""

from __future__ import annotations

from statebus.server.assembly import (
    STORE_FILE,
    NewIdentityHook,
    batch_signer_for,
    build_node,
    create_app,
    ensure_identity,
    make_server,
    node_app,
    open_node,
    owner_token,
)
from statebus.server.cluster import Cluster, start_node
from statebus.server.listener import (
    GC_THRESHOLDS,
    EmbeddedServer,
    StatebusServer,
    connection_guard,
    raise_open_file_limit,
    tune_gc,
    uvicorn_config,
)
from statebus.server.logs import RedactTokens, install_log_redaction, mask_frame, redact
from statebus.server.phrase import PHRASE_WARNING, phrase_reminder, phrase_text, show_phrase_on_terminal
from statebus.server.running import RunningNode, login_url, parse_bootstrap, serve, start

__all__ = [
    "GC_THRESHOLDS",
    "PHRASE_WARNING",
    "STORE_FILE",
    "Cluster",
    "EmbeddedServer",
    "NewIdentityHook",
    "RedactTokens",
    "RunningNode",
    "StatebusServer",
    "batch_signer_for",
    "build_node",
    "connection_guard",
    "create_app",
    "ensure_identity",
    "install_log_redaction",
    "login_url",
    "make_server",
    "mask_frame",
    "node_app",
    "open_node",
    "owner_token",
    "parse_bootstrap",
    "phrase_reminder",
    "phrase_text",
    "raise_open_file_limit",
    "redact",
    "serve",
    "show_phrase_on_terminal",
    "start",
    "start_node",
    "tune_gc",
    "uvicorn_config",
]
