"""Upgrades: a data folder written by an older statebus opens, migrates and serves the same data; one
written by a newer statebus is refused with a clear message and left as it was."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from statebus.errors import StoreTooNew
from statebus.storage.sqlite import SCHEMA_VERSION, STORE_FILE, SqliteStorage
from statebus.testing.live_server import live_server

FIXTURES = Path(__file__).parent / "fixtures"
PUBKEY = "zg4bxsu6vvg3rhujmaobmf7jchbozfceqkf75km3dx22tcdfurnq"


def _copy(name: str, dest: Path) -> Path:
    folder = dest / name
    shutil.copytree(FIXTURES / name, folder)
    folder.chmod(0o700)
    for path in folder.rglob("*"):
        path.chmod(0o700 if path.is_dir() else 0o600)  # git keeps no modes; the keystore wants 0600
    return folder


def _pragma(path: Path, sql: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def test_the_fixture_is_schema_1() -> None:
    # the fixture itself stays as the old code wrote it (nothing opens it in place)
    path = FIXTURES / "data-schema1" / STORE_FILE
    uri = f"file:{path}?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    assert tables == {"ops", "snapshots", "keys"}


def test_a_schema_1_folder_migrates_and_serves_the_same_data(tmp_path: Path) -> None:
    data = _copy("data-schema1", tmp_path)
    with live_server(data) as srv:
        assert srv.running.pubkey == PUBKEY
        headers = {"Authorization": f"Bearer {srv.token}"}
        with httpx.Client(base_url=srv.url, headers=headers, timeout=10) as http:
            first = http.get("/~/notes/first")
            assert first.status_code == 200 and first.json() == {"text": "written by schema 1", "n": 2}
            assert http.get("/~/notes/second").json() == "two"
            assert http.get("/~/gone").status_code == 404
            put = http.put("/~/notes/third", json=3)
            assert put.status_code == 200, put.text
    store = data / STORE_FILE
    assert _pragma(store, "PRAGMA user_version") == SCHEMA_VERSION == 2
    assert _pragma(store, "SELECT value FROM meta WHERE name = 'written_by'") == "statebus 0.1.0"
    with (
        live_server(data) as srv,  # a migrated store opens again as it is
        httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.token}"}) as http,
    ):
        assert http.get("/~/notes/third").json() == 3


def _newer(tmp_path: Path) -> Path:
    data = _copy("data-schema1", tmp_path)
    store = SqliteStorage.open_folder(data)
    store.close()
    conn = sqlite3.connect(data / STORE_FILE, isolation_level=None)
    conn.execute("UPDATE meta SET value = 'statebus 9.0.0' WHERE name = 'written_by'")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    return data


def test_a_store_from_a_newer_statebus_is_refused_untouched(tmp_path: Path) -> None:
    data = _newer(tmp_path)
    store = data / STORE_FILE
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    with pytest.raises(StoreTooNew) as caught:
        SqliteStorage.open_folder(data)
    assert "schema version 3, written by statebus 9.0.0" in caught.value.detail
    assert "reads schema 2 at most" in caught.value.detail
    assert caught.value.code == "store_too_new"
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before
    # and the store is not left locked: the newer statebus could open it now
    fd = os.open(data / f"{STORE_FILE}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_serve_refuses_a_newer_store_in_one_line(tmp_path: Path) -> None:
    data = _newer(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "statebus", "serve", "--port", "0", "--dht-port", "0", "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("statebus: error: the store ") and "schema version 3" in lines[-1]
    assert "Traceback" not in done.stderr
