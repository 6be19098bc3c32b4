"""A private Docker engine for the tests of deploy/ (session-scoped), and the image built from
deploy/Dockerfile on it.

Rules:
1. dockerd runs exactly as docs/operations.md says: vfs, ``--iptables=false --ip-masq=false
   --bridge=none``, with its own data root, exec root, pid file and socket under one temp folder, so it
   never meets another engine; every build and run uses ``--network host``.
2. At the end of the session every container is removed, dockerd (and the containerd it started) is
   stopped, its mounts are undone and its folder deleted; the network links and firewall rules must be
   exactly what they were before (checked: a failure is an error of the session).
3. The base image is Debian bookworm made by ``debootstrap --variant=minbase`` (about 25 s) and kept as
   a tarball in ``$XDG_CACHE_HOME/statebus`` (default ~/.cache), keyed on that recipe; later sessions only
   ``docker import`` it (about 2 s). Delete the tarball to refresh it.
4. Where dockerd cannot run (not installed, not root) the tests are skipped with the reason; under CI
   (``CI`` set) that is a failure instead, since CI installs docker.io and debootstrap (.ci/run).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKER = next((p for p in ("/usr/bin/docker",) if Path(p).exists()), None) or shutil.which("docker")
DOCKERD = shutil.which("dockerd") or next((p for p in ("/usr/sbin/dockerd",) if Path(p).exists()), None)
DEBOOTSTRAP = shutil.which("debootstrap") or next(
    (p for p in ("/usr/sbin/debootstrap",) if Path(p).exists()), None
)
BASE_RECIPE = ("debootstrap", "--variant=minbase", "bookworm")
BASE_TAG = "statebus-base:bookworm"
IMAGE_TAG = "statebus:local"
DAEMON_TIMEOUT = 300.0
"""Seconds one docker CLI call may take before the daemon counts as hung. Its storage driver is vfs:
creating a container copies the image's whole file system and removing one deletes it, which took
docker-compose past its default 60 s under load 13 (test_compose.py: COMPOSE_HTTP_TIMEOUT 240, within
this); ``docker run`` and ``rm`` had 120 s here."""
DOCKERD_FLAGS = ("--storage-driver=vfs", "--iptables=false", "--ip-masq=false", "--bridge=none")
"""No firewall rules, no NAT, no bridge (by default dockerd sets FORWARD to DROP and adds docker0)."""
DOCKERD_FLAGS = ("--storage-driver=vfs", "--iptables=false", "--ip-masq=false", "--bridge=none")
"""No firewall rules, no NAT, no bridge (by default dockerd sets FORWARD to DROP and adds docker0)."""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


@dataclass
class Engine:
    """A running private dockerd: ``docker(...)`` runs the docker CLI against it."""

    root: Path
    proc: subprocess.Popen[bytes]

    @property
    def host(self) -> str:
        return f"unix://{self.root / 'docker.sock'}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "STATEBUS_"))}
        return {**env, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}

    def docker(
        self,
        *args: str,
        check: bool = True,
        timeout: float = DAEMON_TIMEOUT,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        assert DOCKER is not None
        done = subprocess.run(
            [DOCKER, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env(), **(env or {})},
        )
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done

    def health(self, name: str) -> str:
        done = self.docker("inspect", "-f", "{{json .State}}", name)
        state = json.loads(done.stdout)
        return str(state.get("Health", {}).get("Status", "")) if state.get("Running") else "stopped"

    def wait_healthy(self, name: str, timeout: float = 90) -> None:
        def healthy() -> bool:
            status = self.health(name)
            assert status != "stopped", self.docker("logs", name, check=False).stderr[-3000:]
            return status == "healthy"

        wait_until(healthy, timeout, f"container {name} to be healthy")


def _unusable() -> str | None:
    if os.geteuid() != 0:
        return "dockerd needs root"
    missing = [
        n for n, p in (("docker", DOCKER), ("dockerd", DOCKERD), ("debootstrap", DEBOOTSTRAP)) if not p
    ]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install docker.io debootstrap)"
    return None


DOCKER_LINKS = ("docker", "br-", "veth")


def _dockers_link(line: str) -> bool:
    """``line`` (``ip -o link show``: ``N: name[@peer]: <FLAGS> …``) names a link dockerd would make."""
    parts = line.split(": ", 2)
    return len(parts) > 1 and parts[1].split("@")[0].startswith(DOCKER_LINKS)


def network_state() -> dict[str, str]:
    """The links and firewall rules of this network namespace, as text (what dockerd must not change)."""
    commands = {
        "links": ["ip", "-o", "link", "show"],
        "iptables": ["iptables", "-S"],
        "ip6tables": ["ip6tables", "-S"],
        "nft": ["nft", "list", "ruleset"],
    }
    state: dict[str, str] = {}
    for name, cmd in commands.items():
        if shutil.which(cmd[0]) is None:
            continue
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        out = done.stdout if done.returncode == 0 else f"exit {done.returncode}"
        if name == "links":  # names and flags, not counters or the carrier's own changes
            # only the links dockerd makes (docker0, br-…, veth…): other tests on this host (network
            # namespace tests run by other sessions or in parallel) add and remove their own veths
            lines = (line.split(" link/")[0].split(" qdisc")[0] for line in out.splitlines())
            out = "\n".join(sorted(line for line in lines if _dockers_link(line)))
        state[name] = out
    return state


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        points = [line.split()[4] for line in f]
    return sorted((p for p in points if p == str(root) or p.startswith(f"{root}/")), key=len, reverse=True)


def _processes_under(root: Path) -> list[int]:
    """Processes whose command line names ``root`` (dockerd's containerd and shims, all ours)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if str(root).encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    reason = _unusable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Docker tests, but {reason}")
        pytest.skip(reason)
    assert DOCKERD is not None
    before = network_state()
    root = Path(tempfile.mkdtemp(prefix="sbdocker-", dir="/tmp"))  # short: the socket path has a limit
    (root / "daemon.json").write_text("{}", encoding="utf-8")  # never the host's /etc/docker/daemon.json
    log = (root / "dockerd.log").open("wb")
    own = {"config-file": "daemon.json", "data-root": "data", "exec-root": "exec", "pidfile": "docker.pid"}
    args = [f"--{flag}={root / name}" for flag, name in own.items()]
    proc = subprocess.Popen(
        [DOCKERD, *DOCKERD_FLAGS, *args, f"--host=unix://{root / 'docker.sock'}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    engine = Engine(root, proc)
    try:
        deadline = time.monotonic() + 60
        while engine.docker("version", check=False, timeout=30).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (root / "dockerd.log").read_text(errors="replace")[-2000:]
                reason = f"dockerd did not start (exit {proc.poll()}): {tail}"
                if os.environ.get("CI"):
                    pytest.fail(reason)
                pytest.skip(reason)
            time.sleep(0.2)
        yield engine
    finally:
        _stop(engine)
        log.close()
        after = network_state()
        assert after == before, f"dockerd changed the network: before {before}, after {after}"


def _stop(engine: Engine) -> None:
    root, proc = engine.root, engine.proc
    if proc.poll() is None:
        with contextlib.suppress(Exception):
            ids = engine.docker("ps", "-aq", check=False, timeout=30).stdout.split()
            if ids:
                engine.docker("rm", "-f", "-v", *ids, check=False)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for pid in _processes_under(root):  # a containerd or shim dockerd left behind: ours, by pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    for point in _mounts_under(root):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
    assert not root.exists(), f"{root} could not be removed"
    assert not _processes_under(root)


def base_tarball() -> Path:
    """The debootstrap'd base as a tarball, made once and cached (rule 3)."""
    key = hashlib.sha256(" ".join(BASE_RECIPE).encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "statebus"
    tarball = cache / f"debian-base-{key}.tar"
    if tarball.exists():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    assert DEBOOTSTRAP is not None
    work = Path(tempfile.mkdtemp(prefix="sbbase-", dir=cache))
    try:
        target = work / "root"
        done = subprocess.run(
            [DEBOOTSTRAP, *BASE_RECIPE[1:], str(target)], capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"debootstrap failed: {done.stdout[-1500:]} {done.stderr[-1500:]}"
        partial = work / "base.tar"
        subprocess.run(["tar", "-C", str(target), "-c", "-f", str(partial), "."], check=True, timeout=300)
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


@pytest.fixture(scope="session")
def statebus_image(docker_engine: Engine) -> str:
    """deploy/Dockerfile built by deploy/build-image.sh on the debootstrap base; its tag."""
    docker_engine.docker("import", str(base_tarball()), BASE_TAG)
    done = subprocess.run(
        [str(DEPLOY / "build-image.sh"), IMAGE_TAG, BASE_TAG],
        capture_output=True,
        text=True,
        timeout=900,
        env={**docker_engine.env(), "DOCKER": str(DOCKER), "PYTHON": sys.executable},
    )
    assert done.returncode == 0, f"build-image.sh failed: {done.stdout[-3000:]} {done.stderr[-3000:]}"
    return IMAGE_TAG
