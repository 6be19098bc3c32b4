"""Issue 13: the node's page shows the progress of an app bundle's download while the node joins with an
invite link (``statebus join LINK`` handed to the running node), fed by the same progress events the
command prints: bytes of total while the bundle arrives, then the state. The inviter sits behind a
throttling proxy, so a 3 MB bundle takes about three seconds. In headless Chromium."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from statebus.apps.bundle import open_bundle, pack, sign
from statebus.server import Cluster
from statebus.server.runfile import remove_run_file, write_run_file
from tests.apps.bundles import app_copy
from tests.invites.support import FAST, MAX, cli, start_joined
from tests.support.node_harness import browser_available, run_browser

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium"),
]

NOISE = 3 << 20
RATE = 1 << 20
"""Bytes a second the proxy passes from the inviter (in 64 KiB steps)."""

SCRIPT = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const rows = () => [...document.querySelectorAll('#joins-list tr')].map(
    tr => [tr.querySelector('.join-state').textContent, tr.querySelector('.join-bundle').textContent]);
  const seen = [];
  try {
    await statebus.put('/~/signal/join', true);           // the test runs `statebus join` now
    for (let i = 0; i < 1200; i++) {
      const now = rows()[0];
      if (now && (!seen.length || seen[seen.length - 1].join() !== now.join())) seen.push(now);
      if (now && (now[0] === 'joined' || now[0].startsWith('failed'))) break;
      await sleep(25);
    }
    document.getElementById('joins-table').scrollIntoView();
  } catch (e) { window.__result = {error: String(e)}; window.__done = true; return; }
  window.__result = {seen};
  window.__done = true;
})()
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def devnet(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path / "nodes", dht_name="devnet-inv", dht_secret=os.urandom(16), **FAST)
    try:
        yield c
    finally:
        await c.aclose()


async def throttled(upstream_port: int) -> asyncio.Server:
    """A loopback TCP proxy that passes the upstream's answers at :data:`RATE` bytes a second."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slow: bool) -> None:
        try:
            while chunk := await reader.read(64 << 10):
                writer.write(chunk)
                await writer.drain()
                if slow:
                    await asyncio.sleep(len(chunk) / RATE)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def test_the_page_shows_the_bundle_arriving(
    devnet: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = await devnet.add("a")
    src = app_copy(tmp_path / "gb", a.identity)
    (src / "web" / "noise.bin").write_bytes(os.urandom(NOISE))  # a bundle that takes a moment
    data = pack(src, MAX)
    bundle = open_bundle(data, sign(data, a.identity), MAX)
    await a.server.statebus_app.state.app_registry.install(bundle, bundle.manifest.permissions)
    proxy = await throttled(a.port)
    a.server.statebus_app.state.invites.addrs = (f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}",)
    argv = ["invite", "--app", "guestbook", "--json", "--data", str(a.settings.data_dir), "--url", a.url]
    assert await cli(*argv) == 0
    made = json.loads(capsys.readouterr().out)

    friend = tmp_path / "friend"
    j = await start_joined(friend)
    write_run_file(friend, j.url)
    shot = tmp_path / "data-browser-join.png"
    try:

        async def join_when_asked() -> int:
            while j.node.fetch_or_none("/~/signal/join") is None:
                await asyncio.sleep(0.05)
            return await cli("join", made["link"], "--yes", "--data", str(friend))

        joining = asyncio.ensure_future(join_when_asked())
        out = await asyncio.to_thread(
            run_browser, f"{j.url}/", SCRIPT, timeout=90, before=[j.login_url], screenshot=shot
        )
        code = await asyncio.wait_for(joining, 60)
    finally:
        remove_run_file(friend)
        proxy.close()
        await j.stop()
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "fetching the app: " in printed.err and "KiB (100%)" in printed.err  # the command's progress
    assert out["ok"] and not out["page_errors"], out
    r: dict[str, Any] = out["result"]
    assert "error" not in r, r
    seen = r["seen"]
    fetching = [b for state, b in seen if state == "fetching"]
    assert any(not b.endswith("(100%)") for b in fetching), seen  # bytes of total while it arrives
    assert seen[-1][0] == "joined" and seen[-1][1].endswith("(100%)"), seen
    assert [s for s, _ in seen if s != "fetching"][-2:] == ["joining", "joined"] or seen[-1][0] == "joined"
    target = os.environ.get("STATEBUS_SCREENSHOTS")
    if target:
        Path(target, shot.name).write_bytes(shot.read_bytes())
