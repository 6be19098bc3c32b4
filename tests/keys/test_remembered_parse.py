"""A remembered key parse (``KeyMemo``, which the bus and the HTTP layer share) answers exactly as
``parse_key`` does: the same key, the same error, every time, in bounded memory."""

from __future__ import annotations

import pytest

from statebus.bus import Bus
from statebus.errors import InvalidKey
from statebus.keys import KeyMemo, encode_pubkey, parse_key
from statebus.keys.memo import PARSED_KEYS
from statebus.storage.memory import MemoryStorage

LOCAL = encode_pubkey(bytes(31) + b"\x05")
OTHER = encode_pubkey(bytes(31) + b"\x07")


@pytest.mark.parametrize("allow_subtree", [False, True])
def test_same_key_as_parse_key_and_remembered(allow_subtree: bool) -> None:
    memo = KeyMemo(LOCAL)
    for path in ("/~/a/b", f"/{LOCAL}/a/b", f"/{OTHER}/x", "/~/sub/"):
        if path.endswith("/") and not allow_subtree:
            continue
        expected = parse_key(path, LOCAL, allow_subtree=allow_subtree)
        assert memo.parse(path, allow_subtree=allow_subtree) == expected
        assert memo.parse(path, allow_subtree=allow_subtree) == expected
        assert path in memo


@pytest.mark.parametrize("path", ["/~/a/", "no-slash", "/~/a//b", "/~/a/../b", "/~/\x00", "/zz/a"])
def test_invalid_write_keys_refused_every_time_never_remembered(path: str) -> None:
    memo = KeyMemo(LOCAL)
    messages = []
    for _ in range(2):
        with pytest.raises(InvalidKey) as caught:
            memo.parse(path, allow_subtree=False)
        with pytest.raises(InvalidKey) as plain:
            parse_key(path, LOCAL, allow_subtree=False)
        messages.append(str(caught.value))
        assert str(caught.value) == str(plain.value)
    assert messages[0] == messages[1]
    assert path not in memo
    with pytest.raises(InvalidKey):
        Bus(MemoryStorage(), LOCAL).save(path, 1)


def test_a_subtree_remembered_by_a_read_is_still_refused_for_a_write() -> None:
    memo = KeyMemo(LOCAL)
    assert memo.parse("/~/a/") == f"/{LOCAL}/a/"
    with pytest.raises(InvalidKey, match="not a subtree"):
        memo.parse("/~/a/", allow_subtree=False)


def test_a_str_subclass_is_parsed_not_remembered() -> None:
    class Path(str):
        pass

    memo = KeyMemo(LOCAL)
    assert memo.parse(Path("/~/a")) == f"/{LOCAL}/a"
    assert len(memo) == 0


def test_the_memory_is_bounded() -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    for i in range(PARSED_KEYS + 1000):
        bus.save(f"/~/k{i}", i)
    assert len(bus.keys) <= PARSED_KEYS
    assert bus.fetch("/~/k0").value == 0
