"""Run a real statebus node (uvicorn + the app) on 127.0.0.1, port 0, in a background thread, for tests.

Example::

    with live_server(tmp_path) as srv:
        httpx.put(f"{srv.url}/~/a", json=1, headers=srv.auth)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from statebus.config import Settings
from statebus.errors import PeerUnavailable
from statebus.http.auth import cookie_name, cookie_value
from statebus.runtime import Node
from statebus.server.listener import StatebusServer
from statebus.server.running import RunningNode, start


@dataclass
class LiveServer:
    """A running node: its base ``url``, the owner ``token`` and the in-process objects."""

    url: str
    token: str = field(repr=False)
    running: RunningNode
    settings: Settings

    @property
    def server(self) -> StatebusServer:
        return self.running.server

    @property
    def node(self) -> Node:
        return self.running.node

    @property
    def auth(self) -> dict[str, str]:
        """Headers that make a request the owner's."""
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def cookie(self) -> dict[str, str]:
        """The owner's login cookie on this node (as ``GET /login`` sets it over plain HTTP)."""
        return {cookie_name(self.local, secure=False): cookie_value(self.token, self.local)}

    @property
    def local(self) -> str:
        return self.node.local


def _new_loop() -> asyncio.AbstractEventLoop:
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


@contextlib.contextmanager
def live_server(data_dir: Path, timeout: float = 10.0, **settings: Any) -> Iterator[LiveServer]:
    """Start a node on ``data_dir`` with :func:`statebus.server.start` (the app ``statebus serve``
    ships, without a DHT) in a loop of its own thread; yield it; stop it (streams ended, node
    closed) on exit."""
    options: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "log_level": "warning", **settings}
    config = replace(Settings(data_dir=data_dir), **options)
    loop = _new_loop()
    started: concurrent.futures.Future[RunningNode] = concurrent.futures.Future()
    stop = asyncio.Event()

    async def main() -> None:
        try:
            running = await start(config, dht=False)
        except BaseException as exc:
            started.set_exception(exc)
            return
        started.set_result(running)
        try:
            await stop.wait()
        finally:
            await running.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), name="statebus-test-server")
    thread.daemon = True
    thread.start()
    try:
        running = started.result(timeout)
    except concurrent.futures.TimeoutError:
        raise PeerUnavailable("the test server did not start", status_hint=503) from None
    try:
        yield LiveServer(running.url, running.token, running, config)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()


class SseReader:
    """Reads SSE events from a streaming httpx response, as an EventSource would."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._chunks = response.iter_raw()
        self._buf = b""
        self.last_id: str | None = None
        self.comments: list[str] = []
        self.retry: int | None = None

    def _block(self) -> bytes:
        while b"\n\n" not in self._buf:
            self._buf += next(self._chunks)
        block, _, self._buf = self._buf.partition(b"\n\n")
        return block

    def next_event(self) -> dict[str, Any]:
        """The next dispatched event: {"event", "id", "data"} (data parsed as JSON)."""
        while True:
            event = self.next_event_or_comment()
            if event is not None:
                return event

    def wait_comment(self, text: str) -> None:
        """Read until a comment line ``: <text>`` arrives (events read meanwhile are dropped)."""
        while text not in self.comments:
            self.next_event_or_comment()

    def next_event_or_comment(self) -> dict[str, Any] | None:
        """Like :meth:`next_event`, but returns None after a block without data (a comment, a bare id)."""
        event: dict[str, Any] = {"event": "message", "id": None, "data": None}
        data: list[str] = []
        for line in self._block().decode("utf-8").split("\n"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                self.comments.append(value)
            elif name == "event":
                event["event"] = value
            elif name == "id":
                event["id"] = value
                self.last_id = value
            elif name == "data":
                data.append(value)
            elif name == "retry":
                self.retry = int(value)
        if not data:
            return None
        event["data"] = json.loads("\n".join(data))
        return event

    def events(self, n: int) -> list[dict[str, Any]]:
        return [self.next_event() for _ in range(n)]


def sse_headers(srv: LiveServer, last_event_id: str | None = None) -> dict[str, str]:
    """Owner headers asking for an event stream (resuming after ``last_event_id``)."""
    headers = {**srv.auth, "Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return headers
