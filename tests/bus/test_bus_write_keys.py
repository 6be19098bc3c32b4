"""``Bus.parse_write_key`` remembers valid keys only and gives what ``parse_key`` gives."""

from __future__ import annotations

import pytest

from statebus.bus import Bus
from statebus.errors import InvalidKey
from statebus.keys import encode_pubkey, parse_key
from statebus.storage.memory import MemoryStorage

LOCAL = encode_pubkey(bytes(31) + b"\x05")
OTHER = encode_pubkey(bytes(31) + b"\x07")


def test_same_key_as_parse_key_and_remembered() -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    for path in ("/~/a/b", f"/{LOCAL}/a/b", f"/{OTHER}/x"):
        assert bus.parse_write_key(path) == parse_key(path, LOCAL, allow_subtree=False)
        assert bus.parse_write_key(path) == parse_key(path, LOCAL, allow_subtree=False)
    assert "/~/a/b" in bus._write_keys


@pytest.mark.parametrize("path", ["/~/a/", "no-slash", "/~/a//b", "/~/a/../b", "/~/\x00", "/zz/a"])
def test_invalid_keys_refused_every_time_never_remembered(path: str) -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    messages = []
    for _ in range(2):
        with pytest.raises(InvalidKey) as caught:
            bus.parse_write_key(path)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert path not in bus._write_keys
    with pytest.raises(InvalidKey):
        bus.save(path, 1)


def test_a_str_subclass_is_parsed_not_remembered() -> None:
    class Path(str):
        pass

    bus = Bus(MemoryStorage(), LOCAL)
    assert bus.parse_write_key(Path("/~/a")) == f"/{LOCAL}/a"
    assert not bus._write_keys


def test_the_memory_is_bounded() -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    for i in range(5000):
        bus.parse_write_key(f"/~/k{i}")
    assert len(bus._write_keys) <= 4096
