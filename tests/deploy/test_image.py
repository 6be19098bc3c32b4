"""deploy/Dockerfile, built and run on a private dockerd (tests/deploy/conftest.py): it serves on a
free loopback port, its healthcheck passes, the owner token from ``docker exec … statebus token``
writes and reads, the data outlives a stop and start, and it runs as a non-root user on a read-only
root file system."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from tests.deploy.conftest import Engine, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first test also builds the image
NAME = "statebus-image-test"
VOLUME = "statebus-image-test-data"


def test_the_image_serves_keeps_its_data_and_runs_locked_down(
    docker_engine: Engine, statebus_image: str
) -> None:
    d = docker_engine
    port, dht_port = free_port(), free_port(socket.SOCK_DGRAM)
    d.docker("volume", "create", VOLUME)
    try:
        d.docker(
            "run", "-d", "--name", NAME, "--network", "host",
            "--read-only", "--tmpfs", "/tmp",
            "-v", f"{VOLUME}:/data",
            "-e", f"STATEBUS_PORT={port}", "-e", f"STATEBUS_DHT_PORT={dht_port}",
            "--health-interval", "1s",  # the image's own check, run often (the image says 15s)
            statebus_image,
        )  # fmt: skip
        d.wait_healthy(NAME)
        config = json.loads(d.docker("inspect", "-f", "{{json .Config}}", NAME).stdout)
        assert "/.well-known/statebus" in " ".join(config["Healthcheck"]["Test"])
        assert config["User"] == "statebus"

        token = d.docker("exec", NAME, "statebus", "token").stdout.strip()
        assert len(token) >= 32
        url = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {token}"}
        put = httpx.put(f"{url}/~/ops/hello", json={"from": "the container"}, headers=auth, timeout=10)
        assert put.status_code == 200, put.text
        assert httpx.get(f"{url}/~/ops/hello", headers=auth, timeout=10).json() == {"from": "the container"}
        assert httpx.get(f"{url}/~/ops/hello", timeout=10).status_code in (401, 403)  # not without it

        # a non-root user on a read-only root file system: only /data (and the /tmp tmpfs) take writes
        assert d.docker("exec", NAME, "id", "-u").stdout.strip() == "10001"
        host = json.loads(d.docker("inspect", "-f", "{{json .HostConfig}}", NAME).stdout)
        assert host["ReadonlyRootfs"] is True
        denied = d.docker("exec", NAME, "touch", "/opt/statebus/x", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr
        assert d.docker("exec", NAME, "touch", "/data/x").returncode == 0

        d.docker("stop", "-t", "30", NAME)
        assert d.health(NAME) == "stopped"
        exit_code = d.docker("inspect", "-f", "{{.State.ExitCode}}", NAME).stdout.strip()
        assert exit_code == "0", d.docker("logs", NAME).stderr[-2000:]  # SIGTERM: a clean stop
        d.docker("start", NAME)
        d.wait_healthy(NAME)
        assert d.docker("exec", NAME, "statebus", "token").stdout.strip() == token
        got = httpx.get(f"{url}/~/ops/hello", headers=auth, timeout=10)
        assert got.status_code == 200 and got.json() == {"from": "the container"}
    finally:
        d.docker("rm", "-f", NAME, check=False)
        d.docker("volume", "rm", VOLUME, check=False)
