"""The registry: install records at /~/.apps/<name>, bundles in the blob store, loading into a host."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from statebus.apps.bundle import Bundle, open_bundle, pack, sign
from statebus.apps.handlers import AppHost
from statebus.apps.patterns import Grants
from statebus.apps.registry import AppRegistry, bundle_file, record_key
from statebus.apps.spec import AppSpec
from statebus.config import Settings
from statebus.errors import InvalidBundle, InvalidValue, NotFound
from statebus.identity import Identity
from statebus.server import build_node
from tests.apps.bundles import MAX, app_copy, author_key


@pytest.fixture
def author() -> Identity:
    return author_key()


@pytest.fixture
def app_dir(tmp_path: Path, author: Identity) -> Path:
    return app_copy(tmp_path / "guestbook", author)


class Host:
    """Records what the registry asks the app host to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def load(self, spec: AppSpec) -> None:
        self.calls.append(("load", f"{spec.name}@{spec.version}"))

    def unload(self, name: str) -> None:
        self.calls.append(("unload", name))


def _bundle(folder: Path, author: Identity) -> Bundle:
    data = pack(folder, MAX)
    return open_bundle(data, sign(data, author), MAX)


def test_install_list_serve_remove(tmp_path: Path, app_dir: Path, author: Identity) -> None:
    bundle = _bundle(app_dir, author)

    async def run() -> None:
        node = build_node(Settings(data_dir=tmp_path / "node"))
        host = Host()
        reg = AppRegistry(tmp_path / "node", node, max_bytes=MAX, host=host)
        try:
            app = await reg.install(bundle, bundle.manifest.permissions)
            assert host.calls == [("load", "guestbook@1.0.0")]
            record = node.fetch(record_key("guestbook")).value
            assert record["hash"] == bundle.hash and record["version"] == "1.0.0"
            assert record["granted"] == {
                "read": ["guestbook/"],
                "write": ["guestbook/"],
                "read_others": ["guestbook/"],
            }
            assert record["installed_at_seq"] == app.installed_at_seq
            assert node.blobs is not None and node.blobs.read(bundle.hash) == bundle.data  # one copy, a blob
            assert not (tmp_path / "node" / "apps").exists()
            assert [a.name for a in reg.list()] == ["guestbook"]
            page = app.web_file("")
            assert page is not None and page[1] == "text/html; charset=utf-8" and b"Guestbook" in page[0]
            assert app.web_file("app.js") is not None
            assert app.web_file("../statebus-app.json") is None and app.web_file("nope.html") is None
            # a fresh registry (a restart) finds and loads it, re-checked from disk
            again = Host()
            assert AppRegistry(tmp_path / "node", node, max_bytes=MAX, host=again).load_all() == ["guestbook"]
            assert again.calls == [("load", "guestbook@1.0.0")]
            await reg.remove("guestbook")
            assert host.calls[-1] == ("unload", "guestbook")
            assert reg.get("guestbook") is None and reg.list() == []
            with pytest.raises(NotFound):
                await reg.remove("guestbook")
        finally:
            await node.aclose()

    asyncio.run(run())


def test_grants_wider_than_asked_are_refused(tmp_path: Path, app_dir: Path, author: Identity) -> None:
    bundle = _bundle(app_dir, author)

    async def run() -> None:
        node = build_node(Settings(data_dir=tmp_path / "node"))
        reg = AppRegistry(tmp_path / "node", node, max_bytes=MAX)
        try:
            wide = Grants.parse(read=["guestbook/"], write=["guestbook/", "notes/"])
            with pytest.raises(InvalidValue, match="wider"):
                await reg.install(bundle, wide)
            assert reg.list() == [] and node.blobs is not None and not node.blobs.has(bundle.hash)
        finally:
            await node.aclose()

    asyncio.run(run())


def test_a_bundle_changed_on_disk_is_not_loaded(tmp_path: Path, app_dir: Path, author: Identity) -> None:
    bundle = _bundle(app_dir, author)

    async def run() -> None:
        node = build_node(Settings(data_dir=tmp_path / "node"))
        try:
            await AppRegistry(tmp_path / "node", node, max_bytes=MAX).install(
                bundle, bundle.manifest.permissions
            )
            assert node.blobs is not None
            path = node.blobs.path(bundle.hash)
            path.write_bytes(path.read_bytes().replace(b"MAX_TEXT = 500", b"MAX_TEXT = 9e9"))
            host = Host()
            assert AppRegistry(tmp_path / "node", node, max_bytes=MAX, host=host).load_all() == []
            assert host.calls == []
        finally:
            await node.aclose()

    asyncio.run(run())


def test_upgrade_replaces_the_record(tmp_path: Path, author: Identity) -> None:
    v1 = _bundle(app_copy(tmp_path / "v1", author), author)
    v2 = _bundle(app_copy(tmp_path / "v2", author, version="1.1.0"), author)

    async def run() -> None:
        node = build_node(Settings(data_dir=tmp_path / "node"))
        host = Host()
        reg = AppRegistry(tmp_path / "node", node, max_bytes=MAX, host=host)
        try:
            await reg.install(v1, v1.manifest.permissions)
            await reg.install(v2, v2.manifest.permissions)
            app = reg.get("guestbook")
            assert app is not None and app.bundle_hash == v2.hash and app.manifest.version == "1.1.0"
            assert host.calls == [("load", "guestbook@1.0.0"), ("load", "guestbook@1.1.0")]
        finally:
            await node.aclose()

    asyncio.run(run())


def test_an_app_whose_sandbox_does_not_start_is_not_installed(tmp_path: Path, author: Identity) -> None:
    folder = app_copy(tmp_path / "gb", author)
    (folder / "schemas" / "entry.json").write_text('{"type": 12}')  # JSON, but not a JSON Schema
    bundle = _bundle(folder, author)

    async def run() -> None:
        node = build_node(Settings(data_dir=tmp_path / "node"))
        host = AppHost(node)
        reg = AppRegistry(tmp_path / "node", node, max_bytes=MAX, host=host)
        try:
            with pytest.raises(InvalidBundle, match="guestbook does not start"):
                await reg.install(bundle, bundle.manifest.permissions)
            assert reg.list() == [] and host.status() == []
            assert node.fetch_or_none(record_key("guestbook")) is None
            assert node.blobs is not None and not node.blobs.has(bundle.hash)
        finally:
            host.close()
            await node.aclose()

    asyncio.run(run())


def test_an_installed_bundle_survives_blob_gc_until_removed(
    tmp_path: Path, app_dir: Path, author: Identity
) -> None:
    """Installed from a file no op points to the bundle's blob: the install record keeps it live."""
    bundle = _bundle(app_dir, author)

    async def run() -> None:
        node = build_node(Settings(data_dir=tmp_path / "node"))
        reg = AppRegistry(tmp_path / "node", node, max_bytes=MAX)
        try:
            await reg.install(bundle, bundle.manifest.permissions)
            assert node.blobs is not None and node.blobs.has(bundle.hash)
            assert node.collect_blobs(grace=0) == []
            assert reg.get("guestbook") is not None and node.blobs.has(bundle.hash)
            await reg.remove("guestbook")
            assert [b.hash for b in node.collect_blobs(grace=0)] == [bundle.hash]
            assert not node.blobs.has(bundle.hash)
        finally:
            await node.aclose()

    asyncio.run(run())


def test_a_bundle_file_of_an_older_version_moves_into_the_blob_store(
    tmp_path: Path, app_dir: Path, author: Identity
) -> None:
    bundle = _bundle(app_dir, author)

    async def run() -> None:
        node = build_node(Settings(data_dir=tmp_path / "node"))
        try:
            await AppRegistry(tmp_path / "node", node, max_bytes=MAX).install(
                bundle, bundle.manifest.permissions
            )
            assert node.blobs is not None
            old = bundle_file(tmp_path / "node", bundle.hash)  # as an older node kept it
            old.parent.mkdir(parents=True)
            old.write_bytes(node.blobs.read(bundle.hash))
            node.blobs.delete(bundle.hash)
            host = Host()
            assert AppRegistry(tmp_path / "node", node, max_bytes=MAX, host=host).load_all() == ["guestbook"]
            assert node.blobs.read(bundle.hash) == bundle.data and not old.exists()
        finally:
            await node.aclose()

    asyncio.run(run())
