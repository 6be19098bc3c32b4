"""Rate limits, subscription counts and quotas (unit level; the HTTP answers are in tests/e2e)."""

from __future__ import annotations

import gc

import pytest

from statebus.access.limits import QuotaTracker, RateLimiter, SubscriptionCounter, parse_rate
from statebus.errors import InvalidValue, QuotaExceeded, RateLimited


def test_parse_rate() -> None:
    assert parse_rate("10 per minute").amount == 10
    assert parse_rate("5/second").amount == 5
    with pytest.raises(InvalidValue):
        parse_rate("lots")


def test_rate_per_client_and_per_ip() -> None:
    limiter = RateLimiter("3/minute", "5/minute")
    for _ in range(3):
        limiter.hit("alice", "10.0.0.1")
    with pytest.raises(RateLimited) as info:
        limiter.hit("alice", "10.0.0.2")
    assert 1 <= info.value.retry_after <= 60 and info.value.status_hint == 429
    limiter.hit("bob", "10.0.0.1")
    limiter.hit(None, "10.0.0.1")
    with pytest.raises(RateLimited):  # the address is used up (3 alice + bob + anonymous + alice's 4th)
        limiter.hit(None, "10.0.0.1")
    limiter.hit(None, "10.0.0.3")
    limiter.hit("carol", None)


class FakeStream:
    def __init__(self) -> None:
        self.closed = False


def test_subscription_counter() -> None:
    counter = SubscriptionCounter(2)
    a, b = FakeStream(), FakeStream()
    counter.add("k", a)
    counter.add("k", b)
    with pytest.raises(RateLimited) as info:
        counter.check("k")
    assert "open subscriptions" in info.value.detail
    counter.check("other")
    a.closed = True
    counter.check("k")
    assert counter.count("k") == 1
    del b
    gc.collect()
    assert counter.count("k") == 0


def test_quota_tracker() -> None:
    measured: list[str] = []

    def measure(ns: str) -> int:
        measured.append(ns)
        return 60

    quota = QuotaTracker(100, measure)
    quota.charge("ns", 40)
    assert quota.used("ns") == 100 and measured == ["ns"]
    with pytest.raises(QuotaExceeded) as info:
        quota.charge("ns", 1)
    assert info.value.status_hint == 413 and quota.used("ns") == 100
    quota.release("ns", 30)
    quota.check("ns", 30)
    quota.release("ns", 1000)
    assert quota.used("ns") == 0
    with pytest.raises(InvalidValue):
        quota.charge("ns", -1)
    assert QuotaTracker(0).used("x") == 0
    with pytest.raises(QuotaExceeded):
        QuotaTracker(0).charge("x", 1)
