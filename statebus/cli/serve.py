"""``statebus serve``: run the node and print, once it listens, its pubkey, URL and login link.

The banner is printed after the socket is bound, so with ``--port 0`` it shows the real port. With
``--json`` it is one JSON line instead (``pubkey``, ``url``, ``dht``, ``login``, ``pid``, ``data``):
what ``statebus devnet`` and supervisors read. Standard output is line-buffered, so a supervisor or a
test reading a pipe gets each line as it is printed.

On first start the recovery phrase is shown on stderr only when stderr is a terminal: last, below
the banner, framed, and the command waits for Enter when stdin is a terminal too (``--yes`` does
not wait). Otherwise (a log file, a pipe, a supervisor) it is kept in
``<data>/identity/recovery_phrase`` (0600) and every start says how to see it once: ``statebus
phrase`` in a terminal (:mod:`statebus.server.phrase`). While it runs, the node leaves its URL and
pid in ``<data>/node.json`` for the client commands (:mod:`statebus.server.runfile`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import TextIO

from statebus.cli.output import line_buffered
from statebus.config import Settings
from statebus.server.running import RunningNode, login_url, serve


def banner(settings: Settings, pubkey: str, port: int, token: str) -> str:
    """What ``statebus serve`` prints: node pubkey, URL, data folder and the owner's login link."""
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    return (
        f"statebus node {pubkey}\n"
        f"  serving at   http://{host}:{port}/\n"
        f"  data folder  {settings.data_dir}\n"
        f"  Open this link to log in as the owner (it holds the owner token; keep it private):\n"
        f"      {login_url(settings, token, port)}\n"
    )


def started_text(running: RunningNode, *, as_json: bool = False) -> str:
    """The banner of a started node, or with ``as_json`` its one-line JSON description."""
    settings = running.settings
    dht = f"{settings.host}:{running.directory.port}" if running.directory is not None else None
    if as_json:
        info = {
            "pubkey": running.pubkey,
            "url": running.url,
            "dht": dht,
            "login": running.login_url,
            "pid": os.getpid(),
            "data": str(settings.data_dir),
        }
        return json.dumps(info) + "\n"
    text = banner(settings, running.pubkey, running.port, running.token)
    if dht is not None:
        text += f"  DHT          {settings.dht_name!r} on udp {dht}\n"
    return text


def run_server(
    settings: Settings, *, as_json: bool = False, out: TextIO | None = None, confirm_phrase: bool = True
) -> None:
    """Run the node (HTTP, peer endpoints, DHT, followers) until SIGINT/SIGTERM, creating its
    identity on first start. Everything acknowledged is on disk when it returns."""
    stream = out or sys.stdout
    line_buffered(stream)

    def announce(running: RunningNode) -> None:
        stream.write(started_text(running, as_json=as_json))
        stream.flush()

    serve(settings, on_start=announce, confirm_phrase=confirm_phrase)
