"""Secrets never reach the logs: a node at debug level, asked with the token every way a client
can send it (login link, Authorization header, cookie, websocket handshake, websocket {"token"}
message), logs none of them.
The banner's login link is the one deliberate exception: it is shown to the owner on start."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import websockets
from websockets.frames import Frame, Opcode

from statebus.http.auth import cookie_name, cookie_value
from statebus.server import mask_frame, redact


def test_redact_masks_every_form_of_the_token() -> None:
    token = "s3cr3t-T0ken_value"
    for text in (
        f"GET /login?token={token} HTTP/1.1",
        f"GET /x?a=1&token={token}",
        f"authorization: Bearer {token}",
        f"('authorization', 'Bearer {token}')",
        f"[(b'authorization', b'Bearer {token}')]",
        f"cookie: statebus_token={token}; other=1",
        f"cookie: statebus_4pi3cl2urgwaarqr={token}; other=1",
        f"cookie: a=1; __Host-statebus_4pi3cl2urgwaarqr={token}",
        f'< TEXT \'{{"token": "{token}"}}\' [56 bytes]',
    ):
        assert token not in redact(text), text


def test_websocket_frames_that_may_hold_a_token_are_not_shown() -> None:
    token = "s3cr3t-T0ken_value"
    whole = json.dumps({"get": "notes/1"}).encode()
    shown = [
        mask_frame(Frame(Opcode.TEXT, data))
        for data in (
            json.dumps({"token": token}).encode(),
            b'{"\\u0074oken": "' + token.encode() + b'"}',  # an escaped key is still a token message
            b'{"tok',  # the first fragment of a message
        )
    ]
    shown.append(mask_frame(Frame(Opcode.CONT, f'en": "{token}"}}'.encode())))
    shown.append(mask_frame(Frame(Opcode.TEXT, b'{"token": "' + token.encode(), fin=False)))
    for item in shown:
        assert isinstance(item, str) and token not in item and "not shown" in item, item
    frame = Frame(Opcode.TEXT, whole)
    assert mask_frame(frame) is frame  # an ordinary message stays visible for debugging


def test_a_debug_level_node_logs_no_token(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = tmp_path / "node.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("STATEBUS_DATA_DIR", None)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "statebus",
                "serve",
                "--port",
                "0",
                "--dht-port",
                "0",
                "--log-level",
                "debug",
                "--data",
                str(data),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            deadline = time.monotonic() + 30
            while "/login?token=" not in log.read_text():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            text = log.read_text()
            url = re.search(r"serving at\s+(http://\S+)/", text).group(1)  # type: ignore[union-attr]
            token = re.search(r"/login\?token=(\S+)", text).group(1)  # type: ignore[union-attr]
            bearer = {"Authorization": f"Bearer {token}"}
            httpx.get(f"{url}/login?token={token}", follow_redirects=False)
            httpx.put(f"{url}/~/k", json=1, headers=bearer).raise_for_status()
            info = httpx.get(f"{url}/.well-known/statebus").json()
            login_cookie = {cookie_name(info["node"], secure=False): cookie_value(token, info["node"])}
            httpx.get(f"{url}/~/k", cookies=login_cookie).raise_for_status()

            async def handshake() -> None:
                ws_url = url.replace("http://", "ws://") + "/_connect_to_statebus_/websocket"
                async with websockets.connect(ws_url, additional_headers=bearer) as ws:
                    await ws.send('{"get": "k"}')
                    await asyncio.wait_for(ws.recv(), 10)
                async with websockets.connect(ws_url) as ws:  # log in by message, then as a bad guess
                    await ws.send(json.dumps({"token": token}))
                    await ws.send('{"get": "current_user"}')
                    await asyncio.wait_for(ws.recv(), 10)
                    await ws.send(json.dumps({"token": token[:-4] + "abcd"}))
                    with contextlib.suppress(websockets.ConnectionClosed):
                        await asyncio.wait_for(ws.recv(), 10)

            asyncio.run(handshake())
        finally:
            proc.terminate()
            proc.wait(20)
    text = log.read_text()
    assert "GET /~/k" in text or "PUT /~/k" in text, "the access log should be on at debug level"
    assert "Logging error" not in text
    assert "/login?token=***" in text, "the access log line of the login link is kept, masked"
    # not even the start of the token (the wrong guess shares it) outside the banner
    assert text.count(token[:16]) == 1, [line for line in text.splitlines() if token[:16] in line]
