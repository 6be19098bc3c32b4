"""Issue 13 across network namespaces: the inviter serves on 10.200.0.1 in one namespace; a friend in
another (10.200.0.2), starting from an empty data folder, runs `statebus serve --join LINK` with the
inviter's address carried in the link, gets the guestbook and the inviter's entries, and a new entry
live. Needs root (skipped with the reason otherwise); every namespace, link and process is removed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from statebus.cli.federation import stop_all
from statebus.identity import keystore
from tests.apps.bundles import app_copy
from tests.federation.test_netns import netns, start, wait_until  # noqa: F401 - the fixture
from tests.invites.support import run

pytestmark = pytest.mark.netns


def json_line(proc: subprocess.Popen[str], seen: list[str]) -> dict[str, Any]:
    """The ``serve --json`` line, after any lines the join printed (kept in ``seen``)."""
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        assert line, f"the node did not start; it printed {seen}"
        if line.startswith("{"):
            info: dict[str, Any] = json.loads(line)
            return info
        seen.append(line)


def test_serve_join_across_network_namespaces(netns: list[tuple[str, str, str]], tmp_path: Path) -> None:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEBUS_")}
    inviter_env = {**env, "STATEBUS_DHT_SECRET": os.urandom(12).hex(), "STATEBUS_DHT_NAME": "netns-invite"}
    (ns_a, _, addr_a), (ns_b, _, addr_b) = netns
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(start(ns_a, addr_a, tmp_path / "a", inviter_env, None))
        a_info = json_line(procs[0], [])
        a_data = str(tmp_path / "a")
        folder = app_copy(tmp_path / "gb", keystore.load(tmp_path / "a"))
        assert run(["app", "pack", str(folder), "--out", str(tmp_path / "gb.sbx"), "--data", a_data]) == 0
        assert (
            run(
                [
                    "app",
                    "install",
                    str(tmp_path / "gb.sbx"),
                    "--yes",
                    "--data",
                    a_data,
                    "--url",
                    a_info["url"],
                ]
            )
            == 0
        )
        tok_a = keystore.load_owner_token(tmp_path / "a")
        a = httpx.Client(base_url=a_info["url"], headers={"Authorization": f"Bearer {tok_a}"}, timeout=5)
        a.put("/~/guestbook/entries/1", json={"name": "ann", "text": "from ns a"}).raise_for_status()
        made = a.post("/.well-known/statebus/invites", json={"app": "guestbook"}).json()
        assert made["link"].startswith(f"http://{addr_a}:")  # the inviter's address travels in the link

        cmd = ["ip", "netns", "exec", ns_b, sys.executable, "-m", "statebus", "serve", "--json", "--yes"]
        cmd += ["--join", made["link"], "--data", str(tmp_path / "b"), "--host", addr_b]
        cmd += ["--port", "0", "--dht-port", "0", "--log-level", "warning"]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        )
        said: list[str] = []
        b_info = json_line(procs[1], said)
        assert any("installed guestbook 1.0.0" in s for s in said), said
        assert b_info["url"].startswith(f"http://{addr_b}:") and b_info["dht"].startswith(addr_b)
        tok_b = keystore.load_owner_token(tmp_path / "b")
        b = httpx.Client(base_url=b_info["url"], headers={"Authorization": f"Bearer {tok_b}"}, timeout=5)
        entries = f"/{a_info['pubkey']}/guestbook/entries/"
        wait_until(lambda: b.get(entries + "1").status_code == 200, what="the inviter's entry in ns b")
        time.sleep(0.3)
        a.put("/~/guestbook/entries/2", json={"name": "ann", "text": "live"}).raise_for_status()
        wait_until(lambda: b.get(entries + "2").status_code == 200, what="a new entry, live, in ns b")
        assert b.get(entries + "2").json() == {"name": "ann", "text": "live"}
        record = a.get(f"/~/.invites/{made['id']}").json()
        assert record["used"] == 1 and record["joined"][0]["pubkey"] == b_info["pubkey"]
        a.close()
        b.close()
    finally:
        stop_all(procs)
