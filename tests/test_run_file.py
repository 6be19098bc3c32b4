"""``<data>/node.json``: a running ``statebus serve`` leaves its URL and pid in its data folder, and the
client commands given only ``--data`` find the node there (issue 20, item 3)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from statebus.cli import main
from statebus.identity import keystore
from statebus.server.runfile import read_run_file, running_url, write_run_file
from tests.support.served import ServedNode


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_running_node_is_found_by_its_data_folder_and_its_file_goes_with_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STATEBUS_DATA_DIR", raising=False)
    monkeypatch.setenv("STATEBUS_PORT", "1")  # the default URL leads nowhere: only the run file helps
    data = tmp_path / "node"
    node = ServedNode(data)
    try:
        path = data / "node.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        doc = json.loads(path.read_text())
        assert doc["url"] == node.url and doc["pid"] == node.proc.pid and doc["started"] > 0
        assert keystore.load_owner_token(data) not in path.read_text()  # no secret in it
        code, out, err = run(capsys, "info", "--data", str(data))
        assert code == 0, err
        assert re.search(rf"^url:\s+{re.escape(node.url)}$", out, re.M) and re.search(
            r"^owner:\s+yes$", out, re.M
        )
        assert run(capsys, "put", "notes/1", '{"a": 1}', "--data", str(data))[0] == 0
        assert run(capsys, "get", "notes/1", "--data", str(data))[1] == '{"a": 1}\n'
    finally:
        node.close()  # SIGTERM: a clean exit
    assert not (data / "node.json").exists()
    code, out, err = run(capsys, "info", "--data", str(data))
    assert code == 0 and err == "", err
    assert re.search(rf"^node:\s+{keystore.load(data).pubkey}$", out, re.M)
    assert re.search(r"^url:\s+not running", out, re.M) and re.search(
        rf"^data:\s+{re.escape(str(data))}$", out, re.M
    )
    code, out, err = run(capsys, "get", "notes/1", "--data", str(data))  # no node: one line, no traceback
    assert code == 1 and err.count("\n") == 1 and "cannot connect" in err


def test_a_stale_run_file_is_ignored_and_replaced(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STATEBUS_DATA_DIR", raising=False)
    data = tmp_path / "node"
    keystore.init(data)
    pid = dead_pid()
    write_run_file(data, "http://127.0.0.1:9", pid=pid)  # a node that was killed (SIGKILL: no cleanup)
    assert read_run_file(data) is not None and running_url(data) is None
    code, out, err = run(capsys, "info", "--data", str(data))
    assert code == 0 and re.search(r"^url:\s+not running", out, re.M), (out, err)
    node = ServedNode(data)
    try:
        doc = read_run_file(data)
        assert doc is not None and doc["pid"] == node.proc.pid != pid and doc["url"] == node.url
        assert running_url(data) == node.url
    finally:
        node.close()
    assert not (data / "node.json").exists()


def test_an_unreadable_run_file_is_no_run_file(tmp_path: Path) -> None:
    (tmp_path / "node.json").write_text("{not json")
    assert read_run_file(tmp_path) is None and running_url(tmp_path) is None
    (tmp_path / "node.json").write_text(json.dumps({"url": 5, "pid": os.getpid()}))
    assert running_url(tmp_path) is None
    write_run_file(tmp_path, "http://127.0.0.1:1234")
    assert running_url(tmp_path) == "http://127.0.0.1:1234"  # this very process: alive
