"""``Bus.save(checked=True)`` skips the value check only together with ``owned=True``."""

from __future__ import annotations

import pytest

from statebus.bus import Bus
from statebus.errors import InvalidValue
from statebus.keys import encode_pubkey
from statebus.storage.memory import MemoryStorage
from statebus.values import loads_json
from statebus.values.json import parsed_passes_check

LOCAL = encode_pubkey(bytes(31) + b"\x05")


def test_checked_without_owned_still_checks_and_copies() -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    with pytest.raises(InvalidValue):
        bus.save("/~/a", {"x": float("nan")}, checked=True)
    value = {"x": [1]}
    bus.save("/~/a", value, checked=True)
    value["x"].append(2)
    assert bus.fetch("/~/a").value == {"x": [1]}


def test_owned_and_checked_stores_the_parsed_value() -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    body = b'{"x": [1, 2.5, "\\u00e9"]}'
    assert parsed_passes_check(len(body), 64)
    bus.save("/~/a", loads_json(body), owned=True, checked=True)
    assert bus.fetch("/~/a").value == {"x": [1, 2.5, "é"]}


def test_owned_alone_checks() -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    with pytest.raises(InvalidValue):
        bus.save("/~/a", {"x": float("inf")}, owned=True)
