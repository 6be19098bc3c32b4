"""Public discovery is off: no packet leaves for a non-loopback address during a swarm transfer.

The test makes a network namespace with ``lo`` and one end of a veth pair that has an address and a
default route (so LSD/UPnP multicast and DHT traffic *could* leave), runs a 4 MB transfer between two
swarm sessions inside it, and reads the veth's transmit counter. The control run, a libtorrent
session with libtorrent's own defaults in the same namespace, does send. Needs root; the namespace
and links are removed in ``finally``.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns

SUFFIX = f"{os.getpid() % 100000}"
NS = f"sbswarm{SUFFIX}"
VETH = f"sbsw{SUFFIX}"
LOCK_FILE = "/tmp/statebus-netns-swarm.lock"
SCRIPT = Path(__file__).with_name("netns_transfer.py")


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespace() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root (run the suite as root to include this test)")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed")
    lock = open(LOCK_FILE, "w")  # noqa: SIM115 - held for the whole fixture
    fcntl.flock(lock, fcntl.LOCK_EX)
    made = False
    try:
        ip("netns", "add", NS)
        made = True
        ip("link", "add", VETH, "type", "veth", "peer", "name", f"{VETH}p")
        ip("link", "set", f"{VETH}p", "netns", NS)
        ip("link", "set", VETH, "up")  # the host end: up, no address (what reaches it goes nowhere)
        subprocess.run(
            ["ip", "netns", "exec", NS, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
            check=True,
            capture_output=True,
            timeout=10,
        )
        ip("-n", NS, "link", "set", "lo", "up")
        ip("-n", NS, "addr", "add", "10.201.0.1/24", "dev", f"{VETH}p")
        ip("-n", NS, "link", "set", f"{VETH}p", "up")
        ip("-n", NS, "route", "add", "default", "via", "10.201.0.2")
        yield NS
    finally:
        subprocess.run(["ip", "link", "del", VETH], capture_output=True, timeout=10)
        if made:
            subprocess.run(["ip", "netns", "del", NS], capture_output=True, timeout=10)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def run(ns: str, mode: str) -> dict[str, int]:
    cmd = ["ip", "netns", "exec", ns, sys.executable, str(SCRIPT), mode, f"{VETH}p"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert done.returncode == 0, done.stderr[-2000:]
    out: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def test_no_packet_leaves_the_loopback_during_a_transfer(namespace: str) -> None:
    control = run(namespace, "defaults")
    assert control["tx_packets"] > 0  # libtorrent's defaults do speak on the real interface
    ours = run(namespace, "ours")
    assert ours["uploaded"] >= 4 << 20  # the blob did move, over loopback
    assert ours["tx_packets"] == 0
