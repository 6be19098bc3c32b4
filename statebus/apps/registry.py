"""The apps installed on a node: their records, their bundles, and loading them into the sandbox host.

    registry = AppRegistry(data_dir, node, max_bytes=settings.app_bundle_max_bytes, host=app_host)
    app = await registry.install(bundle, grants)     the owner consented to ``grants``
    registry.get("guestbook")                         InstalledApp | None
    registry.list()                                   every installed app, by name
    await registry.remove("guestbook")
    registry.load_all()                               on node start: every installed app into the host

The record of an install is the owner's key ``/~/.apps/<name>``::

    {"version": "1.0.0", "hash": "<sha256>", "granted": {"read": [...], "write": [...],
     "read_others": [...]}, "installed_at_seq": 42, "size": 1234, "signature": {...}}

The bundle bytes are a blob in the node's blob store (``<data>/blobs``, :mod:`statebus.blobs`),
named by their sha256, the bundle id: one copy, shared with the published or fetched pointer of the
same bundle. Blob GC keeps every hash an install record names (:meth:`AppRegistry.live_hashes`, a
``Node.blob_roots`` source). A bundle an older version kept in ``<data>/apps/bundles/<sha256>.sbx``
(:func:`bundle_file`) moves into the blob store the first time it is loaded.

Rules:
    1. A record is written only after its bundle passed :func:`~statebus.apps.bundle.open_bundle` and
       its bytes are in the blob store (fsynced): a record never points at a missing or unchecked
       bundle.
    2. Loading re-checks every bundle from the store against its record (hash and signature): a blob
       changed behind the node's back is refused (logged) and not run.
    3. The granted patterns are never wider than what the manifest asks (the owner may grant less).
    4. The same key is the author's published pointer (``/<author>/.apps/<name>``, see
       :mod:`statebus.apps.publish`) when the node's owner is the app's author: a record is an install
       when it holds ``granted``; install and publish keep each other's fields and refuse to make
       the two disagree on the version.
"""

from __future__ import annotations

import builtins
import logging
import mimetypes
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from statebus.apps.bundle import BUNDLE_SUFFIX, Bundle, Signature, open_bundle
from statebus.apps.manifest import NAME_RE, Manifest, check_path
from statebus.apps.patterns import Grants
from statebus.apps.spec import AppSpec
from statebus.blobs import BlobStore, check_hash
from statebus.blobs.store import HASH_RE
from statebus.errors import InvalidBundle, InvalidValue, NotFound, StatebusError
from statebus.runtime import Node
from statebus.types import JSON

log = logging.getLogger("statebus.apps")

APPS = ".apps"
BUNDLES_DIR = Path("apps") / "bundles"


def record_key(name: str) -> str:
    """The owner's key of an app's record (and of its published pointer)."""
    return f"/~/{APPS}/{name}"


def bundle_file(data_dir: str | os.PathLike[str], hash_: str) -> Path:
    """Where an older version kept the bytes of bundle ``hash_`` (moved to the blob store on load)."""
    return Path(data_dir) / BUNDLES_DIR / f"{hash_}{BUNDLE_SUFFIX}"


def _migrate(data_dir: Path, blobs: BlobStore, hash_: str) -> None:
    """Move an older version's bundle file of ``hash_`` into the blob store (if it is there and
    hashes to ``hash_``; a file that does not stays, and the bundle is missing)."""
    path = bundle_file(data_dir, hash_)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    try:
        blobs.put_bytes(data, expect=hash_)
    except StatebusError as exc:
        log.warning("the bundle file %s is not moved to the blob store: %s", path, exc.detail)
        return
    path.unlink(missing_ok=True)


class AppLoader(Protocol):
    """What runs installed apps (:class:`statebus.apps.handlers.AppHost`)."""

    def load(self, spec: AppSpec) -> None: ...

    def unload(self, name: str) -> None: ...


def parse_grants(value: object) -> Grants:
    try:
        return Grants.from_json(value)
    except InvalidValue as exc:
        raise InvalidValue(f"granted: {exc.detail}") from None


@dataclass(frozen=True, slots=True)
class InstalledApp:
    """One installed app: its checked bundle, what the owner granted, and when."""

    bundle: Bundle
    granted: Grants
    installed_at_seq: int

    @property
    def name(self) -> str:
        return self.bundle.manifest.name

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @property
    def bundle_hash(self) -> str:
        return self.bundle.hash

    def spec(self) -> AppSpec:
        """What :class:`~statebus.apps.handlers.AppHost` runs for this app."""
        return self.bundle.spec(self.granted)

    def web_file(self, path: str) -> tuple[bytes, str] | None:
        """The app's static file at ``path`` (relative to its ``web`` folder; ``""`` is
        ``index.html``) and its content type, or None (no such file, no web folder, a bad path)."""
        web = self.manifest.web
        if web is None:
            return None
        rel = path.lstrip("/")
        if rel == "" or rel.endswith("/"):
            rel += "index.html"
        try:
            check_path(rel, "path")
        except InvalidBundle:
            return None
        data = self.bundle.files.get(web + rel)
        if data is None:
            return None
        kind = mimetypes.guess_type(rel)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
            kind += "; charset=utf-8"
        return data, kind

    def record(self) -> dict[str, JSON]:
        return {
            "version": self.manifest.version,
            "hash": self.bundle_hash,
            "size": self.bundle.size,
            "signature": self.bundle.signature.to_json(),
            "granted": dict(self.granted.to_json()),  # type: ignore[arg-type]
            "installed_at_seq": self.installed_at_seq,
        }


class AppRegistry:
    """The installed apps of one node (every rule above).

    Args:
        data_dir: the node's data folder.
        node: the node whose ``/~/.apps/`` holds the records, and whose blob store holds the bundles
            (a node without one, in memory: a blob store in ``<data_dir>/blobs``).
        max_bytes: the largest bundle (``Settings.app_bundle_max_bytes``).
        host: runs the apps (None: records and bundles only, e.g. the CLI with the node stopped).
    """

    def __init__(
        self, data_dir: str | os.PathLike[str], node: Node, *, max_bytes: int, host: AppLoader | None = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.node = node
        self.max_bytes = max_bytes
        self.host = host
        self.blobs = node.blobs or BlobStore(self.data_dir / "blobs", max_bytes=max(max_bytes, 1))
        self._cache: dict[str, InstalledApp] = {}
        node.blob_roots.append(self.live_hashes)

    def record(self, name: str) -> dict[str, Any] | None:
        """The value at ``/~/.apps/<name>`` (an install record, a published pointer, both), or None."""
        return self._record(name)

    def _record(self, name: str) -> dict[str, Any] | None:
        change = self.node.fetch_or_none(record_key(name), durable=True)
        if change is None or not change.exists or not isinstance(change.value, dict):
            return None
        return change.value

    def _open(self, name: str, record: Mapping[str, Any]) -> InstalledApp:
        """The installed app a record describes, its bundle re-checked from disk (rule 2)."""
        hash_ = record.get("hash")
        cached = self._cache.get(name)
        if (
            cached is not None
            and cached.bundle_hash == hash_
            and cached.record()["granted"] == record.get("granted")
        ):
            return cached
        if not isinstance(hash_, str):
            raise InvalidBundle(f"the record of {name} names no bundle hash")
        data = self.bundle_bytes(hash_)
        if data is None:
            raise NotFound(f"the bundle {hash_} of {name} is missing from the blob store {self.blobs.root}")
        bundle = open_bundle(
            data, Signature.from_json(record.get("signature")), self.max_bytes, expect_hash=hash_
        )
        if bundle.manifest.name != name:
            raise InvalidBundle(f"the record of {name} points at a bundle of {bundle.manifest.name}")
        seq = record.get("installed_at_seq")
        app = InstalledApp(bundle, parse_grants(record.get("granted")), seq if isinstance(seq, int) else 0)
        self._cache[name] = app
        return app

    def bundle_bytes(self, hash_: str) -> bytes | None:
        """The bytes of bundle ``hash_`` from the blob store (None: not stored)."""
        check_hash(hash_)
        if not self.blobs.has(hash_):
            _migrate(self.data_dir, self.blobs, hash_)
        try:
            return self.blobs.read(hash_)
        except NotFound:
            return None

    def live_hashes(self) -> set[str]:
        """The bundle hashes the records under ``/~/.apps/`` name (installed or published): blob GC
        keeps them."""
        out: set[str] = set()
        after = ""
        while page := self.node.children(record_key(""), after=after, limit=100):
            for child in page:
                record = self._record(child) if NAME_RE.match(child) else None
                hash_ = record.get("hash") if record is not None else None
                if isinstance(hash_, str) and HASH_RE.fullmatch(hash_):
                    out.add(hash_)
            after = page[-1]
        return out

    def get(self, name: str) -> InstalledApp | None:
        """The installed app ``name`` (None when not installed). Raises if its bundle fails rule 2."""
        if not NAME_RE.match(name):
            return None
        record = self._record(name)
        if record is None or "granted" not in record:
            self._cache.pop(name, None)
            return None
        return self._open(name, record)

    def names(self) -> builtins.list[str]:
        """The names of the installed apps (records holding ``granted``), sorted."""
        out: builtins.list[str] = []
        after = ""
        while True:
            page = self.node.children(record_key(""), after=after, limit=100)
            if not page:
                break
            for child in page:
                if NAME_RE.match(child):
                    record = self._record(child)
                    if record is not None and "granted" in record:
                        out.append(child)
            after = page[-1]
        return sorted(out)

    def list(self) -> list[InstalledApp]:
        """Every installed app whose bundle checks out (one that does not is logged and left out)."""
        out = []
        for name in self.names():
            try:
                app = self.get(name)
            except StatebusError as exc:
                log.warning("installed app %s is not loaded: %s", name, exc.detail)
                continue
            if app is not None:
                out.append(app)
        return out

    async def install(self, bundle: Bundle, grants: Grants) -> InstalledApp:
        """Install (or upgrade to) a checked bundle with the grants the owner consented to.

        Raises:
            InvalidValue: ``grants`` asks for more than the manifest (rule 3), or this node publishes
                another version of the app (rule 4).
            InvalidBundle: the spec cannot be built with those grants, or the host cannot start it
                (a schema that does not compile): nothing is written.
        """
        asked = bundle.manifest.permissions
        if not asked.covers(grants):
            raise InvalidValue(f"the grant is wider than what {bundle.manifest.name} asks for")
        name = bundle.manifest.name
        record = self._record(name) or {}
        if record.get("published") is True and record.get("hash") != bundle.hash:
            raise InvalidValue(
                f"this node publishes {name} {record.get('version')} at {record_key(name)}: install that "
                "version, or publish this one first (`statebus app publish`)"
            )
        spec = bundle.spec(grants)  # refuses grants the handlers do not fit in before anything is written
        if self.host is not None:  # an app whose sandbox does not start is not installed
            try:
                self.host.load(spec)
            except InvalidValue as exc:
                raise InvalidBundle(f"{name} does not start: {exc.detail}") from None
        self.blobs.put_bytes(bundle.data, expect=bundle.hash)  # rule 1: bytes first
        app = InstalledApp(bundle, grants, int(self.node.seq))
        value: dict[str, Any] = {k: v for k, v in record.items() if k == "published"}
        value.update(app.record())
        await self.node.save(record_key(name), value)
        self._cache[name] = app
        log.info("installed app %s %s (%s)", name, bundle.manifest.version, bundle.hash[:16])
        return app

    async def remove(self, name: str) -> None:
        """Uninstall ``name``: unload it and delete its record (its data keys stay). Raises NotFound."""
        record = self._record(name) if NAME_RE.match(name) else None
        if record is None or "granted" not in record:
            raise NotFound(f"no app named {name[:40]!r} is installed")
        if self.host is not None:
            self.host.unload(name)
        if record.get("published") is True:  # rule 4: the author's pointer stays
            pointer = {k: v for k, v in record.items() if k not in ("granted", "installed_at_seq")}
            await self.node.save(record_key(name), pointer)
        else:
            await self.node.delete(record_key(name))
        self._cache.pop(name, None)
        log.info("removed app %s", name)

    def load_all(self) -> builtins.list[str]:
        """Load every installed app into the host (on node start); returns the names loaded. An app
        whose bundle fails its checks or whose sandbox does not start is logged and skipped."""
        loaded = []
        for app in self.list():
            if self.host is not None:
                try:
                    self.host.load(app.spec())
                except StatebusError as exc:
                    log.warning("app %s did not start: %s", app.name, exc.detail)
                    continue
            loaded.append(app.name)
        return loaded


__all__ = [
    "APPS",
    "AppLoader",
    "AppRegistry",
    "InstalledApp",
    "bundle_file",
    "record_key",
]
