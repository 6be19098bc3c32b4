"""deploy/compose.yaml: three federated nodes in containers on one host (host networking, distinct
ports), brought up with docker-compose on the private dockerd; a follow works across containers."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.deploy.conftest import DAEMON_TIMEOUT, DEPLOY, Engine, free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
COMPOSE = shutil.which("docker-compose")
PROJECT = "statebus-compose-test"


@pytest.fixture
def cluster(docker_engine: Engine, statebus_image: str) -> Iterator[tuple[dict[str, str], list[str]]]:
    if COMPOSE is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the compose test: apt-get install docker-compose")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    # docker-compose gives up on a slow daemon after 60 s by default; a loaded machine needs longer
    env = {
        **docker_engine.env(),
        "STATEBUS_DHT_SECRET": secrets.token_urlsafe(24),
        "COMPOSE_HTTP_TIMEOUT": "240",
    }
    ports: list[int] = []
    for node in ("A", "B", "C"):
        http, dht = free_port(), free_port(socket.SOCK_DGRAM)
        env[f"NODE_{node}_PORT"], env[f"NODE_{node}_DHT_PORT"] = str(http), str(dht)
        ports.append(http)
    base = [str(COMPOSE), "-f", str(DEPLOY / "compose.yaml"), "-p", PROJECT]
    try:
        up = subprocess.run(
            [*base, "up", "-d"], capture_output=True, text=True, env=env, timeout=DAEMON_TIMEOUT
        )
        assert up.returncode == 0, up.stderr[-3000:]
        yield env, [f"http://127.0.0.1:{p}" for p in ports]
    finally:
        subprocess.run(
            [*base, "down", "-v", "-t", "30"], capture_output=True, env=env, timeout=DAEMON_TIMEOUT
        )


def test_a_follow_works_across_the_containers(
    docker_engine: Engine, cluster: tuple[dict[str, str], list[str]]
) -> None:
    _env, urls = cluster
    names = [f"{PROJECT}_node-{n}_1" for n in "abc"]
    for name in names:
        docker_engine.wait_healthy(name)
        assert docker_engine.docker("exec", name, "id", "-u").stdout.strip() == "10001"
    tokens = [docker_engine.docker("exec", n, "statebus", "token").stdout.strip() for n in names]
    a, b, c = (
        httpx.Client(base_url=u, headers={"Authorization": f"Bearer {t}"}, timeout=10)
        for u, t in zip(urls, tokens, strict=True)
    )
    try:
        keys = [httpx.get(f"{u}/.well-known/statebus/node", timeout=10).json()["pubkey"] for u in urls]
        assert len(set(keys)) == 3
        chirp = f"/{keys[0]}/chirp/"
        a.put("/~/.shares/chirp", json={"pattern": chirp}).raise_for_status()
        a.put("/~/chirp/1", json={"text": "hello"}).raise_for_status()
        for n in (b, c):  # no address given: B and C find A through the DHT
            n.put("/~/.follows/f1", json={"pattern": chirp, "added": time.time()}).raise_for_status()

        def has(n: httpx.Client, key: str) -> bool:
            return n.get(key).status_code == 200

        wait_until(lambda: has(b, chirp + "1") and has(c, chirp + "1"), 60, "the followers (via the DHT)")
        a.put("/~/chirp/2", json={"text": "live"}).raise_for_status()
        wait_until(lambda: has(b, chirp + "2") and has(c, chirp + "2"), 30, "a live write")
        assert c.get(chirp + "2").json() == {"text": "live"}
        state = b.get("/~/.federation/follows/f1").json()
        assert state["pattern"] == chirp and state["applied"] >= 2
    finally:
        for client in (a, b, c):
            client.close()
