"""The error tree: every refusal has its own class, code and status, and a peer's error answer
arrives as a :class:`RemoteError` that keeps the peer's status and code."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import statebus.errors as errors
from statebus.bus import Bus
from statebus.cli.client import check
from statebus.errors import RateLimited, ReactiveTooDeep, RemoteError, ShuttingDown, StatebusError
from statebus.federation.client import PeerClient
from statebus.identity import Identity
from statebus.keys import encode_pubkey
from statebus.runtime import Node
from statebus.storage.memory import MemoryStorage
from statebus.storage.sqlite import SqliteStorage

LOCAL = encode_pubkey(bytes(31) + b"\x05")


def test_every_error_is_a_statebus_error_with_a_distinct_code() -> None:
    classes = [
        obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, StatebusError)
    ]
    codes = [cls().code for cls in classes]
    assert len(set(codes)) == len(codes)
    assert ShuttingDown().code == "shutting_down" and ShuttingDown().status_hint == 503


def test_a_closed_store_refuses_with_shutting_down(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "store.sqlite3")
    store.close()
    with pytest.raises(ShuttingDown, match="closed"):
        store.load("/" + LOCAL + "/a")


@pytest.mark.anyio
async def test_a_closing_node_refuses_new_streams_with_shutting_down() -> None:
    node = Node(Bus(MemoryStorage(), LOCAL))
    await node.aclose()
    with pytest.raises(ShuttingDown):
        node.events("/~/a")


def test_reactive_functions_that_read_each_other_give_a_reactive_too_deep_value() -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    bus.reactive("/~/a", lambda key, get: get("/~/b"))
    bus.reactive("/~/b", lambda key, get: get("/~/a"))
    value = bus.fetch("/~/a").value
    assert value["error"] == ReactiveTooDeep().code


def test_a_servers_error_answer_is_a_remote_error() -> None:
    answer = httpx.Response(403, json={"error": "forbidden", "detail": "no write grant"})
    with pytest.raises(RemoteError) as caught:
        check(answer)
    assert caught.value.status_hint == 403
    assert caught.value.remote_code == "forbidden"
    assert "no write grant" in str(caught.value)


@pytest.mark.anyio
async def test_a_peers_error_answer_is_a_remote_error_and_429_is_rate_limited() -> None:
    def answer(status: int, body: bytes, **headers: str) -> httpx.Response:
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))  # raw, as a socket

    answers = iter(
        [
            answer(404, b'{"error": "not_found", "detail": "no such node"}'),
            answer(429, b'{"error": "rate_limited"}', **{"retry-after": "7"}),
        ]
    )
    client = PeerClient(Identity.generate(), transport=httpx.MockTransport(lambda request: next(answers)))
    try:
        with pytest.raises(RemoteError) as caught:
            await client.node_info("http://peer.test")
        assert (caught.value.status_hint, caught.value.remote_code) == (404, "not_found")
        with pytest.raises(RateLimited) as limited:
            await client.node_info("http://peer.test")
        assert limited.value.retry_after == 7
    finally:
        await client.aclose()
