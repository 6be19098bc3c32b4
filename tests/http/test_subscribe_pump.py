"""The callback-driven pump under plain ASGI calls (no uvicorn): ``send`` and ``receive`` are the
test's own coroutines, which may await futures shared between streams, as any ASGI server's may."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from statebus.config import Settings
from statebus.server import create_app, owner_token
from statebus.testing.asgi import sse_scope

pytestmark = pytest.mark.anyio

Message = dict[str, Any]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def wait_for(cond: Any, what: str) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_streams_whose_receive_and_send_await_shared_futures(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "node", log_level="warning", sse_ping_interval=60)
    app = create_app(settings)
    node = app.state.node
    key = "/~/t/shared"
    await node.save(key, {"n": 0})
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()
    writable: asyncio.Future[None] = loop.create_future()
    bodies: list[list[bytes]] = [[] for _ in range(3)]

    def streams(i: int) -> tuple[Any, Any]:
        async def send(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body") and len(bodies[i]) >= 2:
                await writable  # the socket is full for every stream until it is set
            if message.get("body"):
                bodies[i].append(message["body"])

        async def receive() -> Message:
            await gone
            return {"type": "http.disconnect"}

        return receive, send

    token = owner_token(settings)
    tasks = [asyncio.ensure_future(app(sse_scope(key, token), *streams(i))) for i in range(3)]
    await wait_for(lambda: all(len(b) == 2 for b in bodies), "the retry line and the snapshot")
    assert not any(t.done() for t in tasks)
    await node.save(key, {"n": 1})
    await asyncio.sleep(0.05)
    assert all(len(b) == 2 for b in bodies)  # every send waits on the same future
    writable.set_result(None)
    await wait_for(lambda: all(len(b) == 3 for b in bodies), "the change")
    assert all(b'"n":1' in b[2] for b in bodies)
    gone.set_result(None)
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert len(app.state.streams) == 0
    await node.aclose()
