"""A Yjs document's bounds: its base snapshot does not grow per op (issue 18, defect 9), and a local
write that would take it over ``max_yjs_doc_bytes`` is refused with 413 and not stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pycrdt import Doc, Map, Text

from statebus.bus import Bus
from statebus.errors import TooLarge
from statebus.keys import encode_pubkey
from statebus.merge.yjs import KNOWN_KEEP
from statebus.storage.memory import MemoryStorage
from statebus.testing.live_server import live_server

LOCAL = encode_pubkey(b"\x07" * 32)
KEY = f"/{LOCAL}/yc/doc"
YJS = {"Content-Type": "application/vnd.yjs.update"}


def edits(n: int) -> list[bytes]:
    doc: Doc[Any] = Doc()
    text = doc.get("t", type=Text)
    out: list[bytes] = []
    for i in range(n):
        before = doc.get_state()
        text += "x" if i % 2 else "y"
        out.append(bytes(doc.get_update(before)))
    return out


def snapshot_state(bus: Bus) -> dict[str, Any]:
    snap = bus.compact(KEY, keep=10)
    assert snap is not None
    state: dict[str, Any] = json.loads(snap.data)["state"]
    return state


def test_the_base_keeps_a_bounded_window_of_folded_versions() -> None:
    bus = Bus(MemoryStorage(), local=LOCAL)
    updates = edits(6 * KNOWN_KEEP)
    for i, update in enumerate(updates):
        bus.crdt_update(KEY, update)
        if i % 50 == 49:
            bus.flush()
            bus.compact(KEY, keep=10)
    bus.flush()
    state = snapshot_state(bus)
    assert len(state["known"]) == KNOWN_KEEP  # not one version id per op ever written
    assert bus.fetch(KEY).value == {"t": "yx" * (3 * KNOWN_KEEP)}
    # a late op naming a recently folded parent is not "missing"; an older one costs no value
    reloaded = Bus(bus.storage, local=LOCAL)
    assert reloaded.fetch(KEY).value == {"t": "yx" * (3 * KNOWN_KEEP)}


def test_a_local_update_over_the_cap_is_refused_and_not_stored() -> None:
    bus = Bus(MemoryStorage(), local=LOCAL, max_doc_bytes=2000)
    doc: Doc[Any] = Doc()
    m = doc.get("m", type=Map)
    m["a"] = "x" * 1000
    bus.crdt_update(KEY, bytes(doc.get_update()))
    before = bus.fetch(KEY)
    before_state = doc.get_state()
    m["b"] = "y" * 1500
    with pytest.raises(TooLarge):
        bus.crdt_update(KEY, bytes(doc.get_update(before_state)))
    after = bus.fetch(KEY)
    assert after.value == before.value and after.version == before.version
    # a small update still fits
    small: Doc[Any] = Doc()
    small.get("s", type=Text).insert(0, "ok")
    bus.crdt_update(KEY, bytes(small.get_update()))
    assert bus.fetch(KEY).value["s"] == "ok"


def test_the_setting_caps_a_document_with_413(tmp_path: Path) -> None:
    with (
        live_server(tmp_path / "node", max_yjs_doc_bytes="4KiB") as srv,
        httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as client,
    ):
        doc: Doc[Any] = Doc()
        m = doc.get("m", type=Map)
        m["a"] = "x" * 3000
        assert client.patch("/~/capped", content=doc.get_update(), headers=YJS).status_code == 200
        state = doc.get_state()
        m["b"] = "y" * 3000
        r = client.patch("/~/capped", content=doc.get_update(state), headers=YJS)
        assert r.status_code == 413, r.text
        assert r.json()["error"] == "too_large"
        assert set(client.get("/~/capped").json()["m"]) == {"a"}
