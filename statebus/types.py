"""The vocabulary of statebus: the few types every layer shares.

Imports: stdlib only.
"""

from __future__ import annotations

from typing import TypeAlias

JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"
"""Any JSON value as Python holds it."""

Key: TypeAlias = str
"""A validated, normalised key path such as ``/<pubkey>/app/posts/42`` (or a subtree ``…/posts/``)."""

Version: TypeAlias = str
"""A version id, unique per key across replicas (``"<clock>-<hash>"`` when minted)."""

PubKey: TypeAlias = str
"""An Ed25519 public key as 52 lowercase base32 characters (RFC 4648, no padding)."""

Seq: TypeAlias = int
"""A node-local, monotonically increasing sequence number over every op the node stores."""
