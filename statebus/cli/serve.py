"""``statebus serve``: run the node and print, once it listens, its pubkey, URL and login link.

The banner is printed after the socket is bound, so with ``--port 0`` it shows the real port. Standard
output is line-buffered, so a supervisor or a test reading a pipe gets each line as it is printed.

On first start the recovery phrase is shown on stderr only when stderr is a terminal. Otherwise (a
log file, a pipe, a supervisor) it is kept in ``<data>/identity/recovery_phrase`` (0600) and every
start says how to see it once: ``statebus phrase`` in a terminal.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import signal
import sys
from typing import TextIO

from statebus.cli.output import line_buffered
from statebus.config import Settings
from statebus.server import login_url, phrase_reminder, show_phrase_on_terminal, tune_gc


def banner(settings: Settings, pubkey: str, port: int) -> str:
    """What ``statebus serve`` prints: node pubkey, URL, data folder and the owner's login link."""
    host = settings.host if ":" not in settings.host else f"[{settings.host}]"
    return (
        f"statebus node {pubkey}\n"
        f"  serving at   http://{host}:{port}/\n"
        f"  data folder  {settings.data_dir}\n"
        f"  Open this link to log in as the owner (it holds the owner token; keep it private):\n"
        f"      {login_url(settings, port)}\n"
    )


def run_server(settings: Settings) -> None:
    """Run the node (HTTP, peer endpoints, DHT, followers) until SIGINT/SIGTERM, creating its
    identity on first start. Everything acknowledged is on disk when it returns."""
    os.umask(0o077)
    line_buffered(sys.stdout)
    logging.getLogger("rpcudp").setLevel(logging.ERROR)  # late DHT replies are normal, not news
    loop_factory = None
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(settings))


async def _serve(settings: Settings, out: TextIO | None = None) -> None:
    from statebus.federated import start_federated

    fnode = await start_federated(settings, on_new_identity=show_phrase_on_terminal)
    tune_gc()  # as statebus.server.serve does: no long full-collection pauses under many streams
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    text = banner(settings, fnode.pubkey, fnode.server.port)
    if fnode.directory is not None:
        text += f"  DHT          {settings.dht_name!r} on udp {settings.host}:{fnode.directory.port}\n"
    stream = out or sys.stdout
    stream.write(text)
    stream.flush()
    reminder = phrase_reminder(settings)
    if reminder is not None:
        sys.stderr.write(reminder)
        sys.stderr.flush()
    try:
        await stop.wait()
    finally:
        await fnode.stop()
