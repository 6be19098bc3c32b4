"""Disk full, on a real small tmpfs under a real ``statebus serve``: a write that failed is never
visible (GET, subscribers), and writes succeed again once space returns, without a restart.

Mounting a tmpfs needs root; the test is skipped, saying so, otherwise.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from statebus.identity import keystore
from tests.support.served import ServedNode

DISK_SIZE = "24m"
RECOVERY_DEADLINE = 60.0  # seconds: backoff tops out at 30 s; a busy machine adds more


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root: the disk-full test mounts a small tmpfs (mount -t tmpfs)")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> None:
    """Write ``path`` until the file system has no byte left."""
    chunk = b"\0" * (64 * 1024)
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        try:
            while True:
                f.write(b"\0")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


class Watcher:
    """An SSE subscriber of ``/~/`` that records every line it receives and, as ``EventSource``
    does, reconnects with ``Last-Event-ID`` when its stream is cut."""

    def __init__(self, url: str, token: str) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.closed = False
        self.client = httpx.Client(timeout=httpx.Timeout(10, read=None))
        self.thread = threading.Thread(target=self._run, args=(url, token), daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the subscription did not start"

    def _run(self, url: str, token: str) -> None:
        last_id = ""
        while not self.closed:
            headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            try:
                with self.client.stream("GET", f"{url}/~/", headers=headers) as response:
                    if response.status_code == 200:
                        self.ready.set()
                    for line in response.iter_lines():
                        self.lines.append(line)
                        if line.startswith("id:"):
                            last_id = line[3:].strip()
            except (httpx.HTTPError, RuntimeError):
                pass
            time.sleep(0.2)

    def text(self) -> str:
        return "\n".join(self.lines)

    def close(self) -> None:
        self.closed = True
        self.client.close()
        self.thread.join(10)


def test_a_failed_write_is_never_visible_and_the_node_recovers_when_space_returns(small_disk: Path) -> None:
    data = small_disk / "node"
    node = ServedNode(data)
    watcher: Watcher | None = None
    clients: list[httpx.Client] = []
    try:
        token = keystore.load_owner_token(data)
        owner = httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        clients.append(owner)
        assert owner.put("/~/doc", json={"v": "before"}).status_code == 200
        watcher = Watcher(node.url, token)

        filler = small_disk / "filler"
        fill(filler)
        pad = "x" * 100_000  # more than the WAL can hold in pages it already has
        statuses = []
        for i in range(20):
            r = owner.put("/~/doc", json={"v": f"lost-{i}", "pad": pad})
            statuses.append((r.status_code, r.json().get("error")))
            r = owner.put(f"/~/new/{i}", json={"v": f"lost-new-{i}", "pad": pad})
            statuses.append((r.status_code, r.json().get("error")))
        assert set(statuses) == {(503, "storage_failed")}, statuses

        # Nothing of a failed write is served: the old value, no new key.
        assert owner.get("/~/doc").json() == {"v": "before"}
        assert owner.get("/~/new/3").status_code == 404
        assert owner.get("/~/", headers={"Accept": "application/json"}).json()["children"] == ["doc"]
        metrics = owner.get("/metrics").text
        assert "statebus_storage_healthy 0.0" in metrics
        assert owner.get("/.well-known/statebus").json()["storage"] == "failing"

        filler.unlink()
        # The node probes storage after each backoff: it is healthy again without any write.
        deadline = time.monotonic() + RECOVERY_DEADLINE
        while "statebus_storage_healthy 1.0" not in owner.get("/metrics").text:
            assert time.monotonic() < deadline, "storage did not recover after space returned"
            time.sleep(0.5)
        r = owner.put("/~/doc", json={"v": "after"})
        assert r.status_code == 200, r.text  # recovered without a restart
        assert owner.get("/~/doc").json() == {"v": "after"}
        assert owner.get("/.well-known/statebus").json()["storage"] == "ok"

        deadline = time.monotonic() + 30
        while '"after"' not in watcher.text() and time.monotonic() < deadline:
            time.sleep(0.1)
        seen = watcher.text()
        assert '"before"' in seen and '"after"' in seen, seen[-2000:]
        assert "lost-" not in seen  # subscribers never heard of a failed write
    finally:
        if watcher is not None:
            watcher.close()
        for client in clients:
            client.close()
        node.close()

    # What was acknowledged is durable; what failed is gone for good, after a restart too.
    node = ServedNode(data)
    try:
        with httpx.Client(
            base_url=node.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as owner:
            assert owner.get("/~/doc").json() == {"v": "after"}
            assert owner.get("/~/new/3").status_code == 404
    finally:
        node.close()
