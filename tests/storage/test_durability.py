"""kill -9 in the middle of writing loses no acknowledged batch and leaves no partial one.

A child process appends batches to a SqliteStorage as fast as it can and prints ``acked <seq>``
after each ``append`` returns. The parent kills it with SIGKILL at an arbitrary moment, reopens
the database and checks every acknowledged op is there and every stored batch is whole. (Power
loss is the same guarantee one layer down: ``synchronous=FULL`` fsyncs the WAL before the commit
returns; a process kill cannot test that part.)
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from statebus.storage.sqlite import STORE_FILE, SqliteStorage

CHILD = """
import sys
from statebus.storage.base import StoredOp
from statebus.storage.sqlite import SqliteStorage

store = SqliteStorage(sys.argv[1])
seq = store.max_seq()
while True:
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
"""

ROUNDS = 4
TARGET_BATCHES = 200
ROUND_SECONDS = 1.5


def run_and_kill(db: Path, rng: random.Random) -> list[int]:
    """Run the child until it has acked enough batches, SIGKILL it mid-write, return its acks."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db)],
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
            if not line:
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
    acked += [int(line.split()[1]) for line in rest.decode().splitlines()]
    assert acked, f"child acknowledged nothing: {err.decode(errors='replace')}"
    return acked


def check_consistent(db: Path, acked: list[int]) -> int:
    """Assert every acked op survived and every stored batch is whole; return the highest seq."""
    store = SqliteStorage(db)
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

    conn = sqlite3.connect(db)
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


def test_kill_9_loses_no_acknowledged_batch(tmp_path: Path) -> None:
    db = tmp_path / STORE_FILE
    rng = random.Random()
    highest = 0
    for _ in range(ROUNDS):
        acked = run_and_kill(db, rng)
        assert min(acked) > highest, "the child restarted below what was stored"
        highest = check_consistent(db, acked)
        assert highest >= max(acked)
