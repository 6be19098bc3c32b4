"""The DHT a node joined through an invite: ``<data>/dht.json`` (0600).

    write_membership(data_dir, Membership("devnet-x", secret, ("10.0.0.1:8766",)))
    m = read_membership(data_dir)         None when the node joined no DHT by invite

Rules:
    1. The file holds the network secret: it is written 0600 through the keystore's private-file
       writer (fsynced, replaced atomically) and refused when others can read it.
    2. ``statebus serve`` uses it when no DHT secret is configured (``dht_secret``, env or file):
       the DHT's name, its secret and the inviter as the first peer. A configured secret wins.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from statebus.errors import InvalidValue
from statebus.identity import keystore

MEMBERSHIP_FILE = "dht.json"


@dataclass(frozen=True, slots=True)
class Membership:
    name: str
    secret: bytes = field(repr=False)
    peers: tuple[str, ...] = ()


def membership_file(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / MEMBERSHIP_FILE


def read_membership(data_dir: str | os.PathLike[str]) -> Membership | None:
    path = membership_file(data_dir)
    if not path.exists():
        return None
    try:
        doc = json.loads(keystore.read_private_file(path))
        return Membership(str(doc["name"]), bytes.fromhex(doc["secret"]), tuple(str(p) for p in doc["peers"]))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidValue(f"{path} is not a DHT membership (name, secret, peers)") from None


def write_membership(data_dir: str | os.PathLike[str], m: Membership) -> Path:
    doc = {"name": m.name, "secret": m.secret.hex(), "peers": list(m.peers)}
    path = membership_file(data_dir)
    return keystore.write_private_file(path, json.dumps(doc, sort_keys=True).encode())


__all__ = ["MEMBERSHIP_FILE", "Membership", "membership_file", "read_membership", "write_membership"]
