"""The acceptance suite every storage adapter passes (automerge's ``runStorageAdapterTests`` shape).

Subclass :class:`StorageSuite` in a test module named ``Test…``, give it ``make_storage`` (and,
for a durable adapter, ``reopen``), and pytest runs every rule of :mod:`statebus.storage.base`
against the adapter::

    class TestSqliteStorage(StorageSuite):
        def make_storage(self, tmp_path: Path) -> Storage:
            return SqliteStorage(tmp_path / "store.sqlite3")

        def reopen(self, storage: Storage, tmp_path: Path) -> Storage:
            storage.close()
            return SqliteStorage(tmp_path / "store.sqlite3")
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from statebus.errors import InvalidKey, InvalidOp, NotFound, VersionConflict
from statebus.storage.base import Snapshot, Storage, StoredOp
from statebus.types import Key, Seq

NS = "/" + "b" * 52
"""A namespace for the keys the suite writes."""


def op(
    seq: Seq, key: Key, version: str | None = None, data: bytes | None = None, exists: bool = True
) -> StoredOp:
    """A stored op with a version and data derived from ``seq`` unless given."""
    return StoredOp(
        seq=seq,
        key=key,
        version=f"{seq}-v" if version is None else version,
        data=f"op {seq}".encode() if data is None else data,
        exists=exists,
    )


def seqs(ops: list[StoredOp]) -> list[Seq]:
    return [o.seq for o in ops]


class StorageSuite(abc.ABC):
    """Every rule of the storage seam, as tests. Subclasses supply the adapter."""

    @abc.abstractmethod
    def make_storage(self, tmp_path: Path) -> Storage:
        """A new, empty store whose files (if any) live under ``tmp_path``."""

    def reopen(self, storage: Storage, tmp_path: Path) -> Storage:
        """Close ``storage`` and open the same store again (durable adapters override this)."""
        raise NotImplementedError(f"{type(self).__name__} does not reopen stores")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Storage]:
        storage = self.make_storage(tmp_path)
        yield storage
        storage.close()

    # -- append, load, max_seq ------------------------------------------------------------------

    def test_empty_store(self, store: Storage) -> None:
        assert store.max_seq() == 0
        assert store.load(f"{NS}/a") is None
        assert store.scan("", 0, 10) == []
        assert store.children(f"{NS}/", "", 10) == []
        assert store.horizon("") == 0

    def test_append_then_load_in_sequence_order(self, store: Storage) -> None:
        store.append([op(1, f"{NS}/a"), op(2, f"{NS}/b")])
        store.append([op(3, f"{NS}/a", data=b"", exists=False), op(5, f"{NS}/a", data=b"\x00\xff")])
        record = store.load(f"{NS}/a")
        assert record is not None
        assert record.snapshot is None
        assert record.ops == [
            op(1, f"{NS}/a"),
            op(3, f"{NS}/a", data=b"", exists=False),
            op(5, f"{NS}/a", data=b"\x00\xff"),
        ]
        assert store.max_seq() == 5

    def test_empty_batch_changes_nothing(self, store: Storage) -> None:
        store.append([])
        assert store.max_seq() == 0

    def test_same_version_on_two_keys_is_fine(self, store: Storage) -> None:
        store.append([op(1, f"{NS}/a", version="1-x"), op(2, f"{NS}/b", version="1-x")])
        assert seqs(store.scan("", 0, 10)) == [1, 2]

    def test_duplicate_version_rejects_whole_batch(self, store: Storage) -> None:
        store.append([op(1, f"{NS}/a", version="v1")])
        with pytest.raises(VersionConflict):
            store.append([op(2, f"{NS}/b", version="v9"), op(3, f"{NS}/a", version="v1")])
        assert store.load(f"{NS}/b") is None
        assert seqs(store.scan("", 0, 10)) == [1]
        assert store.max_seq() == 1
        assert store.children(f"{NS}/", "", 10) == ["a"]
        store.append([op(2, f"{NS}/b", version="v9")])  # the same seq is free again
        assert seqs(store.scan("", 0, 10)) == [1, 2]

    def test_duplicate_version_inside_one_batch(self, store: Storage) -> None:
        with pytest.raises(VersionConflict):
            store.append([op(1, f"{NS}/a", version="v"), op(2, f"{NS}/a", version="v")])
        assert store.max_seq() == 0
        assert store.load(f"{NS}/a") is None

    def test_sequence_numbers_must_increase(self, store: Storage) -> None:
        store.append([op(5, f"{NS}/a")])
        for bad in ([op(5, f"{NS}/b")], [op(4, f"{NS}/b")], [op(7, f"{NS}/b"), op(6, f"{NS}/c")]):
            with pytest.raises(InvalidOp):
                store.append(bad)
        assert seqs(store.scan("", 0, 10)) == [5]
        assert store.load(f"{NS}/b") is None

    # -- scan -----------------------------------------------------------------------------------

    def _scan_fixture(self, store: Storage) -> None:
        store.append([op(1, f"{NS}/a"), op(2, f"{NS}/a/x"), op(3, f"{NS}/ab/x")])
        store.append([op(4, f"{NS}/a/b/c"), op(5, f"{NS}/a"), op(6, f"{NS}/a-b")])
        store.append([op(7, "/" + "c" * 52 + "/a/x")])

    def test_scan_all_after_cursor_with_limit(self, store: Storage) -> None:
        self._scan_fixture(store)
        assert seqs(store.scan("", 0, 100)) == [1, 2, 3, 4, 5, 6, 7]
        assert seqs(store.scan("", 2, 3)) == [3, 4, 5]
        assert store.scan("", 7, 10) == []
        assert store.scan("", 0, 0) == []

    def test_scan_exact_key(self, store: Storage) -> None:
        self._scan_fixture(store)
        assert seqs(store.scan(f"{NS}/a", 0, 10)) == [1, 5]
        assert seqs(store.scan(f"{NS}/a", 1, 10)) == [5]
        assert store.scan(f"{NS}/zz", 0, 10) == []

    def test_scan_subtree_is_strict_descendants(self, store: Storage) -> None:
        self._scan_fixture(store)
        assert seqs(store.scan(f"{NS}/a/", 0, 10)) == [2, 4]
        assert seqs(store.scan(f"{NS}/", 0, 10)) == [1, 2, 3, 4, 5, 6]
        assert seqs(store.scan(f"{NS}/", 3, 2)) == [4, 5]
        assert seqs(store.scan("/", 0, 10)) == [1, 2, 3, 4, 5, 6, 7]

    def test_scan_pages_through_everything(self, store: Storage) -> None:
        store.append([op(s, f"{NS}/k{s % 7}/x") for s in range(1, 60)])
        found: list[Seq] = []
        cursor = 0
        while page := store.scan(f"{NS}/", cursor, 8):
            found += seqs(page)
            cursor = page[-1].seq
        assert found == list(range(1, 60))

    # -- children -------------------------------------------------------------------------------

    def test_children_lists_keys_and_subtrees(self, store: Storage) -> None:
        self._scan_fixture(store)
        assert store.children(f"{NS}/", "", 10) == ["a", "a-b", "a/", "ab/"]
        assert store.children(f"{NS}/a/", "", 10) == ["b/", "x"]
        assert store.children(f"{NS}/a/b/", "", 10) == ["c"]
        assert store.children(f"{NS}/nothing/", "", 10) == []
        assert store.children("/", "", 10) == ["b" * 52 + "/", "c" * 52 + "/"]

    def test_children_drop_deleted_keys(self, store: Storage) -> None:
        self._scan_fixture(store)
        store.append([op(8, f"{NS}/a", exists=False), op(9, f"{NS}/ab/x", exists=False)])
        assert store.children(f"{NS}/", "", 10) == ["a-b", "a/"]
        store.append([op(10, f"{NS}/a/x", exists=False), op(11, f"{NS}/a/b/c", exists=False)])
        assert store.children(f"{NS}/", "", 10) == ["a-b"]
        store.append([op(12, f"{NS}/ab/x")])
        assert store.children(f"{NS}/", "", 10) == ["a-b", "ab/"]

    def test_children_paginate(self, store: Storage) -> None:
        names = [f"n{i:02d}" for i in range(25)]
        batch = [op(i + 1, f"{NS}/dir/{name}") for i, name in enumerate(names)]
        batch += [op(100 + i, f"{NS}/dir/{name}/deep/er") for i, name in enumerate(names[::3])]
        store.append(batch)
        everything = store.children(f"{NS}/dir/", "", 1000)
        assert everything == sorted(names + [f"{n}/" for n in names[::3]])
        pages: list[str] = []
        after = ""
        while page := store.children(f"{NS}/dir/", after, 4):
            assert len(page) <= 4
            pages += page
            after = page[-1]
        assert pages == everything
        assert store.children(f"{NS}/dir/", "n03/", 2) == ["n04", "n05"]
        assert store.children(f"{NS}/dir/", "n03", 2) == ["n03/", "n04"]
        assert store.children(f"{NS}/dir/", "", 0) == []

    def test_children_need_a_subtree_prefix(self, store: Storage) -> None:
        with pytest.raises(InvalidKey):
            store.children(f"{NS}/a", "", 10)

    # -- compaction and horizon -----------------------------------------------------------------

    def test_compact_folds_ops_into_snapshot(self, store: Storage) -> None:
        self._scan_fixture(store)
        store.append([op(8, f"{NS}/a"), op(9, f"{NS}/b")])
        store.compact(Snapshot(f"{NS}/a", 5, b"state through 5"))
        record = store.load(f"{NS}/a")
        assert record is not None
        assert record.snapshot == Snapshot(f"{NS}/a", 5, b"state through 5")
        assert seqs(record.ops) == [8]
        assert seqs(store.scan("", 0, 100)) == [2, 3, 4, 6, 7, 8, 9]
        assert seqs(store.scan(f"{NS}/a", 0, 100)) == [8]
        assert store.max_seq() == 9
        assert store.children(f"{NS}/", "", 10) == ["a", "a-b", "a/", "ab/", "b"]

    def test_compact_everything_keeps_the_key(self, store: Storage) -> None:
        store.append([op(1, f"{NS}/a"), op(2, f"{NS}/a")])
        store.compact(Snapshot(f"{NS}/a", 2, b"all"))
        record = store.load(f"{NS}/a")
        assert record is not None and record.snapshot is not None
        assert (record.snapshot.data, record.ops) == (b"all", [])
        assert store.max_seq() == 2  # even though no op with seq 2 is left
        assert store.children(f"{NS}/", "", 10) == ["a"]
        with pytest.raises(InvalidOp):
            store.append([op(2, f"{NS}/b")])
        store.compact(Snapshot(f"{NS}/a", 1, b"older"))  # an older snapshot changes nothing
        assert store.load(f"{NS}/a") == record

    def test_compact_unknown_key(self, store: Storage) -> None:
        with pytest.raises(NotFound):
            store.compact(Snapshot(f"{NS}/never", 3, b"x"))
        assert store.load(f"{NS}/never") is None
        assert store.horizon("") == 0

    def test_a_base_from_another_replica_starts_a_key_never_written(self, store: Storage) -> None:
        store.append([op(1, f"{NS}/a")])
        store.compact(Snapshot(f"{NS}/b", 1, b"their base", exists=True))
        store.compact(Snapshot(f"{NS}/c", 1, b"a deleted key's base", exists=False))
        record = store.load(f"{NS}/b")
        assert record is not None and record.snapshot is not None and record.ops == []
        assert (record.snapshot.key, record.snapshot.seq, record.snapshot.data) == (
            f"{NS}/b",
            1,
            b"their base",
        )
        assert store.children(f"{NS}/", "", 10) == ["a", "b"]  # c holds no value
        assert store.horizon(f"{NS}/") == 1 and store.max_seq() == 1
        store.append([op(2, f"{NS}/b")])  # ops go on after it
        record = store.load(f"{NS}/b")
        assert record is not None and seqs(record.ops) == [2]

    def test_horizon_by_pattern(self, store: Storage) -> None:
        self._scan_fixture(store)
        store.compact(Snapshot(f"{NS}/a", 1, b"s"))
        store.compact(Snapshot(f"{NS}/a/b/c", 4, b"s"))
        assert store.horizon("") == 4
        assert store.horizon("/") == 4
        assert store.horizon(f"{NS}/") == 4
        assert store.horizon(f"{NS}/a") == 1
        assert store.horizon(f"{NS}/a/") == 4
        assert store.horizon(f"{NS}/a/x") == 0
        assert store.horizon(f"{NS}/ab/") == 0
        assert store.horizon("/" + "c" * 52 + "/") == 0

    # -- odd keys, big values, threads, persistence ---------------------------------------------

    def test_unicode_keys(self, store: Storage) -> None:
        keys = [f"{NS}/é", f"{NS}/日本/語", f"{NS}/e", f"{NS}/🙂", f"{NS}/z", f"{NS}/Ω/x", f"{NS}/\u00a0"]
        store.append([op(i + 1, k) for i, k in enumerate(keys)])
        assert store.children(f"{NS}/", "", 100) == sorted(
            k[len(NS) + 1 :].split("/")[0] + ("/" if k.count("/") > 2 else "") for k in keys
        )
        assert seqs(store.scan(f"{NS}/日本/", 0, 10)) == [2]
        record = store.load(f"{NS}/🙂")
        assert record is not None and record.ops[0].key == f"{NS}/🙂"
        assert store.children(f"{NS}/", "e", 2) == ["z", "\u00a0"]

    def test_large_blobs(self, store: Storage) -> None:
        big = bytes(range(256)) * (8 * 1024 * 4)  # 8 MiB
        store.append([op(1, f"{NS}/big", data=big), op(2, f"{NS}/big", data=big[::-1])])
        record = store.load(f"{NS}/big")
        assert record is not None
        assert [o.data for o in record.ops] == [big, big[::-1]]
        store.compact(Snapshot(f"{NS}/big", 2, big[:1000]))
        record = store.load(f"{NS}/big")
        assert record is not None and record.snapshot is not None
        assert (record.snapshot.data, record.ops) == (big[:1000], [])

    def test_reads_stay_consistent_while_a_thread_writes(self, store: Storage) -> None:
        hot = f"{NS}/hot"
        done = threading.Event()
        failures: list[str] = []

        def write() -> None:
            try:
                for s in range(1, 121):
                    store.append([op(s, hot, data=str(s).encode())])
                    if s % 10 == 0:
                        store.compact(Snapshot(hot, s - 3, f"through {s - 3}".encode()))
            except Exception as exc:  # pragma: no cover - reported below
                failures.append(f"writer: {exc!r}")
            finally:
                done.set()

        def read() -> None:
            while True:
                finished = done.is_set()
                record = store.load(hot)
                if record is not None:
                    base = record.snapshot.seq if record.snapshot else 0
                    if record.snapshot and record.snapshot.data != f"through {base}".encode():
                        failures.append(f"snapshot data {record.snapshot.data!r} at {base}")
                    if seqs(record.ops) != list(range(base + 1, base + 1 + len(record.ops))):
                        failures.append(f"gap after snapshot {base}: {seqs(record.ops)}")
                page = seqs(store.scan("", 0, 1000))
                if page != sorted(page):
                    failures.append(f"scan out of order: {page}")
                if finished:  # one last full pass after the writer stopped
                    if record is None or base + len(record.ops) != 120:
                        failures.append("the last read missed ops")
                    return

        threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert failures == []
        assert store.max_seq() == 120

    def test_reopen_keeps_everything(self, store: Storage, tmp_path: Path) -> None:
        self._scan_fixture(store)
        store.append([op(8, f"{NS}/a/x", exists=False)])
        store.compact(Snapshot(f"{NS}/a", 5, b"snap"))
        before = (
            store.load(f"{NS}/a"),
            store.scan("", 0, 100),
            store.children(f"{NS}/", "", 100),
            store.children(f"{NS}/a/", "", 100),
            store.horizon(""),
            store.max_seq(),
        )
        store = self.reopen(store, tmp_path)
        try:
            after = (
                store.load(f"{NS}/a"),
                store.scan("", 0, 100),
                store.children(f"{NS}/", "", 100),
                store.children(f"{NS}/a/", "", 100),
                store.horizon(""),
                store.max_seq(),
            )
            assert after == before
            with pytest.raises(VersionConflict):
                store.append([op(9, f"{NS}/a-b", version="6-v")])
            store.append([op(9, f"{NS}/new")])
            assert store.max_seq() == 9
        finally:
            store.close()
