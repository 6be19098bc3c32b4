"""Derived (reactive) keys in process: read-only, clear failures, resume, and their inputs' read rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from statebus.access.control import AccessControl
from statebus.bus import Bus, Change
from statebus.config import Settings
from statebus.errors import DerivedKey, NotFound, ReactiveFailed
from statebus.keys import encode_pubkey
from statebus.oplog import Op, Patch
from statebus.runtime import Node
from statebus.storage.memory import MemoryStorage

LOCAL = encode_pubkey(bytes(31) + b"\x05")
STRANGER = encode_pubkey(bytes(31) + b"\x07")


def summing_bus() -> Bus:
    bus = Bus(MemoryStorage(), LOCAL)
    bus.save("/~/a", 3)
    bus.save("/~/b", 5)
    bus.reactive("/~/sum", lambda key, get: (get("/~/a") or 0) + (get("/~/b") or 0))
    return bus


def test_every_write_to_a_derived_key_is_refused_and_changes_nothing() -> None:
    bus = summing_bus()
    seq = bus.seq
    with pytest.raises(DerivedKey) as caught:
        bus.save("/~/sum", 99)
    assert caught.value.status_hint == 405 and "derived" in caught.value.detail
    with pytest.raises(DerivedKey):
        bus.patch("/~/sum", [Patch(".x", 1)])
    with pytest.raises(DerivedKey):
        bus.delete("/~/sum")
    with pytest.raises(DerivedKey):
        bus.crdt_update("/~/sum", b"\x00\x00")
    op = Op(f"/{LOCAL}/sum", "", (), LOCAL, 1, "lww", "set", 99)
    with pytest.raises(DerivedKey):
        bus.apply(dataclasses.replace(op, version="1-x"))
    assert bus.seq == seq and bus.fetch("/~/sum").value == 8 and bus.pending == 2


def test_a_function_that_raises_is_a_reactive_failed_read_not_a_missing_key() -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    bus.save("/~/d", 0)

    def inverse(key: str, get: Any) -> Any:
        return 1 / get("/~/d")

    bus.reactive("/~/inv", inverse)
    bus.reactive("/~/nothing", lambda key, get: None)
    with pytest.raises(ReactiveFailed) as caught:
        bus.fetch("/~/inv")
    assert caught.value.status_hint == 500
    assert caught.value.detail == f"the function of derived key /{LOCAL}/inv raised ZeroDivisionError"
    with pytest.raises(NotFound):  # a function that gives None: no value, and no failure
        bus.fetch("/~/nothing")
    bus.save("/~/d", 4)
    assert bus.fetch("/~/inv").value == 0.25


def test_resuming_after_a_cursor_sends_the_derived_values_changed_since() -> None:
    bus = summing_bus()
    seen: list[Change] = []
    sub = bus.observe("/~/sum", seen.append)
    assert seen[-1].value == 8
    cursor = seen[-1].seq
    sub.close()
    bus.save("/~/b", 12)  # while away
    bus.save("/~/unrelated", 1)
    resumed: list[Change] = []
    bus.observe("/~/sum", resumed.append, since=cursor)
    assert [(c.kind, c.value) for c in resumed] == [("derived", 15)]
    assert resumed[0].seq == cursor + 1  # the cursor of the write that changed it
    again: list[Change] = []
    bus.observe("/~/sum", again.append, since=resumed[0].seq)
    assert again == []  # nothing new: nothing repeated
    subtree: list[Change] = []
    bus.observe("/~/", subtree.append, since=cursor)  # a subtree resume carries derived keys too
    assert ("derived", f"/{LOCAL}/sum", 15) in [(c.kind, c.key, c.value) for c in subtree]
    bus.save("/~/a", 3, version="same")  # recomputed to the same value: it keeps its cursor
    unchanged: list[Change] = []
    bus.observe("/~/sum", unchanged.append, since=resumed[0].seq)
    assert unchanged == []


@pytest.mark.anyio
async def test_a_derived_key_is_readable_only_by_who_may_read_all_its_inputs(tmp_path: Path) -> None:
    node = Node(Bus(MemoryStorage(), LOCAL))
    control = AccessControl(node, Settings(data_dir=tmp_path))
    await node.save("/~/private/salary", 8)
    await node.save("/~/public/name", "x")
    node.reactive("/~/public/leak", lambda key, get: get("/~/private/salary"))
    node.reactive("/~/public/again", lambda key, get: get("/~/public/leak"))
    node.reactive("/~/public/ok", lambda key, get: get("/~/public/name"))
    leak, again, ok = (node.parse(f"/~/public/{k}") for k in ("leak", "again", "ok"))
    for client in (None, STRANGER):
        assert not control.may_read(client, leak) and not control.may_read(client, again)
        assert control.may_read(client, ok)
    assert control.may_read(LOCAL, leak)
    reason = control.why_not("read", None, leak)
    assert reason is not None and "salary" not in reason  # the refusal names no input
    await node.aclose()
