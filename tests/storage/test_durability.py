"""kill -9 in the middle of writing loses no acknowledged batch and leaves no partial one, in both
durability modes; a simulated power cut loses none in ``power`` mode, and at most the last
second of them in ``process`` mode.

A child process appends batches to a SqliteStorage as fast as it can and prints ``acked <seq>``
after each ``append`` returns. The parent kills it with SIGKILL at an arbitrary moment, reopens
the database and checks every acknowledged op is there and every stored batch is whole.

Power loss: the child runs under ``tests/support/powerloss.c`` (LD_PRELOAD), which copies each
store file at every fsync; after the kill the files are put back as their last fsync left them
(``tests/support/powerloss.py``), as a disk that kept nothing unsynced would.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from statebus.storage import cipher
from statebus.storage.sqlite import STORE_FILE, SqliteStorage
from tests.support import powerloss

CHILD = """
import sys
import time
from statebus.storage.base import StoredOp
from statebus.storage.sqlite import SqliteStorage

key = bytes.fromhex(sys.argv[4]) if len(sys.argv) > 4 else None
store = SqliteStorage(sys.argv[1], durability=sys.argv[2], key=key)
stop = int(sys.argv[3])
seq = store.max_seq()
while stop == 0 or seq < stop:
    first = seq + 1
    size = 1 + first % 7
    batch = [
        StoredOp(
            seq=first + i,
            key=f"/ns/k{(first + i) % 40}",
            version=f"{first + i}-d",
            data=f"{first}:{size}:{i}:".encode() + b"x" * (300 * (1 + (first + i) % 5)),
            exists=(first + i) % 11 != 0,
        )
        for i in range(size)
    ]
    store.append(batch)
    seq = batch[-1].seq
    print(f"acked {seq}", flush=True)
print("done", flush=True)
time.sleep(60)
"""

ROUNDS = 4
TARGET_BATCHES = 200
ROUND_SECONDS = 1.5


def run_and_kill(
    db: Path,
    rng: random.Random,
    durability: str = "power",
    env: dict[str, str] | None = None,
    stop: int = 0,
    key: bytes | None = None,
) -> list[int]:
    """Run the child until it has acked enough batches (or up to seq ``stop``, then idle), SIGKILL it
    (mid-write unless ``stop``), return its acks. With ``key``, the store is encrypted at rest."""
    env = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), durability, str(stop), *([key.hex()] if key else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    acked: list[int] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + ROUND_SECONDS
        while len(acked) < TARGET_BATCHES and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line or line.startswith(b"done"):
                break
            acked.append(int(line.split()[1]))
        time.sleep(rng.uniform(0, 0.01))  # land somewhere inside a later append
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"child exited on its own: {err.decode(errors='replace')}"
    acked += [int(line.split()[1]) for line in rest.decode().splitlines() if line.startswith("acked")]
    assert acked, f"child acknowledged nothing: {err.decode(errors='replace')}"
    return acked


def check_consistent(db: Path, acked: list[int], key: bytes | None = None) -> int:
    """Assert every acked op survived and every stored batch is whole; return the highest seq."""
    store = SqliteStorage(db, key=key)
    try:
        ops = store.scan("", 0, 10**9)
        assert store.max_seq() == ops[-1].seq
    finally:
        store.close()
    present = {o.seq for o in ops}
    missing = [s for s in acked if s not in present]
    assert not missing, f"acknowledged ops lost after kill -9: {missing[:10]}"
    assert [o.seq for o in ops] == list(range(1, len(ops) + 1)), "a hole in the sequence"

    batches: dict[int, list[int]] = defaultdict(list)
    for o in ops:
        first, size, index = (int(part) for part in o.data.split(b":")[:3])
        assert o.seq == first + index
        batches[first].append(size)
    for first, sizes in batches.items():
        assert len(sizes) == sizes[0], f"batch {first} is partial: {len(sizes)} of {sizes[0]} ops"

    conn = cipher.connect(db, key)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        mismatched = conn.execute(
            """
            SELECT k.key FROM keys k JOIN ops o ON o.key = k.key
            WHERE o.seq = (SELECT MAX(seq) FROM ops WHERE key = k.key)
              AND (k.last_seq != o.seq OR k."exists" != o."exists")
            """
        ).fetchall()
        assert mismatched == [], "the keys table disagrees with the op log"
        assert conn.execute("SELECT COUNT(*) FROM keys").fetchone()[0] == len({o.key for o in ops})
    finally:
        conn.close()
    return ops[-1].seq


@pytest.mark.parametrize("durability", ["power", "process"])
def test_kill_9_loses_no_acknowledged_batch(tmp_path: Path, durability: str) -> None:
    db = tmp_path / STORE_FILE
    rng = random.Random()
    highest = 0
    for _ in range(ROUNDS):
        acked = run_and_kill(db, rng, durability)
        assert min(acked) > highest, "the child restarted below what was stored"
        highest = check_consistent(db, acked)
        assert highest >= max(acked)


@pytest.mark.parametrize("durability", ["power", "process"])
def test_kill_9_loses_no_acknowledged_batch_when_encrypted(tmp_path: Path, durability: str) -> None:
    db, key = tmp_path / STORE_FILE, os.urandom(32)
    rng = random.Random()
    highest = 0
    for _ in range(ROUNDS // 2):
        acked = run_and_kill(db, rng, durability, key=key)
        assert min(acked) > highest, "the child restarted below what was stored"
        highest = check_consistent(db, acked, key)
        assert highest >= max(acked)
    assert db.read_bytes()[:16] != b"SQLite format 3\x00"  # it was encrypted all along


def check_copy(db: Path, acked: list[int], folder: Path) -> int:
    """:func:`check_consistent` on a copy of the store in ``folder`` (opening the store itself
    would checkpoint its WAL from this process, behind the power-loss simulator's back)."""
    folder.mkdir()
    for suffix in ("", "-wal"):
        src = db.with_name(db.name + suffix)
        if src.exists():
            shutil.copyfile(src, folder / (db.name + suffix))
    return check_consistent(folder / db.name, acked)


@pytest.fixture(scope="module")
def powerloss_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if powerloss.compiler() is None:
        pytest.skip("no C compiler to build the power-loss simulator (tests/support/powerloss.c)")
    return powerloss.build(tmp_path_factory.mktemp("powerloss"))


def test_power_mode_survives_a_simulated_power_cut(tmp_path: Path, powerloss_lib: Path) -> None:
    """``power``: every acknowledged batch was fsynced, so a cut right after the kill keeps it."""
    db = tmp_path / STORE_FILE
    rng = random.Random()
    env = powerloss.environ(powerloss_lib, tmp_path)
    acked: list[int] = []
    for round_ in range(2):
        acked += run_and_kill(db, rng, "power", env)
        kept = powerloss.cut_power(db)
        assert kept[STORE_FILE] > 0, "the database file was never fsynced"
        highest = check_copy(db, acked, tmp_path / f"check{round_}")
        assert highest >= max(acked), f"acknowledged ops lost in a power cut (files kept: {kept})"


def test_the_simulated_power_cut_drops_what_was_not_fsynced(tmp_path: Path, powerloss_lib: Path) -> None:
    """The simulator can fail a test: ``process`` appends (no fsync, no checkpoint in 40 small
    batches) are acknowledged, survive the kill, and are gone after the cut."""
    db = tmp_path / STORE_FILE
    env = powerloss.environ(powerloss_lib, tmp_path)
    first = run_and_kill(db, random.Random(), "power", env, stop=20)
    acked = run_and_kill(db, random.Random(), "process", env, stop=max(first) + 40)
    assert check_copy(db, first + acked, tmp_path / "killed") == max(acked)  # survived the kill
    powerloss.cut_power(db)
    assert check_copy(db, first, tmp_path / "cut") == max(first), "the power cut kept unsynced appends"
