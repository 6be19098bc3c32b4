"""SqliteStorage against the storage acceptance suite, plus what only a file database has."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import statebus.storage.sqlite as sqlite_module
from statebus.errors import StoreInUse
from statebus.storage.base import Snapshot, Storage
from statebus.storage.sqlite import SCHEMA_VERSION, STORE_FILE, SqliteStorage
from statebus.testing.storage_suite import NS, StorageSuite, op


class TestSqliteStorage(StorageSuite):
    def make_storage(self, tmp_path: Path) -> Storage:
        return SqliteStorage(tmp_path / STORE_FILE)

    def reopen(self, storage: Storage, tmp_path: Path) -> Storage:
        storage.close()
        return SqliteStorage(tmp_path / STORE_FILE)


class TestSqliteStorageWalkingKeys(TestSqliteStorage):
    """The suite again, with subtree scans forced onto the (key, seq) index path."""

    @pytest.fixture(autouse=True)
    def _walk_keys(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(sqlite_module, "_SEQ_WALK_MAX", -1)


def _pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def test_open_folder_creates_the_layout(tmp_path: Path) -> None:
    store = SqliteStorage.open_folder(tmp_path / "data")
    try:
        store.append([op(1, f"{NS}/a")])
        names = {p.name for p in (tmp_path / "data").iterdir()}
        assert names == {"store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm", "store.sqlite3.lock"}
        assert _pragma(store.path, "journal_mode") == "wal"
        assert _pragma(store.path, "auto_vacuum") == 2  # incremental
        assert _pragma(store.path, "user_version") == SCHEMA_VERSION == 2
        assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        store.close()
    assert {p.name for p in (tmp_path / "data").iterdir()} == {"store.sqlite3", "store.sqlite3.lock"}


def test_compaction_gives_disk_space_back(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILE
    store = SqliteStorage(path)
    blob = bytes(range(256)) * 400  # 100 KiB per op
    store.append([op(s, f"{NS}/big", data=blob) for s in range(1, 41)])
    store.append([op(41, f"{NS}/small")])
    store.close()
    full = path.stat().st_size
    assert full > 40 * len(blob)

    store = SqliteStorage(path)
    pages_before = store._writer.execute("PRAGMA page_count").fetchone()[0]
    store.compact(Snapshot(f"{NS}/big", 40, b"folded"))
    conn = store._writer
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert conn.execute("PRAGMA page_count").fetchone()[0] < pages_before // 10
    store.close()
    assert path.stat().st_size < full // 10


def test_conflict_leaves_no_trace_in_any_table(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / STORE_FILE)
    try:
        store.append([op(1, f"{NS}/a", version="v")])
        try:
            store.append([op(2, f"{NS}/b"), op(3, f"{NS}/a", version="v")])
        except Exception as exc:
            assert "already stored" in str(exc)
        counts = [store._writer.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("ops", "keys")]
        assert counts == [1, 1]
    finally:
        store.close()


def test_a_long_read_does_not_block_the_writer(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILE
    store = SqliteStorage(path)
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        store.append([op(1, f"{NS}/a")])
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM ops").fetchone()[0] == 1
        finished = threading.Event()

        def write() -> None:
            store.append([op(2, f"{NS}/b")])
            finished.set()

        thread = threading.Thread(target=write)
        thread.start()
        assert finished.wait(5), "append waited for a reader"
        thread.join()
        assert reader.execute("SELECT COUNT(*) FROM ops").fetchone()[0] == 1  # its own snapshot
        reader.execute("COMMIT")
        assert reader.execute("SELECT COUNT(*) FROM ops").fetchone()[0] == 2
    finally:
        reader.close()
        store.close()


def test_children_use_the_live_key_index(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / STORE_FILE)
    try:
        plan = store._writer.execute(
            'EXPLAIN QUERY PLAN SELECT key FROM keys WHERE "exists" = 1 AND key > ? AND key < ? '
            "ORDER BY key LIMIT 1",
            ("a", "b"),
        ).fetchall()
        assert "keys_live" in str(plan)
    finally:
        store.close()


def test_a_file_made_without_auto_vacuum_is_converted(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILE
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE unrelated (x)")
    conn.commit()
    conn.close()
    assert _pragma(path, "auto_vacuum") == 0
    SqliteStorage(path).close()
    assert _pragma(path, "auto_vacuum") == 2


def test_one_open_store_per_file(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILE
    store = SqliteStorage(path)
    with pytest.raises(StoreInUse, match=f"process {os.getpid()}"):
        SqliteStorage(path)
    store.append([op(1, f"{NS}/a")])  # the refused opener changed nothing and took nothing
    store.close()
    again = SqliteStorage(path)  # closing released the lock
    assert again.max_seq() == 1
    again.close()


def test_a_store_open_in_another_process_is_refused_until_it_dies(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILE
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreInUse, match=f"process {holder.pid}; stop that node first"):
            SqliteStorage(path)
        holder.kill()  # kill -9: the kernel drops the flock with the process
        holder.wait(10)
        store = SqliteStorage(path)
        assert store.max_seq() == 0
        store.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        if holder.stdout is not None:
            holder.stdout.close()


HOLD = """
import sys, time
from statebus.storage.sqlite import SqliteStorage
store = SqliteStorage(sys.argv[1])
print("open", flush=True)
time.sleep(60)
"""
