"""Old name of :mod:`statebus.cli.client` (kept for ``statebus.cli_federation``); import from there."""

from __future__ import annotations

from statebus.cli.client import Client, check, client_for, key_path, transport_error

__all__ = ["Client", "check", "client_for", "key_path", "transport_error"]
