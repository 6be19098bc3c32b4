"""Two nodes in their own network namespaces (10.200.0.1 and .2 on a bridge the test creates): follow
across real interfaces, cut the link, write, heal it, converge. Needs root; every namespace, link and
process is removed in ``finally``."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from statebus.cli.federation import stop_all
from statebus.identity import keystore

pytestmark = pytest.mark.netns

SUFFIX = f"{os.getpid() % 100000}"
BRIDGE = f"sbbr{SUFFIX}"
SUBNET = "10.200.0"
LOCK_FILE = "/tmp/statebus-netns-test.lock"


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "creating network namespaces needs root (run the suite as root to include this test)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def wait_until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def netns() -> Iterator[list[tuple[str, str, str]]]:
    """Two namespaces on a bridge: [(namespace, host-side veth, address), …]."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    made: list[tuple[str, str, str]] = []
    bridge = False
    # the subnet is fixed (10.200.0.x): two suites running at once take turns
    lock = open(LOCK_FILE, "w")  # noqa: SIM115 - held for the whole fixture
    fcntl.flock(lock, fcntl.LOCK_EX)
    _remove_leftovers()  # we hold the lock, so any sb* namespace or link now is from a killed run
    try:
        ip("link", "add", BRIDGE, "type", "bridge")
        bridge = True
        ip("addr", "add", f"{SUBNET}.254/24", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        for i in (1, 2):
            ns, veth = f"sbfed{i}-{SUFFIX}", f"sbv{i}{SUFFIX}"
            ip("netns", "add", ns)
            made.append((ns, veth, f"{SUBNET}.{i}"))
            ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
            ip("link", "set", f"{veth}p", "netns", ns)
            ip("link", "set", veth, "master", BRIDGE, "up")
            ip("-n", ns, "addr", "add", f"{SUBNET}.{i}/24", "dev", f"{veth}p")
            ip("-n", ns, "link", "set", f"{veth}p", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield made
    finally:
        for ns, veth, _ in made:
            subprocess.run(["ip", "link", "del", veth], capture_output=True, timeout=10)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
        if bridge:
            subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, timeout=10)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _remove_leftovers() -> None:
    """Delete the namespaces and links of an earlier run that was killed before its cleanup (their
    10.200.0.x addresses would shadow ours)."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    for line in names.splitlines():
        if line.startswith("sbfed"):
            subprocess.run(["ip", "netns", "del", line.split()[0]], capture_output=True, timeout=10)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if line.count(":") >= 2 else ""
        if name.startswith(("sbbr", "sbv")):
            subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10)


def start(
    ns: str, addr: str, data: Path, env: dict[str, str], bootstrap: str | None
) -> subprocess.Popen[str]:
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "statebus", "serve", "--json"]
    cmd += ["--data", str(data), "--host", addr, "--port", "0", "--dht-port", "0", "--log-level", "warning"]
    if bootstrap:
        cmd += ["--bootstrap", bootstrap]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)


def info_of(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "node did not start"
    info: dict[str, Any] = json.loads(line)
    return info


def test_follow_across_network_namespaces_and_heal_a_cut(
    netns: list[tuple[str, str, str]], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEBUS_")}
    env.update(
        STATEBUS_DHT_SECRET=os.urandom(12).hex(), STATEBUS_DHT_NAME="netns", STATEBUS_SSE_PING_INTERVAL="0.5"
    )
    (ns_a, veth_a, addr_a), (ns_b, _, addr_b) = netns
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(start(ns_a, addr_a, tmp_path / "a", env, None))
        a_info = info_of(procs[0])
        procs.append(start(ns_b, addr_b, tmp_path / "b", env, a_info["dht"]))
        b_info = info_of(procs[1])
        assert a_info["url"].startswith(f"http://{addr_a}:") and b_info["url"].startswith(f"http://{addr_b}:")
        tok_a = keystore.load_owner_token(tmp_path / "a")
        tok_b = keystore.load_owner_token(tmp_path / "b")
        a = httpx.Client(base_url=a_info["url"], headers={"Authorization": f"Bearer {tok_a}"}, timeout=5)
        b = httpx.Client(base_url=b_info["url"], headers={"Authorization": f"Bearer {tok_b}"}, timeout=5)
        chirp = f"/{a_info['pubkey']}/chirp/"
        a.put("/~/.shares/chirp", json={"pattern": chirp}).raise_for_status()
        a.put("/~/chirp/0", json={"n": 0}).raise_for_status()
        b.put("/~/.follows/f", json={"pattern": chirp, "added": time.time()}).raise_for_status()
        wait_until(lambda: b.get(chirp + "0").status_code == 200, what="B to follow A over the bridge")
        ip("link", "set", veth_a, "down")  # cut A off
        with pytest.raises(httpx.TransportError):
            httpx.get(a_info["url"] + "/.well-known/statebus/node", timeout=0.5)
        # A keeps taking writes from inside its namespace while cut off
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                ns_a,
                sys.executable,
                "-c",
                "import httpx,sys; [httpx.put(sys.argv[1]+f'/~/chirp/{i}', json={'n': i},"
                " headers={'Authorization': 'Bearer '+sys.argv[2]}).raise_for_status() for i in range(1, 6)]",
                a_info["url"],
                tok_a,
            ],
            check=True,
            timeout=30,
            env=env,
        )
        time.sleep(0.5)
        assert b.get(chirp + "5").status_code == 404
        ip("link", "set", veth_a, "up")  # heal
        wait_until(lambda: b.get(chirp + "5").status_code == 200, what="B to converge after the cut")
        assert [b.get(f"{chirp}{i}").json() for i in range(6)] == [{"n": i} for i in range(6)]
        a.close()
        b.close()
    finally:
        stop_all(procs)
