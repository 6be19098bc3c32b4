"""Run a statebus node for the benchmark: ``python -m bench.serve_node --data DIR [--keep-ops N]
[--durability process] [--encrypt]``.

``--encrypt`` makes a new data folder encrypted at rest (its key file beside it, ``DIR.key``).

It raises its open-file limit, binds 127.0.0.1 port 0 with a deep accept backlog, prints one JSON line
``{"port": …, "pid": …}`` and serves (``statebus.server.make_server``: uvloop + httptools) until
SIGTERM. uvicorn's options are :data:`bench.serve_common.NODE_UVICORN_OPTIONS`: the reference's, with the
node's own HTTP protocol (its connection layer).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from bench.procs import raise_fd_limit
from bench.serve_common import NODE_UVICORN_OPTIONS, announce, listen
from statebus.config import Settings
from statebus.identity import atrest, keystore
from statebus.server import make_server, tune_gc

BENCH_CONNECTIONS = 16_000
"""Connections the benchmark's node takes (all from one address); the open-file limit must allow it."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--keep-ops", type=int, default=None, help="history_keep_ops (default: the node's)")
    parser.add_argument("--buffer", type=int, default=None, help="subscriber_buffer (default: the node's)")
    parser.add_argument("--durability", default="power", help="power (the default) or process")
    parser.add_argument("--encrypt", action="store_true", help="a new data folder encrypted at rest")
    args = parser.parse_args()
    raise_fd_limit()
    os.umask(0o077)
    # Every client of the benchmark is on 127.0.0.1: the per-address cap (256) and the default
    # total (10,000, with its owner's reserve) would refuse the 1000 fan-out and 10,000 idle
    # subscribers with 503 server_busy.
    settings = replace(
        Settings(data_dir=args.data),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        durability=args.durability,
        max_connections=BENCH_CONNECTIONS,
        max_connections_per_ip=BENCH_CONNECTIONS,
    )
    if args.encrypt:
        key_file = args.data.with_name(args.data.name + ".key")
        if not key_file.exists():
            _, _, key = keystore.init_encrypted(args.data)
            atrest.write_key_file(key_file, key, args.data)
        settings = replace(settings, at_rest_key_file=key_file)
    if args.keep_ops is not None:
        settings = replace(settings, history_keep_ops=args.keep_ops)
    if args.buffer is not None:
        settings = replace(settings, subscriber_buffer=args.buffer)
    sock = listen()
    server = make_server(settings, **NODE_UVICORN_OPTIONS)
    tune_gc()  # as statebus.server.serve does
    announce(sock)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
