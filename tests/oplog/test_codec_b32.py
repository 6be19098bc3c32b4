"""The minted version's base32 is exactly ``base64.b32encode`` of the digest's first 10 bytes."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from statebus.oplog.codec import _b32_80


@given(st.binary(min_size=10, max_size=32))
def test_b32_80_is_base64_b32encode_of_ten_bytes(digest: bytes) -> None:
    assert _b32_80(digest) == base64.b32encode(digest[:10]).decode("ascii").lower()


def test_b32_80_edges() -> None:
    for digest in (bytes(10), b"\xff" * 10, bytes(range(10)), b"\x80" + bytes(9), bytes(9) + b"\x01"):
        assert _b32_80(digest) == base64.b32encode(digest).decode("ascii").lower()
