"""The whole document a Yjs client is sent (``YjsState.state_update``) holds every update the state
merged, also one still waiting for a missing parent: the Yjs engine leaves its pending updates out
of ``get_update``, so a client that loaded the document and then got the missing op would lack it."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Text

from statebus.keys import encode_pubkey
from statebus.merge.yjs import YjsState
from statebus.oplog.events import Op

AUTHOR = encode_pubkey(b"\x09" * 32)


def op(version: str, parents: tuple[str, ...], clock: int, update: bytes) -> Op:
    return Op(f"/{AUTHOR}/d", version, parents, AUTHOR, clock, "yjs", "crdt", update)


def test_the_document_sent_to_a_client_keeps_updates_waiting_for_a_parent() -> None:
    doc: Doc[Any] = Doc()
    text = doc.get("t", type=Text)
    text += "ab"
    first = bytes(doc.get_update())
    before = doc.get_state()
    text += "cd"
    second = bytes(doc.get_update(before))
    state = YjsState()
    state.apply(op("v2", ("v1",), 2, second))  # arrives before the op it builds on
    sent = state.state_update()
    client: Doc[Any] = Doc()
    client.apply_update(sent)
    client.apply_update(first)  # then the missing op reaches the client as its own update
    assert str(client.get("t", type=Text)) == "abcd"
    state.apply(op("v1", (), 1, first))
    assert state.value == {"t": "abcd"}
    whole: Doc[Any] = Doc()
    whole.apply_update(state.state_update())
    assert str(whole.get("t", type=Text)) == "abcd"
