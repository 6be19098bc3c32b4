"""Three OS processes, four DHT nodes each, talking over loopback.

Run as a script, this file is the child: it starts its nodes, then obeys JSON commands on stdin
(``publish``, ``resolve``, ``quit``) and answers with one JSON line each on stdout. The invite
secret travels in the environment, never on the command line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from statebus.federation.dht import KademliaDirectory

NODES_PER_PROCESS = 4
SECRET_ENV = "STATEBUS_TEST_DHT_SECRET"


async def _child(bootstrap: str) -> None:
    secret = bytes.fromhex(os.environ[SECRET_ENV])
    nodes: list[KademliaDirectory] = []
    boot = [] if bootstrap == "-" else [(bootstrap.split(":")[0], int(bootstrap.split(":")[1]))]
    for _ in range(NODES_PER_PROCESS):
        node = KademliaDirectory(os.urandom(32), "multi", secret, ksize=4, wait_timeout=0.5)
        await node.start(boot)
        boot = boot or [("127.0.0.1", node.port)]
        nodes.append(node)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def say(obj: Any) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    say({"ports": [n.port for n in nodes], "pubkeys": [n.pubkey for n in nodes]})
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["cmd"] == "publish":
                records = [await n.publish([f"http://127.0.0.1:{n.port}"]) for n in nodes]
                say({"seqs": [r.seq for r in records]})
            elif cmd["cmd"] == "resolve":
                found: dict[str, list[str] | None] = {}
                for n in nodes:
                    for pk in cmd["pubkeys"]:
                        record = await n.resolve(pk)
                        found[f"{n.pubkey}>{pk}"] = list(record.addrs) if record else None
                say({"found": found})
            else:
                break
    finally:
        for n in nodes:
            await n.stop()


@pytest.mark.anyio
async def test_three_processes_resolve_each_other(tmp_path: Path) -> None:
    env = {**os.environ, SECRET_ENV: os.urandom(16).hex()}
    procs: list[asyncio.subprocess.Process] = []

    async def spawn(bootstrap: str) -> dict[str, Any]:
        with (tmp_path / f"child{len(procs)}.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, bootstrap, env=env,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log,
            )  # fmt: skip
        procs.append(proc)
        return await ask(proc, None)

    async def ask(proc: asyncio.subprocess.Process, cmd: dict[str, Any] | None) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        if cmd is not None:
            proc.stdin.write((json.dumps(cmd) + "\n").encode())
            await proc.stdin.drain()
        with anyio.fail_after(20):
            line = await proc.stdout.readline()
        assert line, f"child exited: {(tmp_path / 'child0.log').read_text()[-2000:]}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    try:
        first = await spawn("-")
        hellos = [first] + [await spawn(f"127.0.0.1:{first['ports'][0]}") for _ in range(2)]
        pubkeys = [pk for hello in hellos for pk in hello["pubkeys"]]
        ports = {
            pk: port for hello in hellos for pk, port in zip(hello["pubkeys"], hello["ports"], strict=True)
        }
        assert len(set(pubkeys)) == 3 * NODES_PER_PROCESS
        for proc in procs:
            assert len((await ask(proc, {"cmd": "publish"}))["seqs"]) == NODES_PER_PROCESS
        for proc in procs:
            found = (await ask(proc, {"cmd": "resolve", "pubkeys": pubkeys}))["found"]
            assert len(found) == NODES_PER_PROCESS * len(pubkeys)
            for pair, addrs in found.items():
                target = pair.split(">")[1]
                assert addrs == [f"http://127.0.0.1:{ports[target]}"], pair
    finally:
        for proc in procs:
            if proc.returncode is None and proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            try:
                with anyio.fail_after(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert [proc.returncode for proc in procs] == [0, 0, 0]


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1]))
