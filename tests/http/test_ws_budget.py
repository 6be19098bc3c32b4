"""The per-connection websocket budget (sans-IO: the clock is passed in)."""

from __future__ import annotations

from statebus.config import Settings
from statebus.http.ws_budget import ConnectionBudget, LeakyBucket, Rates


def test_a_bucket_refuses_past_its_burst_and_drains_with_time() -> None:
    b = LeakyBucket(0.0)
    assert all(b.take(1, 10, 10, 0.0) for _ in range(10))
    assert not b.take(1, 10, 10, 0.0)
    assert b.take(1, 10, 10, 0.1)  # 0.1 s drained one
    assert not b.take(1, 10, 10, 0.1)


def test_messages_bytes_and_the_owner_factor() -> None:
    rates = Rates.of(Settings(ws_message_rate=5, ws_byte_rate=1000, max_body_bytes=100, ws_owner_factor=3))
    anon = ConnectionBudget(rates, 0.0)
    assert [anon.spend(1, owner=False, now=0.0) for _ in range(5)] == [None] * 5
    assert anon.spend(1, owner=False, now=0.0) == "over 5 messages per second"
    owner = ConnectionBudget(rates, 0.0)
    assert [owner.spend(1, owner=True, now=0.0) for _ in range(15)] == [None] * 15
    assert owner.spend(1, owner=True, now=0.0) == "over 15 messages per second"  # higher, still bounded
    big = ConnectionBudget(rates, 0.0)
    assert big.spend(1000, owner=False, now=0.0) is None
    assert big.spend(1, owner=False, now=0.0) == "over 1000 bytes per second"
    assert big.spend(500, owner=False, now=0.5) is None  # half a second drained half


def test_one_message_of_the_largest_size_always_fits() -> None:
    rates = Rates.of(Settings(ws_byte_rate=1000, max_body_bytes=5000))
    assert ConnectionBudget(rates, 0.0).spend(5000, owner=False, now=0.0) is None
