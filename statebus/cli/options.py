"""Options every ``statebus`` command shares (the core CLI, keys, federation)."""

from __future__ import annotations

import argparse


def add_common(p: argparse.ArgumentParser, *, client: bool) -> None:
    """``--data`` and ``--config``; with ``client``, also ``--url`` of the node to talk to."""
    p.add_argument(
        "--data",
        metavar="DIR",
        help="data folder (default: $STATEBUS_DATA_DIR, else ~/.local/share/statebus)",
    )
    p.add_argument("--config", metavar="FILE", help="TOML settings file (default: $STATEBUS_CONFIG)")
    p.add_argument(
        "--at-rest-key-file",
        metavar="FILE",
        help="key file of a data folder encrypted at rest (default: $STATEBUS_AT_REST_KEY_FILE)",
    )
    if client:
        p.add_argument("--url", help="base URL of the node (default: http://<host>:<port> from the settings)")
