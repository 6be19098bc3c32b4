"""SSE encoder and the statebus event convention, checked with a spec-following SSE reader."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statebus.errors import InvalidValue
from statebus.http.sse import (
    PING,
    encode_comment,
    encode_event,
    encode_reset_event,
    encode_update_event,
    update_payload,
)
from statebus.oplog import DELETE, Patch


def read_events(stream: bytes) -> list[dict[str, str]]:
    """Dispatch events as the WHATWG 'interpret an event stream' algorithm does (no retry handling)."""
    text = stream.decode("utf-8")
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    events, data, fields = [], [], {}
    for line in lines:
        if line == "":
            if data:
                events.append({**fields, "data": "\n".join(data)})
            data, fields = [], {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    return events


def test_encode_event_fields() -> None:
    assert encode_event("hi") == b"data: hi\n\n"
    assert (
        encode_event(b"x", event="update", id="42", retry=1500)
        == b"event: update\nid: 42\nretry: 1500\ndata: x\n\n"
    )
    assert encode_event("a\r\nb\rc\nd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"
    assert encode_event("") == b"data: \n\n"
    assert encode_event("é") == "data: é\n\n".encode()


@pytest.mark.parametrize(
    "kwargs",
    [{"event": "a\nb"}, {"event": "a\rb"}, {"id": "1\x002"}, {"id": "1\n"}, {"retry": -1}, {"retry": 1.5}],
)
def test_encode_event_rejects_bad_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidValue):
        encode_event("x", **kwargs)  # type: ignore[arg-type]


def test_encode_event_rejects_bad_data() -> None:
    with pytest.raises(InvalidValue, match="UTF-8"):
        encode_event(b"\xff")
    with pytest.raises(InvalidValue, match="surrogate"):
        encode_event("\ud800")


def test_comments() -> None:
    assert encode_comment("ping") == PING
    assert encode_comment() == b": \n\n"
    assert encode_comment("a\nb") == b": a\n: b\n\n"
    assert read_events(PING + encode_event("x")) == [{"data": "x"}]


@given(
    st.text(st.characters(blacklist_categories=("Cs",))),
    st.text(st.characters(blacklist_characters="\r\n\x00", blacklist_categories=("Cs",))),
)
def test_event_round_trip(data: str, event_id: str) -> None:
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert read_events(encode_event(data, event="update", id=event_id)) == [
        {"event": "update", "id": event_id, "data": expected}
    ]


def test_update_event_convention() -> None:
    out = encode_update_event("/~/a", ["v2"], ["v1"], cursor=7, value={"x": "line\nbreak"})
    assert out == (
        b'event: update\nid: 7\ndata: {"key":"/~/a","version":["v2"],"parents":["v1"],'
        b'"value":{"x":"line\\nbreak"}}\n\n'
    )
    (event,) = read_events(out)
    assert json.loads(event["data"])["value"] == {"x": "line\nbreak"}


def test_update_event_bodies() -> None:
    patches = update_payload("/k", ["v"], patches=[Patch(".a", 1), Patch(".b", DELETE)])
    assert patches["patches"] == [[".a", 1], [".b"]]
    assert update_payload("/k", ["v"], deleted=True)["deleted"] is True
    raw = update_payload("/k", ["v"], value=b"\x00\x01", content_type="application/octet-stream")
    assert raw["value_base64"] == "AAE=" and raw["content_type"] == "application/octet-stream"
    snap = encode_update_event("/k", ["v"], kind="snapshot", value=None)
    assert read_events(snap) == [
        {"event": "snapshot", "data": '{"key":"/k","version":["v"],"parents":[],"value":null}'}
    ]
    update = encode_update_event("/k", ["v"], cursor="c9", value="é")
    assert read_events(update)[0]["id"] == "c9" and json.loads(read_events(update)[0]["data"])["value"] == "é"
    assert read_events(encode_reset_event("too old")) == [{"event": "reset", "data": '{"reason":"too old"}'}]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"value": 1, "deleted": True},
        {"value": 1, "patches": []},
        {"value": b"x"},
        {"value": float("nan")},
        {"value": {1j: 2}},
        {"value": "\ud800"},
        {"value": 1, "kind": "bogus"},
        {"value": 1, "kind": "reset"},
        {"value": 1, "cursor": "a\nb"},
    ],
)
def test_update_event_rejects(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidValue):
        encode_update_event("/k", ["v"], **kwargs)  # type: ignore[arg-type]
