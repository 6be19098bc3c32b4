"""The composition root: settings → identity, storage, bus, node, access → app → uvicorn, federation.

    start(settings)      start a node in the running loop: HTTP, peer endpoints, DHT, followers
    serve(settings)      the same until SIGINT/SIGTERM (``statebus serve``)
    Cluster(base)        many started nodes in one process, in one DHT (tests, benchmarks)
    create_app(settings) the node's app without federation, for in-process tests and benchmarks

The package is the only place that imports every layer. Names load lazily (PEP 562), so
``from statebus.server.phrase import phrase_text`` (the CLI) does not pull in uvicorn and the
federation. Its modules:

    assembly.py   identity (read once), node, AccessControl (made once), the app
    running.py    start / RunningNode / serve: the one way a node starts
    cluster.py    Cluster and start_node
    listener.py   uvicorn under a node: connection layer, open-file limit, graceful shutdown, gc
    logs.py       secrets kept out of uvicorn's and websockets' logs
    phrase.py     the recovery phrase as a person is shown it: one text, one place
    runfile.py    <data>/node.json: where a running node listens, for the client commands
    archive.py    the backup archive: export, read, import
    encrypt.py    a stopped plain folder copied into a new one encrypted at rest
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_EXPORTS = {
    "Cluster": "statebus.server.cluster",
    "EmbeddedServer": "statebus.server.listener",
    "GC_THRESHOLDS": "statebus.server.listener",
    "NewIdentityHook": "statebus.server.assembly",
    "PHRASE_WARNING": "statebus.server.phrase",
    "RedactTokens": "statebus.server.logs",
    "RunningNode": "statebus.server.running",
    "STORE_FILE": "statebus.server.assembly",
    "StatebusServer": "statebus.server.listener",
    "batch_signer_for": "statebus.server.assembly",
    "build_node": "statebus.server.assembly",
    "connection_guard": "statebus.server.listener",
    "create_app": "statebus.server.assembly",
    "ensure_identity": "statebus.server.assembly",
    "install_log_redaction": "statebus.server.logs",
    "login_url": "statebus.server.running",
    "make_server": "statebus.server.assembly",
    "mask_frame": "statebus.server.logs",
    "node_app": "statebus.server.assembly",
    "open_node": "statebus.server.assembly",
    "owner_token": "statebus.server.assembly",
    "parse_bootstrap": "statebus.server.running",
    "phrase_reminder": "statebus.server.phrase",
    "phrase_text": "statebus.server.phrase",
    "raise_open_file_limit": "statebus.server.listener",
    "redact": "statebus.server.logs",
    "serve": "statebus.server.running",
    "show_phrase_on_terminal": "statebus.server.phrase",
    "start": "statebus.server.running",
    "start_node": "statebus.server.cluster",
    "tune_gc": "statebus.server.listener",
    "uvicorn_config": "statebus.server.listener",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'statebus.server' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
