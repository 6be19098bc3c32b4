"""The guestbook's way across nodes: pack and sign on A, publish on A, install on B through
federation (the `statebus app` command against real nodes), upgrade, remove, and the refusals."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from statebus.apps.bundle import bundle_hash
from statebus.apps.publish import BUNDLE_TYPE, bundle_key, pointer_key
from statebus.apps.registry import record_key
from statebus.blobs import BLOB_TYPE, BlobPointer, BlobStore
from statebus.cli import main
from statebus.server import Cluster, RunningNode
from tests.apps.bundles import app_copy
from tests.federation.support import has, wait_until

pytestmark = pytest.mark.anyio
FAST = {"sse_ping_interval": 0.3, "backoff_base": 0.05, "backoff_cap": 0.4, "app_fetch_timeout": 20.0}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path / "nodes", dht_secret=os.urandom(16), **FAST)
    try:
        yield c
    finally:
        await c.aclose()


def store(node: RunningNode) -> BlobStore:
    assert node.node.blobs is not None
    return node.node.blobs


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


async def cli(node: RunningNode, *args: str) -> int:
    url = [] if args[:2] == ("app", "pack") else ["--url", node.url]
    return await asyncio.to_thread(_run, [*args, "--data", str(node.settings.data_dir), *url])


async def test_publish_on_a_install_on_b_through_federation(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    folder = app_copy(tmp_path / "guestbook", a.identity)
    out = tmp_path / "gb.sbx"
    assert await cli(a, "app", "pack", str(folder), "--out", str(out)) == 0
    h = bundle_hash(out.read_bytes())
    assert f"sha256 {h}, signed by {a.pubkey}" in capsys.readouterr().out
    assert await cli(a, "app", "publish", str(out)) == 0
    assert capsys.readouterr().out.startswith(f"published guestbook 1.0.0 at /{a.pubkey}/.apps/guestbook\n")
    pointer = a.node.fetch(pointer_key(a.pubkey, "guestbook")).value
    assert (pointer["version"], pointer["hash"], pointer["size"]) == ("1.0.0", h, out.stat().st_size)

    source = pointer_key(a.pubkey, "guestbook")
    assert await cli(b, "app", "install", source, "--via", a.url) == 1  # no terminal, no --yes
    err = capsys.readouterr().err
    assert "read   other people's guestbook/" in err and "pass --yes" in err
    assert b.node.fetch_or_none(record_key("guestbook")) is None  # nothing written

    assert await cli(b, "app", "install", source, "--via", a.url, "--yes") == 0
    assert capsys.readouterr().out == f"installed guestbook 1.0.0 ({h[:16]}…)\n"
    record = b.node.fetch(record_key("guestbook")).value
    assert record["hash"] == h and record["granted"]["write"] == ["guestbook/"]
    assert store(b).read(h) == out.read_bytes()
    app = b.server.statebus_app.state.app_registry.get("guestbook")
    assert app is not None and app.web_file("index.html") is not None
    # B serves it on the app's own origin, from the bundle that came through federation
    async with httpx.AsyncClient(base_url=b.url, trust_env=False) as http:
        page = await http.get("/", headers={"Host": f"guestbook.localhost:{b.port}"})
        script = await http.get("/app.js", headers={"Host": f"guestbook.localhost:{b.port}"})
        other = await http.get("/", headers={"Host": f"nothere.localhost:{b.port}"})
    assert page.status_code == 200 and page.content == (folder / "web" / "index.html").read_bytes()
    assert "connect-src 'self'" in page.headers["content-security-policy"]
    assert script.status_code == 200 and script.content == (folder / "web" / "app.js").read_bytes()
    assert other.status_code == 404

    # an upgrade asking for no more goes ahead; one asking for more asks again
    v11 = app_copy(tmp_path / "v11", a.identity, version="1.1.0")
    assert await cli(a, "app", "publish", str(v11)) == 0
    assert await cli(b, "app", "upgrade", "guestbook", "--via", a.url) == 0
    assert "upgraded guestbook 1.0.0 -> 1.1.0" in capsys.readouterr().out
    wider = {"read": ["guestbook/"], "write": ["guestbook/", "profile/"], "read_others": ["guestbook/"]}
    v2 = app_copy(tmp_path / "v2", a.identity, version="2.0.0", permissions=wider)
    assert await cli(a, "app", "publish", str(v2)) == 0
    capsys.readouterr()
    assert await cli(b, "app", "upgrade", "guestbook", "--via", a.url) == 1
    err = capsys.readouterr().err
    assert "asks for more than you granted 1.1.0" in err and "write  your profile/" in err
    assert b.node.fetch(record_key("guestbook")).value["version"] == "1.1.0"
    assert await cli(b, "app", "upgrade", "guestbook", "--via", a.url, "--yes") == 0
    assert b.node.fetch(record_key("guestbook")).value["granted"]["write"] == ["guestbook/", "profile/"]

    capsys.readouterr()
    assert await cli(b, "app", "list") == 0
    assert capsys.readouterr().out.startswith(f"guestbook 2.0.0  by {a.pubkey}")
    assert await cli(b, "app", "remove", "guestbook") == 0
    gone = b.node.fetch_or_none(record_key("guestbook"))
    assert gone is None or not gone.exists


async def test_a_3mb_bundle_publishes_as_a_blob_and_installs_through_federation(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over max_value_bytes (1 MiB): published on A as a blob with a signed pointer, fetched by B's
    blob fetcher, checked, installed into B's blob store (one copy) and served on the app's origin."""
    a, b = await cluster.add("a"), await cluster.add("b")
    folder = app_copy(tmp_path / "guestbook", a.identity)
    asset = os.urandom(3 * 1024 * 1024)  # a large web asset: incompressible, 3 MiB
    (folder / "web" / "photo.bin").write_bytes(asset)
    assert await cli(a, "app", "publish", str(folder)) == 0
    h = a.node.fetch(pointer_key(a.pubkey, "guestbook")).value["hash"]
    stored = a.node.fetch_or_none(bundle_key(a.pubkey, h))
    assert stored is not None and stored.content_type == BLOB_TYPE  # a pointer op, not the bytes
    blob = BlobPointer.decode(bytes(stored.value))
    assert (blob.hash, blob.type) == (h, BUNDLE_TYPE) and blob.size > 3 * 1024 * 1024
    assert store(a).size(h) == blob.size

    assert await cli(b, "app", "install", pointer_key(a.pubkey, "guestbook"), "--via", a.url, "--yes") == 0
    assert capsys.readouterr().out.endswith(f"installed guestbook 1.0.0 ({h[:16]}…)\n")
    assert store(b).read(h) == store(a).read(h)
    assert not (Path(b.settings.data_dir) / "apps").exists()  # no second copy
    async with httpx.AsyncClient(base_url=b.url, trust_env=False) as http:
        got = await http.get("/photo.bin", headers={"Host": f"guestbook.localhost:{b.port}"})
    assert got.status_code == 200 and got.content == asset
    # GC on B keeps it while installed (B's copy of A's pointer op, and B's record, both name it)
    assert b.node.collect_blobs(grace=0) == [] and store(b).has(h)


async def test_a_tampered_published_bundle_is_refused(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A's pointer names an oversized bundle, then A's blob pointer names other bytes than A's app
    pointer: both refused at once, nothing installed."""
    a, b = await cluster.add("a"), await cluster.add("b")
    folder = app_copy(tmp_path / "guestbook", a.identity)
    assert await cli(a, "app", "publish", str(folder)) == 0
    published = a.node.fetch(pointer_key(a.pubkey, "guestbook")).value
    h = published["hash"]
    await a.node.save(pointer_key(a.pubkey, "guestbook"), {**published, "size": 1 << 30})  # oversized
    capsys.readouterr()
    assert await cli(b, "app", "install", pointer_key(a.pubkey, "guestbook"), "--via", a.url, "--yes") == 1
    assert "names a bundle of 1073741824 bytes; app_bundle_max_bytes is" in capsys.readouterr().err
    await a.node.save(pointer_key(a.pubkey, "guestbook"), published)
    bad = store(a).read(h).replace(b"MAX_TEXT = 500", b"MAX_TEXT = 5e9")
    forged = store(a).put_bytes(bad)
    pointer = BlobPointer(forged.hash, forged.size, BUNDLE_TYPE)
    await a.node.save(bundle_key(a.pubkey, h), pointer.encode(), content_type=BLOB_TYPE)
    capsys.readouterr()
    assert await cli(b, "app", "install", pointer_key(a.pubkey, "guestbook"), "--via", a.url, "--yes") == 1
    assert "tampered" in capsys.readouterr().err
    assert b.node.fetch_or_none(record_key("guestbook")) is None
    assert b.server.statebus_app.state.app_registry.get("guestbook") is None
    assert [s.name for s in b.apps.status()] == []  # nothing runs


async def test_a_tampered_bundle_blob_is_refused(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A serves other bytes under the bundle's sha256 (its blob changed on disk): B's blob fetcher
    keeps nothing, and the install fails at once naming the refusal."""
    a, b = await cluster.add("a"), await cluster.add("b")
    assert await cli(a, "app", "publish", str(app_copy(tmp_path / "guestbook", a.identity))) == 0
    h = a.node.fetch(pointer_key(a.pubkey, "guestbook")).value["hash"]
    path = store(a).path(h)
    path.write_bytes(path.read_bytes().replace(b"MAX_TEXT = 500", b"MAX_TEXT = 5e9"))
    capsys.readouterr()
    started = asyncio.get_running_loop().time()
    assert await cli(b, "app", "install", pointer_key(a.pubkey, "guestbook"), "--via", a.url, "--yes") == 1
    err = capsys.readouterr().err
    assert "the bundle's bytes were refused" in err and "bad_blob" in err, err
    assert asyncio.get_running_loop().time() - started < FAST["app_fetch_timeout"]
    assert b.node.fetch_or_none(record_key("guestbook")) is None
    assert not store(b).has(h)


async def test_the_installed_guestbook_validates_derives_and_serves(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What issue 11 resolves on: the repo's guestbook, pack → sign → publish on A → install on B
    through federation → validate (B's own writes, and A's ops arriving at B) → derive → serve."""
    a, b = await cluster.add("a"), await cluster.add("b")
    assert await cli(a, "app", "publish", str(app_copy(tmp_path / "guestbook", a.identity))) == 0
    assert await cli(b, "app", "install", pointer_key(a.pubkey, "guestbook"), "--via", a.url, "--yes") == 0
    assert [s.name for s in b.apps.status()] == ["guestbook"]  # running in B's sandbox
    async with httpx.AsyncClient(base_url=b.url, headers={"Authorization": f"Bearer {b.token}"}) as http:
        ok = await http.put("/~/guestbook/entries/1", json={"name": "ann", "text": "hello from B"})
        assert ok.status_code == 200
        long = await http.put("/~/guestbook/entries/2", json={"name": "bob", "text": "x" * 501})
        assert long.status_code == 422 and long.json()["error"] == "app_rejected"
        nameless = await http.put("/~/guestbook/entries/3", json={"text": "who?"})
        assert nameless.status_code == 422 and nameless.json()["error"] == "app_rejected"
        assert (await http.get("/~/guestbook/entries/2")).status_code == 404
        await wait_until(lambda: has(b, f"/{b.pubkey}/guestbook/count", 1), what="the derived count")
        await http.put("/~/guestbook/entries/4", json={"name": "cy", "text": "second"})
        await wait_until(lambda: has(b, f"/{b.pubkey}/guestbook/count", 2), what="the count, re-derived")
        page = await http.get("/", headers={"Host": f"guestbook.localhost:{b.port}"})
        assert page.status_code == 200 and b"<h1>Guestbook</h1>" in page.content
    # A runs no validator: its owner can write a 600-character entry in A's namespace, and A signs it.
    # B follows A's guestbook/ and its copy of the app refuses that op as it arrives; the others land.
    await a.share("/~/guestbook/")
    async with httpx.AsyncClient(base_url=a.url, headers={"Authorization": f"Bearer {a.token}"}) as http:
        for i, text in enumerate(["first", "y" * 600, "third"]):
            r = await http.put(f"/~/guestbook/entries/{i}", json={"name": "a", "text": text})
            assert r.status_code == 200
    await b.follow(f"/{a.pubkey}/guestbook/", via=[a.url])
    theirs = f"/{a.pubkey}/guestbook/entries/"
    await wait_until(lambda: has(b, theirs + "2"), what="A's later valid entry at B")
    assert has(b, theirs + "0") and not has(b, theirs + "1")
    follower = next(f for f in b.federation.followers.values() if f.follow.pattern.endswith("/guestbook/"))
    await wait_until(lambda: follower.rejected == 1, timeout=20, what="the rejection, counted")
    assert "app_rejected: app guestbook: guestbook/entries/1" in follower.last_rejection
