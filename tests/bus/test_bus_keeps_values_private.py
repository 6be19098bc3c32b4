"""A saved JSON value is checked and belongs to the bus: a caller's value is copied (its later
mutation cannot reach the stored op), and a body ``loads_json`` just decoded is kept as it is and
checked again only when its decode does not prove ``check_json``."""

from __future__ import annotations

import pytest

from statebus.bus import Bus
from statebus.errors import InvalidOp, InvalidValue, TooLarge
from statebus.keys import encode_pubkey
from statebus.storage.memory import MemoryStorage
from statebus.values import DEFAULT_MAX_BYTES, loads_json

LOCAL = encode_pubkey(bytes(31) + b"\x05")


def test_a_callers_value_is_checked_and_copied() -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    with pytest.raises(InvalidValue):
        bus.save("/~/a", {"x": float("nan")})
    value = {"x": [1]}
    bus.save("/~/a", value)
    value["x"].append(2)
    assert bus.fetch("/~/a").value == {"x": [1]}


def test_a_parsed_body_is_stored_as_decoded() -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    parsed = loads_json(b'{"x": [1, 2.5, "\\u00e9"]}')
    assert parsed.passes_check
    bus.save("/~/a", parsed)
    assert bus.fetch("/~/a").value == {"x": [1, 2.5, "é"]}
    assert bus.fetch("/~/a").value is parsed.value  # kept, not copied


def test_a_parsed_body_the_decode_does_not_prove_is_checked_again() -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    deep = loads_json(b"[" * 70 + b"]" * 70, max_depth=80)  # deeper than check_json allows
    assert not deep.passes_check
    with pytest.raises(InvalidValue, match="nested deeper"):
        bus.save("/~/a", deep)
    big = loads_json(b'"' + b"\\u00e9" * (DEFAULT_MAX_BYTES // 2 + 1) + b'"', max_bytes=8 * DEFAULT_MAX_BYTES)
    assert not big.passes_check
    with pytest.raises(TooLarge):
        bus.save("/~/a", big)
    assert bus.fetch_or_none("/~/a") is None


def test_a_parsed_body_takes_no_content_type() -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    with pytest.raises(InvalidOp, match="takes no content type"):
        bus.save("/~/a", loads_json(b"1"), content_type="text/plain")
