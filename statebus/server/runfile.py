"""The run file: a running node says where it listens, in its data folder (``<data>/node.json``).

    write_run_file(data, url)     once the node listens: ``{"url", "pid", "started"}``, mode 0600
    remove_run_file(data)         on a clean exit (only the file this process wrote)
    running_url(data)             the URL of the node serving ``data``, or None (none, or a stale file)

``statebus serve`` writes it; the client commands (``statebus get --data DIR``, ``info``, ``peers``…)
read it when no ``--url`` is given, so a node on ``--port 0`` or in a devnet is found by its folder.

Rules:
    1. Written atomically (a temporary file renamed over it) and private (0600) from its creation:
       a reader never sees half a file, and it names no secret anyway (no token, no login link).
    2. A file whose pid is not a live process is stale (the node was killed): readers ignore it, and
       the next node to start on the folder replaces it.
    3. Stdlib only besides the keystore's private-file writer: the client commands load this module
       without the server stack.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from statebus.identity.keystore import write_private_file

RUN_FILE = "node.json"


def run_file(data_dir: str | os.PathLike[str]) -> Path:
    """Where the node serving ``data_dir`` leaves its URL and pid."""
    return Path(data_dir) / RUN_FILE


def write_run_file(data_dir: str | os.PathLike[str], url: str, *, pid: int | None = None) -> Path:
    """Record that this process (``pid``) serves ``data_dir`` at ``url`` (replacing a stale file)."""
    doc = {"url": url, "pid": os.getpid() if pid is None else pid, "started": round(time.time(), 3)}
    return write_private_file(run_file(data_dir), (json.dumps(doc) + "\n").encode("utf-8"))


def remove_run_file(data_dir: str | os.PathLike[str], *, pid: int | None = None) -> None:
    """Remove the run file if this process (``pid``) wrote it; another node's is left alone."""
    doc = read_run_file(data_dir)
    if doc is not None and doc.get("pid") == (os.getpid() if pid is None else pid):
        run_file(data_dir).unlink(missing_ok=True)


def read_run_file(data_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run file's ``{"url", "pid", "started"}``, or None when there is none or it is unreadable."""
    try:
        doc = json.loads(run_file(data_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("url"), str)
        or not isinstance(doc.get("pid"), int)
    ):
        return None
    return doc


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts: it is not ours to replace)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_url(data_dir: str | os.PathLike[str]) -> str | None:
    """The URL of the live node serving ``data_dir``, or None (no run file, or a stale one)."""
    doc = read_run_file(data_dir)
    if doc is None or not pid_alive(doc["pid"]):
        return None
    url: str = doc["url"]
    return url
