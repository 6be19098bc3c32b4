"""Defect 6 of issue 9: websocket messages are rate-limited per connection, whatever the replies.

A real ``statebus serve`` subprocess; flooders in another subprocess send ``{"forget": "x"}`` nonstop
(no reply ever comes) while the test times the owner's GETs. Every flooder must be cut with 1008
(policy) and a reason, and the owner's GET must stay fast meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from statebus.http.websocket import WS_PATH
from statebus.testing.live_server import live_server
from tests.support.served import ServedNode

FLOODERS = 4
WINDOW = 8.0  # seconds the flooders send for at most

FLOOD = """
import asyncio, json, sys, time
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

URL, N, WINDOW = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
FRAME = json.dumps({"forget": "x"})

async def flood():
    start = time.monotonic()
    sent = 0
    async with connect(URL, max_queue=None) as ws:
        try:
            while time.monotonic() - start < WINDOW:
                await ws.send(FRAME)
                sent += 1
                if sent % 50 == 0:
                    await asyncio.sleep(0)  # let the close frame in
            return {"sent": sent, "code": None, "reason": None, "after": WINDOW}
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            return {"sent": sent, "code": rcvd.code if rcvd else None,
                    "reason": rcvd.reason if rcvd else None, "after": time.monotonic() - start}

async def main():
    print(json.dumps(await asyncio.gather(*(flood() for _ in range(N)))), flush=True)

asyncio.run(main())
"""


def test_a_message_flood_is_cut_and_the_owner_stays_fast(tmp_path: Path) -> None:
    node = ServedNode(tmp_path / "node")
    try:
        token = next(line for line in node.banner if "/login?token=" in line).split("token=")[1].strip()
        owner = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=node.url, headers=owner, timeout=30) as http:
            http.put("/~/probe", json={"n": 1}).raise_for_status()
            quiet = []
            for _ in range(20):
                t = time.perf_counter()
                http.get("/~/probe").raise_for_status()
                quiet.append(time.perf_counter() - t)
            ws_url = node.url.replace("http://", "ws://") + WS_PATH
            flood = subprocess.Popen(
                [sys.executable, "-c", FLOOD, ws_url, str(FLOODERS), str(WINDOW)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                busy = []
                started = time.monotonic()
                while flood.poll() is None and time.monotonic() - started < WINDOW + 20:
                    t = time.perf_counter()
                    http.get("/~/probe").raise_for_status()
                    busy.append(time.perf_counter() - t)
                    time.sleep(0.02)
                out, err = flood.communicate(timeout=30)
            finally:
                if flood.poll() is None:
                    flood.kill()
                    flood.wait(5)
    finally:
        node.close()
    results = json.loads(out) if out.strip() else err
    assert isinstance(results, list), results
    for r in results:
        assert r["code"] == 1008, results  # cut for policy, not left running until the window ended
        assert "per second" in r["reason"] or "too many requests" in r["reason"], results
        assert r["after"] < WINDOW / 2, results
    # the flooders never got the node's attention: the owner's GETs kept their quiet-time pace
    assert statistics.median(busy) < max(0.1, 5 * statistics.median(quiet)), (quiet, busy)


def test_messages_count_against_the_address_rate_so_reconnecting_does_not_reset_it(tmp_path: Path) -> None:
    """Each socket's own budget is generous here; the address's request rate still cuts a client
    that spreads its flood over fresh sockets."""
    with live_server(tmp_path / "n", ws_message_rate=10_000, rate_limit_per_ip="60/minute") as srv:
        url = srv.url.replace("http://", "ws://") + WS_PATH

        async def one_socket() -> tuple[int, int | None, str]:
            sent = 0
            try:
                async with connect(url) as ws:
                    for _ in range(40):
                        await ws.send('{"forget": "x"}')
                        sent += 1
                    await ws.send('{"get": "current_user"}')
                    await asyncio.wait_for(ws.recv(), 5)
                return sent, None, ""
            except (ConnectionClosed, InvalidStatus) as exc:
                rcvd = getattr(exc, "rcvd", None)
                return sent, rcvd.code if rcvd else None, rcvd.reason if rcvd else "refused"

        async def main() -> list[tuple[int, int | None, str]]:
            return [await one_socket() for _ in range(3)]

        results = asyncio.run(main())
    assert results[0][1] is None, results  # 40 messages and a handshake fit in the address's 60
    assert results[1][1] == 1008 and "too many requests" in results[1][2], results
    assert results[2][2], results  # refused at the handshake, or cut at once
