"""`statebus app …` with the node stopped (the data folder) and running (its owner routes), from a
file and from a URL; the routes refuse anyone but the owner."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from statebus.apps.registry import record_key
from statebus.cli import main
from statebus.http.apps import APPS_PATH
from statebus.identity import keystore
from statebus.testing.live_server import live_server
from tests.apps.bundles import app_copy

NO_NODE = "http://127.0.0.1:1"


def run(*argv: str) -> int:
    try:
        return main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


@pytest.fixture
def packed(tmp_path: Path) -> tuple[Path, Path]:
    """A data folder and the guestbook packed and signed by its node identity."""
    data = tmp_path / "node"
    identity, _ = keystore.init(data)
    folder = app_copy(tmp_path / "guestbook", identity)
    out = tmp_path / "gb.sbx"
    assert run("app", "pack", str(folder), "--out", str(out), "--data", str(data)) == 0
    return data, out


def test_with_the_node_stopped(packed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    data, out = packed
    d = ("--data", str(data), "--url", NO_NODE)
    capsys.readouterr()
    assert run("app", "install", str(out), *d) == 1  # stdin is not a terminal and no --yes
    assert capsys.readouterr().err.endswith(
        "statebus: error: install asks for your consent: run it in a terminal, or pass --yes to accept these "
        "permissions\n"
    )
    assert not (data / "apps").exists()
    assert run("app", "install", str(out), "--yes", *d) == 0
    assert capsys.readouterr().out.startswith("installed guestbook 1.0.0 (")
    assert run("app", "install", str(out), "--yes", *d) == 0
    assert capsys.readouterr().out == "guestbook 1.0.0 is installed already\n"
    assert run("app", "list", *d) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("guestbook 1.0.0  by ") and lines[1:] == [
        "  read   your guestbook/",
        "  write  your guestbook/",
        "  read   other people's guestbook/",
    ]
    assert run("app", "remove", "guestbook", *d) == 0
    assert run("app", "remove", "guestbook", *d) == 1
    assert capsys.readouterr().err == "statebus: error: no app named 'guestbook' is installed\n"
    assert run("app", "list", *d) == 0
    assert capsys.readouterr().out == "no apps installed\n"


def test_refusals_are_one_line(packed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    data, out = packed
    d = ("--data", str(data), "--url", NO_NODE)
    out.with_name(out.name + ".sig").unlink()
    capsys.readouterr()
    assert run("app", "install", str(out), "--yes", *d) == 1
    assert "gb.sbx.sig is missing" in capsys.readouterr().err
    assert run("app", "install", "/not/a/source", "--yes", *d) == 1
    assert "is not a bundle file, an http(s) URL or /<author>/.apps/<name>" in capsys.readouterr().err
    assert run("app", "install", "/" + "a" * 52 + "/.apps/guestbook", "--yes", *d) == 1
    assert "start the node" in capsys.readouterr().err
    assert not [f for f in (data / "blobs").rglob("*") if f.is_file()]  # no bundle stored
    assert not (data / "apps").exists()


@contextlib.contextmanager
def file_server(folder: Path) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_running_node_from_a_url(packed: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    data, out = packed
    with live_server(data) as srv, file_server(out.parent) as site:
        anon = httpx.get(srv.url + APPS_PATH)
        assert anon.status_code == 403 and anon.json()["error"] == "forbidden"
        probe = httpx.post(srv.url + APPS_PATH + "/check", content=out.read_bytes())
        assert probe.status_code == 403
        capsys.readouterr()
        assert run("app", "install", f"{site}/gb.sbx", "--yes", "--data", str(data), "--url", srv.url) == 0
        assert capsys.readouterr().out.startswith("installed guestbook 1.0.0")
        record = srv.node.fetch(record_key("guestbook")).value
        assert srv.node.blobs is not None and srv.node.blobs.read(record["hash"]) == out.read_bytes()
        listed = httpx.get(srv.url + APPS_PATH, headers=srv.auth).json()["apps"]
        assert [(a["name"], a["hash"]) for a in listed] == [("guestbook", record["hash"])]
        assert (
            run("app", "install", f"{site}/missing.sbx", "--yes", "--data", str(data), "--url", srv.url) == 1
        )
        assert "missing.sbx answered HTTP 404" in capsys.readouterr().err
        gone = httpx.delete(srv.url + APPS_PATH + "/guestbook")
        assert gone.status_code == 403 and srv.node.fetch(record_key("guestbook")).exists
        assert run("app", "remove", "guestbook", "--data", str(data), "--url", srv.url) == 0


def test_a_delegated_app_key_signs_and_publish_works_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The author keeps the namespace key on the node and signs releases with an app key delegated
    /~/.apps/; the record travels in the signature. Publishing works with the node stopped too."""
    data = tmp_path / "node"
    identity, _ = keystore.init(data)
    folder = app_copy(tmp_path / "guestbook", identity)
    key = tmp_path / "release.key"
    with live_server(data) as srv:
        d = ("--data", str(data), "--url", srv.url)
        assert run("keys", "derive", "app/release", "--out", str(key), "--data", str(data)) == 0
        signer = capsys.readouterr().out.strip()
        out = tmp_path / "gb.sbx"
        assert run("app", "pack", str(folder), "--out", str(out), "--key", str(key), "--data", str(data)) == 1
        assert "carries no delegation from the author" in capsys.readouterr().err
        assert run("delegate", signer, "--scope", "/~/.apps/", *d) == 0
        record = tmp_path / "record.json"
        record.write_bytes(httpx.get(f"{srv.url}/~/.keys/{signer}", headers=srv.auth).content)
    capsys.readouterr()
    args = ("--key", str(key), "--delegation", str(record), "--data", str(data))
    assert run("app", "pack", str(folder), "--out", str(out), *args) == 0
    assert f"signed by {signer}" in capsys.readouterr().out
    assert run("app", "publish", str(out), "--data", str(data), "--url", NO_NODE) == 0
    assert capsys.readouterr().out.startswith(
        f"published guestbook 1.0.0 at /{identity.pubkey}/.apps/guestbook"
    )
    assert run("app", "install", str(out), "--yes", "--data", str(data), "--url", NO_NODE) == 0
    with live_server(data) as srv:  # the restarted node loads it, re-checked: the delegated signer verifies
        app = srv.running.server.statebus_app.state.app_registry.get("guestbook")
        assert app is not None and app.bundle.signature.signer == signer
        assert [s.name for s in srv.running.apps.status()] == ["guestbook"]
        pointer = httpx.get(f"{srv.url}/~/.apps/guestbook", headers=srv.auth).json()
        assert pointer["published"] is True and pointer["granted"]["write"] == ["guestbook/"]
        # the author revokes the release key: the bundles it signed are refused from then on
        d = ("--data", str(data), "--url", srv.url)
        assert run("revoke", signer, "--reason", "leaked", *d) == 0
        capsys.readouterr()
        assert run("app", "upgrade", "guestbook", str(out), "--yes", *d) == 1
        assert f"the delegation of {signer} by {identity.pubkey} was revoked" in capsys.readouterr().err
