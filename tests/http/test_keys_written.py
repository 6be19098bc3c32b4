"""The key endpoint's write path: the answer and the header reading byte for byte as before, and
what it remembers (parsed paths, owner clients) bounded and only when valid."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers
from starlette.responses import Response

from statebus.bus import Change
from statebus.config import Settings
from statebus.errors import InvalidKey
from statebus.http import braid
from statebus.http.app import NodeApp
from statebus.http.auth import OWNER_CLIENTS
from statebus.http.keys import JSON_TYPE, KeyEndpoint, WrittenResponse, request_headers
from statebus.keys.memo import PARSED_KEYS
from statebus.server import create_app
from statebus.values import dumps_json

Message = MutableMapping[str, Any]


def messages(app: Any) -> list[Message]:
    out: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        out.append(message)

    asyncio.run(app({"type": "http", "method": "PUT"}, receive, send))
    return out


def starlette_written(change: Change) -> Response:
    """How the answer was built with Starlette (the reference)."""
    headers = dict(braid.RANGE_HEADERS)
    headers["x-content-type-options"] = "nosniff"  # a value's answer is data (docs/trust-model.md, 1)
    if change.version:
        headers["version"] = braid.format_version_list(change.version)
    # with no op to name (and no Version asked), the writer's own version is the frontier
    body = dumps_json({"version": list(change.version), "frontier": list(change.version), "seq": change.seq})
    return Response(body, media_type=JSON_TYPE, headers=headers)


versions = st.lists(st.text(max_size=12) | st.sampled_from(['a"b', "a\\b", "é", "\x00", "\u2028", "x@1"]))


@settings(max_examples=200, deadline=None)
@given(versions, st.integers(min_value=0, max_value=2**53))
def test_the_answer_to_a_write_is_the_same_bytes_as_before(version: list[str], seq: int) -> None:
    change = Change(
        key="/k",
        seq=seq,
        kind="op",
        exists=True,
        value=1,
        content_type=None,
        version=tuple(version),
        parents=(),
    )
    ours, theirs = messages(WrittenResponse(change)), messages(starlette_written(change))
    assert ours[0]["status"] == theirs[0]["status"] == 200
    assert sorted(ours[0]["headers"]) == sorted(theirs[0]["headers"])
    assert ours[1]["body"] == theirs[1]["body"]
    assert not ours[1].get("more_body", False)


def test_request_headers_read_as_starlette_does() -> None:
    raw = [
        (b"content-type", b"application/json"),
        (b"x-twice", b"first"),
        (b"x-twice", b"second"),
        (b"x-latin", "é".encode("latin-1")),
    ]
    scope = {"type": "http", "headers": raw}
    ours, theirs = request_headers(scope), Headers(scope=scope)
    for name in ("content-type", "x-twice", "x-latin", "absent"):
        assert ours.get(name) == theirs.get(name)
    assert ours["x-twice"] == "first"


def test_parsed_keys_and_owner_clients_are_remembered_boundedly(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "node"))
    try:
        assert isinstance(app, NodeApp)
        keys = app.keys.app.app  # type: ignore[attr-defined]  # behind the counter and the gate
        assert isinstance(keys, KeyEndpoint)
        memo = app.state.node.bus.keys  # one memo of parsed keys, the bus's
        key = keys.parse_key("/~/a/b")
        assert keys.parse_key("/~/a/b") is key and key == app.state.node.parse("/~/a/b")
        assert "/~/a/b" in memo
        for bad in ("/~/a//b", "/~/a/" + "x" * 5000, "/~" + "/x" * 1000, "nope"):
            for _ in range(2):  # refused every time, never remembered
                with pytest.raises(InvalidKey):
                    keys.parse_key(bad)
            assert bad not in memo
        for i in range(PARSED_KEYS + 10):
            keys.parse_key(f"/~/k/{i}")
        assert len(memo) <= PARSED_KEYS
        auth = keys.auth
        owner = auth.owner_client("10.0.0.1")
        assert owner.owner and owner.address == "10.0.0.1"
        assert auth.owner_client("10.0.0.1") is owner
        assert auth.owner_client("10.0.0.2").address == "10.0.0.2"
        for i in range(OWNER_CLIENTS + 10):
            auth.owner_client(f"10.1.{i // 256}.{i % 256}")
        assert len(auth._owners) <= OWNER_CLIENTS
    finally:
        asyncio.run(app.state.node.aclose())
