"""The statebus websocket protocol against a live node (uvicorn on port 0), with the `websockets` client."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from statebus.http.websocket import WS_PATH
from statebus.testing.live_server import LiveServer, live_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("ws"), subscriber_buffer=64) as s:
        yield s


def ws_url(srv: LiveServer, token: str | None = None) -> str:
    url = srv.url.replace("http://", "ws://") + WS_PATH
    return url + f"?token={token}" if token else url


async def send(ws: ClientConnection, msg: dict[str, Any]) -> None:
    await ws.send(json.dumps(msg))


async def recv(ws: ClientConnection) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return out


def test_get_set_forget_delete_between_two_clients(srv):
    async def main() -> None:
        async with connect(ws_url(srv, srv.token)) as a, connect(ws_url(srv, srv.token)) as b:
            await send(b, {"get": "chat/1"})
            assert await recv(b) == {"set": {"key": "chat/1"}}  # missing key
            await send(a, {"set": {"key": "chat/1", "val": {"msgs": ["hi"]}}, "version": "A1"})
            got = await recv(b)
            assert got["set"] == {"key": "chat/1", "val": {"msgs": ["hi"]}} and got["version"] == "A1"
            # the key maps onto the node's namespace: /~/chat/1
            r = httpx.get(f"{srv.url}/~/chat/1", headers=srv.auth)
            assert r.json() == {"msgs": ["hi"]}
            # an HTTP write reaches the websocket subscriber; patches arrive as whole values
            httpx.patch(
                f"{srv.url}/~/chat/1",
                headers={**srv.auth, "Content-Range": "json .msgs[1:1]"},
                content=b'["there"]',
            )
            got = await recv(b)
            assert got["set"]["val"] == {"msgs": ["hi", "there"]} and got["parents"] == ["A1"]
            await send(a, {"set": "chat/1", "patches": [[".n", 3]], "parents": [got["version"]]})
            assert (await recv(b))["set"]["val"] == {"msgs": ["hi", "there"], "n": 3}
            await send(a, {"delete": "chat/1"})
            assert await recv(b) == {"set": {"key": "chat/1"}}
            await send(b, {"forget": "chat/1"})
            await send(b, {"get": "current_user"})  # answered locally: proves forget was processed first
            assert (await recv(b))["set"]["val"]["owner"] is True
            await send(a, {"set": {"key": "chat/1", "val": 2}})
            await send(b, {"get": "current_user"})
            assert (await recv(b))["set"]["key"] == "current_user"  # nothing for chat/1 came in between

    asyncio.run(main())


def test_writer_gets_no_echo_and_absolute_keys_work(srv):
    async def main() -> None:
        async with connect(ws_url(srv, srv.token)) as a:
            await send(a, {"get": f"/{srv.local}/abs"})
            assert await recv(a) == {"set": {"key": f"/{srv.local}/abs"}}
            await send(a, {"set": {"key": f"/{srv.local}/abs", "val": 1}})
            await send(a, {"get": "current_user"})
            assert (await recv(a))["set"]["key"] == "current_user"

    asyncio.run(main())


def test_auth_rules_match_http(srv):
    httpx.put(f"{srv.url}/~/public/hello", json="world", headers=srv.auth)

    async def main() -> None:
        async with connect(ws_url(srv)) as anon:
            await send(anon, {"get": "public/hello"})
            assert (await recv(anon))["set"]["val"] == "world"
            await send(anon, {"get": "private"})
            err = await recv(anon)
            assert err["error"] == "unauthorized" and err["key"] == "private"
            await send(anon, {"set": {"key": "public/hello", "val": 1}})
            assert (await recv(anon))["error"] == "unauthorized"
            await send(anon, {"token": srv.token})  # log in on the connection
            await send(anon, {"get": "private"})
            assert await recv(anon) == {"set": {"key": "private"}}
        async with connect(ws_url(srv)) as anon:
            await send(anon, {"token": "wrong"})
            assert (await recv(anon))["error"] == "unauthorized"
            with pytest.raises(ConnectionClosed):
                await recv(anon)
        with pytest.raises(InvalidStatus):
            async with connect(ws_url(srv, "wrong")):
                pass
        ((name, value),) = srv.cookie.items()
        async with connect(ws_url(srv), additional_headers={"Cookie": f"{name}={value}"}) as c:
            await send(c, {"get": "private"})
            assert await recv(c) == {"set": {"key": "private"}}
        # the old shared cookie name, even holding the token itself, is nobody's login any more
        async with connect(ws_url(srv), additional_headers={"Cookie": f"statebus_token={srv.token}"}) as c:
            await send(c, {"get": "private"})
            assert (await recv(c))["error"] == "unauthorized"

    asyncio.run(main())


def test_bad_messages_get_typed_errors_and_change_nothing(srv):
    async def main() -> None:
        async with connect(ws_url(srv, srv.token)) as a:
            for raw, code in (
                ("not json", "invalid_value"),
                ("[1]", "invalid_value"),
                ('{"what": 1}', "invalid_op"),
                ('{"get": ""}', "invalid_key"),
                ('{"get": "dir/"}', "invalid_key"),
                ('{"set": {"key": "k"}}', "invalid_op"),
                ('{"set": "k", "patches": [[".a", 1, 2]]}', "invalid_op"),
                ('{"set": {"key": "k", "val": 1}, "version": 5}', "invalid_value"),
            ):
                await a.send(raw)
                assert (await recv(a))["error"] == code, raw
        assert httpx.get(f"{srv.url}/~/k", headers=srv.auth).status_code == 404

    asyncio.run(main())


def test_a_socket_that_does_not_read_is_closed(srv):
    """The client stops reading; once the node's outgoing queue (subscriber_buffer = 64 frames) is full
    behind a full TCP buffer, the node closes the socket with 1013 instead of buffering without bound."""

    async def main() -> None:
        async with connect(ws_url(srv, srv.token), max_queue=1) as slow:
            for i in range(10):
                await send(slow, {"get": f"flood/{i}"})
            deadline = time.monotonic() + 20
            while srv.node.stream_count < 10 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert srv.node.stream_count == 10
            big = base64.b64encode(os.urandom(75_000)).decode()
            # 30 writes of 100 kB at once take a while on a loaded machine: a generous timeout, and
            # no keep-alive, whose idle connections the node closes after 5 s (a race with their reuse)
            limits = httpx.Limits(max_keepalive_connections=0)
            async with httpx.AsyncClient(headers=srv.auth, timeout=60, limits=limits) as http:
                for start in range(0, 300, 30):  # 30 at a time: they share group commits
                    if srv.node.stream_count == 0:
                        break  # the node has dropped the connection's subscriptions: it closed it
                    await asyncio.gather(
                        *(http.put(f"{srv.url}/~/flood/{n % 10}", json=big) for n in range(start, start + 30))
                    )
            received = 0
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    await asyncio.wait_for(slow.recv(), 10)
                    received += 1
            assert info.value.rcvd is not None and info.value.rcvd.code == 1013
            assert received < 300

    asyncio.run(main())


def test_stale_parents_are_refused_as_on_http(srv):
    """A websocket write on an older version of an lww key gets the HTTP routes' stale_parents
    (issue 18, defect 5), and nothing is stored."""

    async def main() -> None:
        async with connect(ws_url(srv, srv.token)) as a:
            await send(a, {"set": {"key": "cas/ws", "val": 1}, "version": "W1"})
            await send(a, {"set": {"key": "cas/ws", "val": 2}, "version": "W2", "parents": ["W1"]})
            await send(a, {"set": {"key": "cas/ws", "val": 3}, "parents": ["W1"]})
            got = await recv(a)
            assert got["error"] == "stale_parents", got
            await send(a, {"set": "cas/ws", "patches": [["", 4]], "parents": ["W1"]})
            assert (await recv(a))["error"] == "stale_parents"
        assert httpx.get(f"{srv.url}/~/cas/ws", headers=srv.auth).json() == 2

    asyncio.run(main())
