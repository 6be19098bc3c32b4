"""Simulated power loss for a SQLite store: build the LD_PRELOAD library of ``powerloss.c``, run a
process under it, then :func:`cut_power` leaves the store's files as its last fsyncs left them.

The library copies a file under ``$POWERLOSS_DIR`` to ``<file>.synced`` at each successful fsync or
fdatasync. :func:`cut_power` (after the process was killed) puts each copy back in place of its
file, empties a file that was never synced, and deletes SQLite's ``-shm`` (shared memory, never
synced; the next opener rebuilds it from the WAL). That is a disk that lost every write the
process had not fsynced: the worst a power cut may do to a file system that honours fsync.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("powerloss.c")


def compiler() -> str | None:
    """The C compiler the library is built with (``cc``, else ``gcc``), or None."""
    return shutil.which("cc") or shutil.which("gcc")


def build(folder: Path) -> Path:
    """Compile the library into ``folder``; return the path of the ``.so``."""
    cc = compiler()
    assert cc is not None, "no C compiler"
    lib = folder / "powerloss.so"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(lib), str(SOURCE), "-ldl"],
        check=True,
        capture_output=True,
    )
    return lib


def environ(lib: Path, watched: Path) -> dict[str, str]:
    """The environment of a process whose fsyncs of files under ``watched`` are recorded."""
    return {**os.environ, "LD_PRELOAD": str(lib), "POWERLOSS_DIR": str(watched.resolve())}


def cut_power(db: Path) -> dict[str, int]:
    """Leave the SQLite database ``db`` and its WAL as their last fsyncs left them; remove the
    ``-shm``. Returns the bytes kept of each file (for messages)."""
    kept: dict[str, int] = {}
    for path in (db, db.with_name(db.name + "-wal")):
        synced = path.with_name(path.name + ".synced")
        if synced.exists():  # kept: what a cut leaves is durable for the next one too
            shutil.copyfile(synced, path)
        elif path.exists():
            path.write_bytes(b"")
        kept[path.name] = path.stat().st_size if path.exists() else 0
        path.with_name(path.name + ".synced.tmp").unlink(missing_ok=True)
    db.with_name(db.name + "-shm").unlink(missing_ok=True)
    return kept
