"""Installed apps for the origin tests: an app folder (``statebus-app.json`` + ``web/``) registered as
the node's registry would install it, so the app origin and capabilities can be tested before (and
independently of) bundles. It offers what :class:`statebus.http.app_origin.AppDirectory` asks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
from dataclasses import dataclass
from pathlib import Path

import httpx

from statebus.apps.bundle import pack, sign
from statebus.apps.patterns import Grants
from statebus.http.apps import APPS_PATH, BUNDLE_TYPE, SIGNATURE_HEADER
from tests.apps.bundles import MAX, app_copy, author_key

GUESTBOOK_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>Guestbook</title>
<script src="/statebus.js"></script>
<script>window.__inline_ran = true</script>
</head><body><h1>Guestbook</h1><p id="status">loading</p>
<script src="app.js"></script></body></html>
"""

GUESTBOOK_JS = """document.getElementById('status').textContent = 'ready'
window.__app_ran = true
"""


@dataclass
class FolderApp:
    name: str
    folder: Path
    bundle_hash: str
    granted: Grants

    def web_file(self, path: str) -> tuple[bytes, str] | None:
        web = (self.folder / "web").resolve()
        target = (web / path).resolve()
        if not target.is_relative_to(web) or not target.is_file():
            return None
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype == "application/javascript":
            ctype = ("text/javascript" if ctype == "application/javascript" else ctype) + "; charset=utf-8"
        return target.read_bytes(), ctype


class FolderApps:
    """Apps registered from folders (name -> app)."""

    def __init__(self) -> None:
        self.apps: dict[str, FolderApp] = {}

    def get(self, name: str) -> FolderApp | None:
        return self.apps.get(name)

    def list(self) -> list[FolderApp]:
        return [self.apps[n] for n in sorted(self.apps)]

    def add(self, folder: Path) -> FolderApp:
        manifest = json.loads((folder / "statebus-app.json").read_text())
        digest = hashlib.sha256()
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(folder)).encode() + b"\0" + f.read_bytes())
        app = FolderApp(
            manifest["name"], folder, digest.hexdigest(), Grants.from_json(manifest["permissions"])
        )
        self.apps[app.name] = app
        return app


def write_app(
    root: Path, name: str, permissions: dict[str, list[str]], files: dict[str, str] | None = None
) -> Path:
    """An app folder ``root/name`` with a manifest asking ``permissions`` and ``web/`` files."""
    folder = root / name
    (folder / "web").mkdir(parents=True)
    manifest = {
        "name": name,
        "version": "1.0.0",
        "description": f"the {name} app",
        "permissions": permissions,
    }
    (folder / "statebus-app.json").write_text(json.dumps(manifest))
    web = files if files is not None else {"index.html": GUESTBOOK_HTML, "app.js": GUESTBOOK_JS}
    for rel, text in web.items():
        (folder / "web" / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / "web" / rel).write_text(text)
    return folder


def install_guestbook(
    base_url: str,
    owner: dict[str, str],
    tmp: Path,
    grant: dict[str, list[str]],
    *,
    name: str = "guestbook",
    handlers: str | None = None,
) -> str:
    """apps/guestbook (renamed ``name``, its handlers' source replaced by ``handlers``) packed, signed,
    checked and installed on a running node through the owner's app routes (statebus.http.apps) with
    ``grant``; returns the bundle hash."""
    author = author_key()
    folder = app_copy(tmp / name, author, name=name)
    if handlers is not None:
        (folder / "server" / "handlers.js").write_text(handlers)
    data = pack(folder, MAX)
    sig = base64.b64encode(json.dumps(sign(data, author).to_json()).encode()).decode()
    with httpx.Client(base_url=base_url, headers=owner, timeout=10) as client:
        headers = {"content-type": BUNDLE_TYPE, SIGNATURE_HEADER: sig}
        client.post(APPS_PATH + "/check", content=data, headers=headers).raise_for_status()
        bundle_hash = hashlib.sha256(data).hexdigest()
        client.post(APPS_PATH + "/install", json={"hash": bundle_hash, "grant": grant}).raise_for_status()
    return bundle_hash
