"""The answer to a write and the header reading of the key endpoint, byte for byte as before."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers
from starlette.responses import Response

from statebus.bus import Change
from statebus.http import braid
from statebus.http.keys import JSON_TYPE, WrittenResponse, request_headers
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
    if change.version:
        headers["version"] = braid.format_version_list(change.version)
    body = dumps_json({"version": list(change.version), "seq": change.seq})
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
