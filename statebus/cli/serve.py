"""``statebus serve``: run the node and print, once it listens, its pubkey, URL and login link.

The banner is printed after the socket is bound, so with ``--port 0`` it shows the real port.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import TextIO

from statebus.config import Settings
from statebus.identity.keys import Identity
from statebus.server import StatebusServer, create_app, login_url, uvicorn_config

PHRASE_NOTE = (
    "This recovery phrase is shown ONCE and is not stored. Write it down and keep it secret;\n"
    "`statebus init --recover` restores the identity from it."
)


class BannerServer(StatebusServer):
    """A :class:`StatebusServer` that prints where it listens once it is bound."""

    banner_out: TextIO = sys.stdout

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            settings: Settings = self.statebus_app.state.settings
            self.banner_out.write(banner(settings, self.statebus_app.state.node.local, self.port))
            self.banner_out.flush()


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


def show_new_identity(identity: Identity, phrase: str) -> None:
    """First start: show the recovery phrase once, on stderr."""
    sys.stderr.write(f"Created node identity {identity.pubkey}.\n\n    {phrase}\n\n{PHRASE_NOTE}\n\n")
    sys.stderr.flush()


def run_server(settings: Settings) -> None:
    """Run the node until SIGINT/SIGTERM (creating its identity on first start)."""
    os.umask(0o077)
    app = create_app(settings, on_new_identity=show_new_identity)
    server = BannerServer(uvicorn_config(app, settings), app)
    server.run()
