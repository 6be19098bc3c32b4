"""``statebus devnet 3``: three OS processes in one DHT. Write at A, follow from B and C, kill A, read at
C, then SIGINT stops every node (the docs/devnet.md walkthrough, over HTTP)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from statebus.identity import keystore


def wait_until(cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def owner(info: dict[str, Any]) -> httpx.Client:
    token = keystore.load_owner_token(info["data"])
    return httpx.Client(base_url=info["url"], headers={"Authorization": f"Bearer {token}"}, timeout=5)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def walkthrough(infos: list[dict[str, Any]]) -> None:
    a, b, c = (owner(i) for i in infos)
    try:
        for info in infos:
            assert httpx.get(info["url"] + "/.well-known/statebus/node").json()["pubkey"] == info["pubkey"]
        chirp = f"/{infos[0]['pubkey']}/chirp/"
        a.put("/~/.shares/chirp", json={"pattern": chirp}).raise_for_status()
        a.put("/~/chirp/1", json={"text": "hello"}).raise_for_status()
        for n in (b, c):
            n.put("/~/.follows/f1", json={"pattern": chirp, "added": time.time()}).raise_for_status()

        def has(n: httpx.Client, key: str) -> bool:
            return n.get(key).status_code == 200

        wait_until(lambda: has(b, chirp + "1") and has(c, chirp + "1"), what="the followers (found via DHT)")
        a.put("/~/chirp/2", json={"text": "live"}).raise_for_status()
        wait_until(lambda: has(b, chirp + "2") and has(c, chirp + "2"), what="a live write")
        os.kill(infos[0]["pid"], signal.SIGTERM)  # take A down
        wait_until(lambda: not alive(infos[0]["pid"]), what="A to stop")
        r = c.get(chirp + "2")
        assert r.status_code == 200 and r.json() == {"text": "live"}
        state = c.get("/~/.federation/follows/f1").json()
        assert state["pattern"] == chirp and state["applied"] >= 2
    finally:
        for client in (a, b, c):
            client.close()


def test_devnet_of_three_processes(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "statebus", "devnet", "3", "--base", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEBUS_")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    pids: list[int] = []
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not (lines and lines[-1].startswith("details:")):
            line = proc.stdout.readline()
            assert line, "devnet ended early"
            lines.append(line.rstrip("\n"))
        out = "\n".join(lines)
        assert out.startswith('devnet "devnet-') and out.count("login: http://127.0.0.1:") == 3
        infos = json.loads((tmp_path / "devnet.json").read_text())["nodes"]
        for private in ("devnet.json", "dht_secret"):  # they hold login links and the invite secret
            assert stat.S_IMODE((tmp_path / private).stat().st_mode) == 0o600, private
        for info in infos:  # each node's folder, identity files and store: the user's alone
            data = Path(info["data"])
            assert stat.S_IMODE(data.stat().st_mode) == 0o700
            files = [f for f in data.rglob("*") if f.is_file()]
            assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), files
        pids = [n["pid"] for n in infos]
        assert len(set(pids)) == 3 and proc.pid not in pids
        walkthrough(infos)
        proc.send_signal(signal.SIGINT)
        rest = proc.stdout.read()
        assert proc.wait(timeout=20) == 0
        assert "node a stopped" in rest and "devnet stopped" in rest
        assert not any(alive(pid) for pid in pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()


def test_devnet_details_and_secrets_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """devnet.json holds every node's login link: 0600 from creation, also over an older 0644 one."""
    from statebus.cli.federation import write_details

    old = os.umask(0o022)
    try:
        (tmp_path / "devnet.json").write_text("{}")  # a world-readable file from an earlier run
        path = write_details(tmp_path, "dev", [{"login": "http://127.0.0.1:1/login?token=secret"}])
        (tmp_path / "new").mkdir()
        fresh = write_details(tmp_path / "new", "dev", [])
        secret = keystore.write_private_file(tmp_path / "dht_secret", b"s\n")
    finally:
        os.umask(old)
    for p in (path, fresh, secret):
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert "token=secret" in path.read_text()


def test_devnet_output_reaches_a_pipe_as_it_happens(tmp_path: Path) -> None:
    """ "node a stopped" arrives while the devnet runs, not when it exits (stdout is a pipe; before,
    Python block-buffered it)."""
    cmd = [sys.executable, "-m", "statebus", "devnet", "2", "--base", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEBUS_") and k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    pids: list[int] = []
    try:
        assert proc.stdout is not None
        line = ""
        while not line.startswith("details:"):
            line = proc.stdout.readline()
            assert line, "devnet ended early"
        pids = [n["pid"] for n in json.loads((tmp_path / "devnet.json").read_text())["nodes"]]
        os.kill(pids[0], signal.SIGKILL)
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(15)
        assert got and got[0].startswith("node a stopped"), got
        assert proc.poll() is None  # the devnet itself still runs
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
