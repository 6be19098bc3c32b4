"""Helpers of the bundle tests: a fixed author key, and a copy of apps/guestbook by a given author."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from statebus.identity import Identity

GUESTBOOK = Path(__file__).resolve().parents[2] / "apps" / "guestbook"
MAX = 1 << 20


def author_key(label: str = "author") -> Identity:
    return Identity(hashlib.sha256(f"statebus test {label}".encode()).digest())


def app_copy(dest: Path, author: Identity, **changes: object) -> Path:
    """apps/guestbook copied to ``dest`` with ``author`` (and any manifest ``changes``)."""
    shutil.copytree(GUESTBOOK, dest)
    path = dest / "statebus-app.json"
    manifest = json.loads(path.read_text())
    manifest["author"] = author.pubkey
    manifest.update(changes)
    path.write_text(json.dumps(manifest, indent=2))
    return dest
