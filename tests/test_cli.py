"""The ``statebus`` command: init/recover/token in a temp data folder, and the client commands against a
real ``statebus serve --port 0`` process (its printed URL is read from stdout)."""

from __future__ import annotations

import contextlib
import io
import os
import pty
import queue
import re
import select
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from statebus.cli import main
from statebus.identity import keystore
from tests.support.served import ServedNode

PUBKEY_RE = re.compile(r"[a-z2-7]{52}")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit status, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def phrase_of(stdout: str) -> str:
    words = [line.strip() for line in stdout.splitlines() if len(line.split()) == 24]
    assert len(words) == 1, stdout
    return words[0]


# ---------------------------------------------------------------------- init / recover / token


def test_init_creates_private_files_and_prints_the_phrase_once(tmp_path, capsys):
    code, out, err = run(capsys, "init", "--data", str(tmp_path))
    assert code == 0, err
    phrase = phrase_of(out)
    assert out.count(phrase) == 1
    assert "shown ONCE" in out
    pubkey = keystore.load(tmp_path).pubkey
    assert pubkey in out
    for f in (tmp_path / "identity").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert phrase.encode() not in f.read_bytes()  # the phrase is not stored


def test_init_twice_is_one_clear_error(tmp_path, capsys):
    assert run(capsys, "init", "--data", str(tmp_path))[0] == 0
    code, out, err = run(capsys, "init", "--data", str(tmp_path))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("statebus: error:") and "already exists" in err


def test_recover_gives_the_same_pubkey(tmp_path, capsys, monkeypatch):
    _, out, _ = run(capsys, "init", "--data", str(tmp_path / "a"))
    phrase = phrase_of(out)
    monkeypatch.setattr(sys, "stdin", io.StringIO(phrase + "\n"))
    code, out, err = run(capsys, "init", "--recover", "--data", str(tmp_path / "b"))
    assert code == 0, err
    assert keystore.load(tmp_path / "b").pubkey == keystore.load(tmp_path / "a").pubkey
    assert phrase not in out


def test_recover_rejects_a_bad_phrase(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("not a phrase at all\n"))
    code, _, err = run(capsys, "init", "--recover", "--data", str(tmp_path))
    assert code == 1 and err.count("\n") == 1 and "not a phrase" not in err
    assert not keystore.exists(tmp_path)


def test_token_prints_the_owner_token(tmp_path, capsys, monkeypatch):
    run(capsys, "init", "--data", str(tmp_path))
    code, out, _ = run(capsys, "token", "--data", str(tmp_path))
    assert code == 0 and out.strip() == keystore.load_owner_token(tmp_path)
    # the data folder can come from the environment too (flags > env > file > defaults)
    monkeypatch.setenv("STATEBUS_DATA_DIR", str(tmp_path))
    assert run(capsys, "token")[1] == out


def test_init_over_a_different_identity_names_the_flag(tmp_path, capsys, monkeypatch):
    _, out, _ = run(capsys, "init", "--data", str(tmp_path / "a"))
    run(capsys, "init", "--data", str(tmp_path / "b"))
    monkeypatch.setattr(sys, "stdin", io.StringIO(phrase_of(out)))
    code, _, err = run(capsys, "init", "--recover", "--data", str(tmp_path / "b"))
    assert code == 1 and "--force" in err and "force=True" not in err
    monkeypatch.setattr(sys, "stdin", io.StringIO(phrase_of(out)))
    assert run(capsys, "init", "--recover", "--force", "--data", str(tmp_path / "b"))[0] == 0
    assert keystore.load(tmp_path / "b").pubkey == keystore.load(tmp_path / "a").pubkey


@pytest.mark.parametrize("command", ["", "init", "serve", "token", "info", "get", "put", "delete", "watch"])
def test_every_command_has_help(command, capsys):
    code, out, _ = run(capsys, *([command] if command else []), "--help")
    assert code == 0 and "usage: statebus" in out


def test_token_without_identity_is_one_line(tmp_path, capsys):
    code, out, err = run(capsys, "token", "--data", str(tmp_path / "none"))
    assert code == 1 and out == "" and err.count("\n") == 1 and "statebus init" in err


def test_bad_setting_is_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "serve", "--port", "nope", "--data", str(tmp_path))
    assert code == 1 and err.count("\n") == 1 and "--port" in err


# ---------------------------------------------------------------------- against a live node


Served = ServedNode


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    served = Served(tmp_path_factory.mktemp("node"))
    try:
        yield served
    finally:
        served.close()


def test_serve_prints_pubkey_url_and_login_link(node):
    text = "".join(node.banner)
    pubkey = keystore.load(node.data).pubkey
    assert pubkey in text
    assert f"{node.url}/login?token={keystore.load_owner_token(node.data)}" in text
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", node.url) and not node.url.endswith(":0")


def test_serve_runs_a_federated_node(node):
    """`statebus serve` is the whole node: the peer endpoints answer and it joined a DHT."""
    import httpx

    info = httpx.get(f"{node.url}/.well-known/statebus/node", timeout=10).json()
    assert info["pubkey"] == keystore.load(node.data).pubkey
    deadline = time.monotonic() + 60  # the DHT line can come late on a busy machine
    text = "".join(node.banner)
    while "DHT" not in text and time.monotonic() < deadline:
        try:
            line = node.lines.get(timeout=0.2)
        except queue.Empty:
            continue
        node.banner.append(line)
        text += line
    assert re.search(r"DHT\s+'default' on udp 127\.0\.0\.1:\d+", text), text


def test_first_serve_into_a_log_file_keeps_the_phrase_for_statebus_phrase(
    node, capsys, monkeypatch, tmp_path
):
    """Its stderr is a file: the phrase is not written there, but kept (0600) until `statebus phrase`
    shows it once in a terminal. Before, it went into the log while saying "not stored"."""
    log = node.stderr_path.read_text()
    assert not [line for line in log.splitlines() if len(line.split()) == 24], log
    assert f"statebus phrase --data {node.data}" in log and "in a terminal" in log
    kept = keystore.phrase_file(node.data)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    code, out, err = run(capsys, "phrase", "--data", str(node.data))  # into a pipe: refused, still kept
    assert code == 1 and out == "" and "not a terminal" in err and kept.exists()
    code, out = in_a_terminal("phrase", "--data", str(node.data))
    assert code == 0, out
    phrase = phrase_of(out)
    assert not kept.exists() and "deleted" in out
    code, out, err = run(capsys, "phrase", "--force", "--data", str(node.data))
    assert code == 1 and "shown already" in err  # once
    monkeypatch.setattr(sys, "stdin", io.StringIO(phrase))
    assert run(capsys, "init", "--recover", "--data", str(tmp_path))[0] == 0
    assert keystore.load(tmp_path).pubkey == keystore.load(node.data).pubkey


def in_a_terminal(*argv: str, stderr_too: bool = False, timeout: float = 60) -> tuple[int, str]:
    """Run ``statebus ARGV`` with stdout on a pseudo-terminal; return (status, what it printed)."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "statebus", *argv],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave if stderr_too else subprocess.DEVNULL,
        env=env,
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = proc.wait(timeout)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, b"".join(chunks).decode().replace("\r\n", "\n")


def test_first_serve_on_a_terminal_shows_the_phrase_and_keeps_nothing_and_the_banner_is_never_buffered(
    tmp_path,
):
    """stderr on a terminal: the phrase is shown there once and no copy stays. stdout is a pipe, and
    PYTHONUNBUFFERED is not set: the banner still arrives while the node runs (line-buffered)."""
    data = tmp_path / "node"
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "STATEBUS_DATA_DIR")}
    command = [sys.executable, "-m", "statebus", "serve", "--port", "0", "--dht-port", "0"]
    proc = subprocess.Popen(
        [*command, "--log-level", "warning", "--data", str(data)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
        text=True,
    )
    os.close(slave)
    terminal: list[bytes] = []
    reader = threading.Thread(target=_drain_terminal, args=(master, terminal), daemon=True)
    reader.start()
    try:
        assert proc.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_pump_lines, args=(proc.stdout, lines), daemon=True).start()
        banner = ""
        deadline = time.monotonic() + 60
        while "DHT" not in banner:
            assert time.monotonic() < deadline and proc.poll() is None, banner
            with contextlib.suppress(queue.Empty):
                banner += lines.get(timeout=0.2)
        assert "/login?token=" in banner  # read while the node runs: nothing waits in a buffer
        while b"restores the identity" not in b"".join(terminal):  # the phrase comes after the banner
            assert time.monotonic() < deadline and proc.poll() is None, terminal
            time.sleep(0.05)
        assert keystore.exists(data) and not keystore.phrase_pending(data)
    finally:
        proc.terminate()
        proc.wait(30)
        reader.join(10)
        os.close(master)
        if proc.stdout is not None:
            proc.stdout.close()
    shown = b"".join(terminal).decode().replace("\r\n", "\n")
    phrase = phrase_of(shown)
    assert shown.count(phrase) == 1 and "shown ONCE" in shown
    assert "statebus phrase" not in shown


def _serve_on_a_terminal(data: Any, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    """``statebus serve`` with stdin, stdout and stderr on one pseudo-terminal, as a person runs it."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "STATEBUS_DATA_DIR")}
    command = [sys.executable, "-m", "statebus", "serve", "--port", "0", "--dht-port", "0", *extra]
    proc = subprocess.Popen(
        [*command, "--log-level", "info", "--data", str(data)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    return proc, master


def _read_until(master: int, text: str, seen: bytearray, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        assert time.monotonic() < deadline, seen.decode(errors="replace")
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            seen += os.read(master, 4096)
    return seen.decode().replace("\r\n", "\n")


def test_first_serve_on_a_terminal_shows_the_phrase_last_framed_and_waits_for_enter(tmp_path):
    """Issue 20, item 6: below uvicorn's lines and the banner (where it does not scroll away), in a
    frame, then Enter. The node listens but serves nothing while it waits; Enter goes on serving, and
    the phrase is gone."""
    import httpx

    data = tmp_path / "node"
    proc, master = _serve_on_a_terminal(data)
    seen = bytearray()
    try:
        shown = _read_until(master, "Press Enter", seen)
        phrase = phrase_of(shown)
        assert shown.count(phrase) == 1 and "shown ONCE" in shown
        login, framed_at = shown.index("/login?token="), shown.index("=" * 78)
        assert shown.index("Uvicorn running") < login < framed_at < shown.index(phrase)  # last
        frame = shown[framed_at:].split("=" * 78)
        assert len(frame) == 3 and phrase in frame[1] and "Press Enter" in frame[2]  # inside the frame
        assert shown.rstrip().endswith("written down (the node serves from then on).")
        assert not keystore.phrase_pending(data)  # shown: no copy left
        time.sleep(0.3)
        assert proc.poll() is None and not select.select([master], [], [], 0)[0]  # waiting, quietly
        url = re.search(r"serving at\s+(http://\S+)/", shown)
        assert url is not None
        with pytest.raises(httpx.ReadTimeout):  # before Enter: it listens, but serves nothing
            httpx.get(url.group(1) + "/.well-known/statebus/node", timeout=1.5)
        os.write(master, b"\n")
        _read_until(master, "\n", seen := bytearray(), timeout=10)
        assert proc.poll() is None  # Enter: it goes on serving
        assert httpx.get(url.group(1) + "/.well-known/statebus/node", timeout=10).status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(30) == 0 or proc.returncode == -15
        os.close(master)


def test_first_serve_with_yes_shows_the_phrase_last_without_waiting(tmp_path):
    data = tmp_path / "node"
    proc, master = _serve_on_a_terminal(data, "--yes")
    seen = bytearray()
    try:
        shown = _read_until(master, "`statebus init --recover` restores", seen)
        assert shown.index("/login?token=") < shown.index(phrase_of(shown))
        time.sleep(0.5)
        if select.select([master], [], [], 0)[0]:
            seen += os.read(master, 4096)
        assert "Press Enter" not in seen.decode()
    finally:
        proc.terminate()
        proc.wait(30)
        os.close(master)


def _pump_lines(stream: Any, into: queue.Queue[str]) -> None:
    with contextlib.suppress(ValueError, OSError):  # closed when the test ends
        for line in stream:
            into.put(line)


def _drain_terminal(master: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            return
        if not chunk:
            return
        into.append(chunk)


def test_put_get_delete(node, capsys):
    args = ("--url", node.url, "--data", str(node.data))
    code, out, err = run(capsys, "put", "notes/1", '{"title": "hi", "n": [1, 2]}', *args)
    assert code == 0, err
    assert re.fullmatch(r"\S+\n", out)
    assert run(capsys, "get", "/~/notes/1", *args)[1] == '{"title": "hi", "n": [1, 2]}\n'
    assert run(capsys, "put", "notes/1", "5", "--range", ".n[0]", *args)[0] == 0
    assert run(capsys, "get", "notes/1", "--range", ".n", *args)[1] == "[5, 2]\n"
    assert run(capsys, "get", "notes/", *args)[1] == "1\n"
    assert "notes/" in run(capsys, "get", "/~/", *args)[1].splitlines()
    assert run(capsys, "delete", "notes/1", *args)[0] == 0
    code, out, err = run(capsys, "get", "notes/1", *args)
    assert code == 1 and out == "" and err.count("\n") == 1 and "404" in err


def test_put_from_stdin_with_version_and_bytes(node, capsys, monkeypatch):
    args = ("--url", node.url, "--data", str(node.data))
    monkeypatch.setattr(sys, "stdin", io.StringIO('["from", "stdin"]'))
    code, out, err = run(capsys, "put", "s/1", "-", "--version", "v-one", *args)
    assert code == 0, err
    assert out.strip() == "v-one"
    assert (
        run(capsys, "put", "s/1", '["b"]', "--parents", "v-one", "--version", "v-two", *args)[1] == "v-two\n"
    )
    assert run(capsys, "put", "s/text", "plain words", "--content-type", "text/plain", *args)[0] == 0
    assert run(capsys, "get", "s/text", *args)[1] == "plain words"


def test_errors_are_one_line(node, capsys):
    args = ("--url", node.url, "--data", str(node.data))
    for argv in (
        ("put", "a", "{bad json", *args),
        ("get", "/not-a-namespace/x", *args),
        ("get", "x", "--url", f"http://127.0.0.1:{free_port()}"),
        ("get", "x", "--url", "ftp://nope"),
        ("get", "/", *args),
    ):
        code, out, err = run(capsys, *argv)
        assert code == 1 and out == "", argv
        assert err.count("\n") == 1 and err.startswith("statebus: error: ") and "Traceback" not in err, err
    assert "cannot connect" in run(capsys, "get", "x", "--url", f"http://127.0.0.1:{free_port()}")[2]


def test_anonymous_client_gets_the_servers_reason(node, capsys, tmp_path):
    code, _, err = run(capsys, "get", "x", "--url", node.url, "--data", str(tmp_path))
    assert code == 1 and "401" in err and "sign in" in err


def test_info(node, capsys):
    code, out, err = run(capsys, "info", "--url", node.url, "--data", str(node.data))
    assert code == 0, err
    assert keystore.load(node.data).pubkey in out
    assert node.url in out and str(node.data) in out
    assert re.search(r"^keys:\s+\d+$", out, re.M) and re.search(r"^owner:\s+yes$", out, re.M)
    assert re.search(r"^storage:\s+ok$", out, re.M)


def test_watch_prints_changes_live_and_resumes(node, capsys):
    args = ("--url", node.url, "--data", str(node.data))
    run(capsys, "put", "w/a", "1", *args)
    proc = subprocess.Popen(
        [sys.executable, "-m", "statebus", "watch", "w/", "--count", "3", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first == "snapshot /~/w/a 1\n", first
        run(capsys, "put", "w/b", '{"x": true}', *args)
        run(capsys, "delete", "w/a", *args)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = out.splitlines()
    assert proc.returncode == 0, err
    assert lines == ['update /~/w/b {"x": true}', "delete /~/w/a"]
    # --since resumes after a cursor: only later changes come
    code, out, err = run(capsys, "watch", "w/", "--json", "--count", "1", "--since", "0", *args)
    assert code == 0, err
    assert '"event": "update"' in out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_watch_reconnects_and_resumes_after_the_node_restarts(tmp_path, capsys):
    data = tmp_path / "node"
    first = Served(data)
    args = ("--url", first.url, "--data", str(data))
    proc = None
    try:
        run(capsys, "put", "r/a", "1", *args)
        proc = subprocess.Popen(
            [sys.executable, "-m", "statebus", "watch", "r/", "--count", "2", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "snapshot /~/r/a 1\n"
        first.close()
        second = Served(data, port=int(first.url.rsplit(":", 1)[1]))
        try:
            run(capsys, "put", "r/b", "2", *args)
            out, err = proc.communicate(timeout=30)
        finally:
            second.close()
    finally:
        first.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == "update /~/r/b 2\n"  # resumed: no snapshot of r/a again
    assert "reconnecting" in err


def test_get_download_saves_the_bytes_and_shows_progress(node, capsys, tmp_path):
    args = ("--url", node.url, "--data", str(node.data))
    data = os.urandom(3 << 20)
    token = keystore.load_owner_token(node.data)
    r = httpx.put(
        f"{node.url}/~/files/big",
        content=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "image/png"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    target = tmp_path / "big.png"
    code, out, err = run(capsys, "get", "files/big", "--download", str(target), *args)
    assert code == 0, err
    assert target.read_bytes() == data and out == ""
    assert err.splitlines()[-1] == f"downloaded {len(data)} of {len(data)} bytes (100%) -> {target}"
    code, out, err = run(capsys, "get", "files/nothing", "--download", str(tmp_path / "none"), *args)
    assert code == 1 and "404" in err and err.count("\n") == 1
    assert not (tmp_path / "none").exists() and not (tmp_path / "none.part").exists()
