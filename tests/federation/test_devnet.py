"""``statebus devnet 3``: three OS processes in one DHT. docs/devnet.md's own commands, run by bash as
written (write at A, follow from B and C, kill A, read at C, bring A back), their outputs compared with
the doc's; then SIGINT stops every node."""

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

import httpx

from statebus.identity import keystore
from tests.support import doc_shell


def wait_until(cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


DOC = Path(__file__).resolve().parents[2] / "docs" / "devnet.md"
DOC_BASE, DOC_A_JSON = "/tmp/dn", "/tmp/a.json"  # the two paths the test replaces by its own


def doc_devnet_command(base: Path) -> list[str]:
    """The devnet command the doc shows (``$ statebus devnet 3 --base /tmp/dn``), on ``base``."""
    (shown,) = [b for b in doc_shell.blocks(DOC, "") if b.startswith("$ statebus devnet")]
    argv = shown.splitlines()[0].removeprefix("$ ").replace(DOC_BASE, str(base)).split()
    assert argv[:3] == ["statebus", "devnet", "3"], argv
    return [sys.executable, "-m", "statebus", *argv[1:]]


def run_the_walkthrough(base: Path, env: dict[str, str]) -> None:
    """docs/devnet.md's ``sh`` blocks in one bash, as written but for the two paths; each command's
    output compared with the lines the doc shows under it (tests/support/doc_shell.py)."""
    a_json = base / "a.json"
    script = (
        "\n".join(doc_shell.blocks(DOC, "sh")).replace(DOC_BASE, str(base)).replace(DOC_A_JSON, str(a_json))
    )
    cmds = doc_shell.commands(script)
    assert sum(1 for c in cmds if c.expected) >= 8, cmds
    path = doc_shell.statebus_on_path(base / "bin")
    log = base / "walkthrough-stderr.txt"
    try:
        status, stdout = doc_shell.run_bash(
            doc_shell.instrument(cmds),
            env={**env, "PATH": f"{path}:{env.get('PATH', '')}"},
            cwd=base,
            log=log,
            timeout=90,
        )
        problems = doc_shell.compare(cmds, doc_shell.outputs(stdout), strip_reason=True)
        assert status == 0 and not problems, "\n".join(
            [f"status {status}", *problems, log.read_text()[-3000:]]
        )
    finally:  # the A the doc brought back runs in the background: stop it
        if a_json.exists() and a_json.read_text().strip():
            pid = json.loads(a_json.read_text())["pid"]
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
                wait_until(lambda: not alive(pid), 20, "the A the doc brought back to stop")


def test_devnet_of_three_processes(tmp_path: Path) -> None:
    cmd = doc_devnet_command(tmp_path)
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
        (shown,) = [b for b in doc_shell.blocks(DOC, "") if b.startswith("$ statebus devnet")]
        doc_lines = [line.replace(DOC_BASE, str(tmp_path)) for line in shown.splitlines()[1:]]
        assert len(lines) == len(doc_lines) and all(map(doc_shell.matches, doc_lines, lines)), (
            doc_lines,
            lines,
        )
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
        for info in infos:
            assert httpx.get(info["url"] + "/.well-known/statebus/node").json()["pubkey"] == info["pubkey"]
            assert json.loads((Path(info["data"]) / "node.json").read_text())["url"] == info["url"]
        run_the_walkthrough(tmp_path, env)
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
