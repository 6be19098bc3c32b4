"""``statebus follow / peers / unfollow`` against a running federated node."""

from __future__ import annotations

import asyncio
import json

import pytest

from statebus.cli import main
from statebus.server import Cluster, RunningNode

from .support import live, wait_until

pytestmark = pytest.mark.anyio


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # a failure: one line on stderr, status 1
        return int(exc.code or 0)


async def cli(node: RunningNode, *args: str) -> int:
    argv = [*args, "--data", str(node.settings.data_dir), "--url", node.url]
    return await asyncio.to_thread(run, argv)


async def test_follow_peers_unfollow(cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    await a.share("/~/chirp/")
    await a.node.save("/~/chirp/1", "hi")
    chirp = f"/{a.pubkey}/chirp/"
    assert await cli(b, "follow", chirp) == 0
    assert capsys.readouterr().out == f"following {chirp}\n"
    await wait_until(lambda: live(b))
    assert b.node.bus.fetch(chirp + "1").value == "hi"
    await asyncio.sleep(0.05)
    assert await cli(b, "peers", "--json") == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["pattern"] == chirp and row["state"]["server"] == a.pubkey
    assert await cli(b, "peers") == 0
    assert capsys.readouterr().out.startswith(f"{chirp}  ")
    assert await cli(b, "unfollow", chirp) == 0
    await wait_until(lambda: not b.federation.followers)
    assert await cli(b, "follow", "/not-a-key/") == 1
    assert "statebus: error:" in capsys.readouterr().err
    assert await cli(b, "follow", chirp, "--via", "ftp://x") == 1


async def test_peers_waits_for_a_status_and_get_waits_for_a_value(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 20, item 1: `peers --wait live` returns once the follow is live; on a timeout it is one
    line naming the follow that is not; `get --wait` returns a followed value as soon as it lands."""
    a, b = await cluster.add("a"), await cluster.add("b")
    await a.share("/~/chirp/")
    await a.node.save("/~/chirp/1", "hi")
    chirp = f"/{a.pubkey}/chirp/"
    assert await cli(b, "peers", "--wait", "live", "--timeout", "0.3") == 1  # follows nothing yet
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "timed out after 0.3 s" in err and "follows nothing" in err
    assert await cli(b, "follow", chirp) == 0
    assert await cli(b, "peers", "--wait", "live", "--timeout", "30") == 0
    assert live(b) and b.node.bus.fetch(chirp + "1").value == "hi"
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"{chirp}  live  via {a.url}")
    assert await cli(b, "peers", "--wait", "stopped", "--timeout", "0.3") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{chirp} is live" in err
    assert await cli(b, "get", chirp + "2") == 1 and "404" in capsys.readouterr().err
    get = asyncio.ensure_future(cli(b, "get", chirp + "2", "--wait", "30"))
    await asyncio.sleep(0.3)
    assert not get.done()  # waiting for a value that is not there yet
    await a.node.save("/~/chirp/2", "later")
    assert await get == 0 and capsys.readouterr().out == '"later"\n'
    assert await cli(b, "peers", "--wait", "live", "--timeout", "-1") == 1  # a bad timeout: one line
    assert "--timeout" in capsys.readouterr().err
