"""The record storage's bounds as plain objects: per source address, per key prefix, eviction order."""

from __future__ import annotations

import os

import pytest

from statebus.config import Settings
from statebus.errors import InvalidValue, QuotaExceeded
from statebus.federation.dht_record import dht_key, make_record, pubkey_of
from statebus.federation.dht_storage import LOCAL, RecordStorage, StorageLimits, prefix_of, source_of

NOW = 1_800_000_000.0
NODE_ID = b"\x00" * 20  # keys whose first bit is 1 share 0 leading bits with it: key prefix 0


def _fresh(prefix: int | None = None, seed: bytes | None = None, seq: int = 1) -> tuple[bytes, bytes]:
    """A valid record of a brand-new key (in key prefix ``prefix`` of ``NODE_ID``, if given)."""
    while True:
        s = seed or os.urandom(32)
        key = dht_key("alpha", pubkey_of(s))
        if prefix is None or prefix_of(key, NODE_ID) == prefix:
            return key, make_record(s, ["127.0.0.1:1"], seq=seq, expires=int(NOW) + 600, dht_name="alpha")


def _storage(**limits: int) -> RecordStorage:
    return RecordStorage("alpha", clock=lambda: NOW, limits=StorageLimits(**limits), node_id=NODE_ID)


def test_one_source_is_refused_past_its_cap_and_others_are_not() -> None:
    storage = _storage(max_records=100, max_per_source=5)
    for _ in range(5):
        storage.store(*_fresh(), "10.0.0.66")
    with pytest.raises(QuotaExceeded):
        storage.store(*_fresh(), "10.0.0.66")
    storage.store(*_fresh(), "10.0.0.7")
    key, blob = _fresh()
    storage[key] = blob  # this node's own writes are not counted against any address
    assert (storage.per_source("10.0.0.66"), storage.refused_full, len(storage)) == (5, 1, 7)
    assert storage.source(key) == LOCAL


def test_when_full_the_biggest_source_loses_its_least_recently_used_record() -> None:
    storage = _storage(max_records=10, max_per_source=8)
    honest = [_fresh() for _ in range(3)]
    for i, (key, blob) in enumerate(honest):
        storage.store(key, blob, f"10.0.1.{i}")
    flood = [_fresh() for _ in range(8)]
    for key, blob in flood:
        storage.store(key, blob, "10.0.0.66")
    assert len(storage) == 10 and storage.evicted == 1
    assert all(storage.get(key) is not None for key, _ in honest)
    assert storage.get(flood[0][0]) is None  # its own oldest record made room
    storage.touch(flood[1][0])  # looked up: outlives its siblings
    storage.store(*_fresh(), "10.0.1.9")
    assert storage.get(flood[1][0]) is not None and storage.get(flood[2][0]) is None
    assert all(storage.get(key) is not None for key, _ in honest)


@pytest.mark.parametrize("n", [4, 40])  # few tied sources, and more than the storage compares one by one
def test_among_equals_the_records_looked_up_recently_stay(n: int) -> None:
    storage = _storage(max_records=n)
    held = [_fresh() for _ in range(n)]
    for i, (key, blob) in enumerate(held):
        storage.store(key, blob, f"10.0.1.{i}")
    storage.touch(held[0][0])
    storage.store(*_fresh(), "10.0.2.1")
    assert storage.get(held[0][0]) is not None and storage.get(held[1][0]) is None
    assert len(storage) == n


def test_many_equal_sources_in_a_full_key_prefix_lose_their_oldest_record_there() -> None:
    storage = _storage(max_records=100, max_per_prefix=20)
    near = _fresh(prefix=1)
    storage.store(*near, "10.0.3.1")
    far = [_fresh(prefix=0) for _ in range(20)]
    for i, (key, blob) in enumerate(far):
        storage.store(key, blob, f"10.0.1.{i}")
    storage.touch(far[0][0])
    storage.store(*_fresh(prefix=0), "10.0.2.1")
    assert storage.get(far[0][0]) is not None and storage.get(far[1][0]) is None
    assert storage.get(near[0]) is not None


def test_a_full_key_prefix_takes_no_more_from_its_biggest_source_but_others_still_fit() -> None:
    storage = _storage(max_records=100, max_per_source=100, max_per_prefix=4)
    far = [_fresh(prefix=0) for _ in range(6)]
    for key, blob in far:
        storage.store(key, blob, "10.0.0.66")  # a source at the top replaces only its own records
    assert sum(1 for k in storage.records if prefix_of(k, NODE_ID) == 0) == 4
    assert storage.get(far[-1][0]) is not None and storage.get(far[0][0]) is None
    near = [_fresh(prefix=1) for _ in range(3)]
    for key, blob in near:
        storage.store(key, blob, "10.0.0.66")
    assert all(storage.get(key) is not None for key, _ in near)
    storage.store(*_fresh(prefix=0), "10.0.0.7")  # a smaller source displaces the flood's oldest
    assert storage.per_source("10.0.0.7") == 1 and storage.per_source("10.0.0.66") == 6


def test_the_own_record_is_never_displaced() -> None:
    storage = _storage(max_records=3, max_per_source=3)
    own_key, own_blob = _fresh()
    storage.pinned = own_key
    storage[own_key] = own_blob
    for _ in range(2):
        storage.store(*_fresh(), "10.0.0.66")
    for _ in range(5):
        storage.store(*_fresh(), "10.0.0.7")
    assert storage.get(own_key) == own_blob and len(storage) == 3


def test_an_owner_update_counts_against_whoever_brought_it() -> None:
    storage = _storage(max_records=10, max_per_source=2)
    seed = os.urandom(32)
    key, first = _fresh(seed=seed, seq=1)
    storage.store(key, first, "10.0.0.66")  # a relay was first
    storage.store(*_fresh(), "10.0.0.66")
    storage.store(key, first, "10.0.0.5")  # the same record again: nothing moves
    assert storage.source(key) == "10.0.0.66"
    _, newer = _fresh(seed=seed, seq=2)
    storage.store(key, newer, "10.0.0.5")
    assert storage.source(key) == "10.0.0.5" and storage.per_source("10.0.0.66") == 1
    with pytest.raises(InvalidValue, match="stale"):
        storage.store(key, first, "10.0.0.66")


def test_sources_are_addresses_and_ipv6_hosts() -> None:
    assert source_of(("10.1.2.3", 4000)) == source_of(("10.1.2.3", 4001)) == "10.1.2.3"
    assert source_of(("2001:db8:1:2::5", 1)) == source_of(("2001:db8:1:2:ffff::9", 2)) == "2001:db8:1:2::/64"
    assert source_of(("::ffff:10.1.2.3", 1)) == "10.1.2.3"
    with pytest.raises(InvalidValue):
        StorageLimits(max_per_source=0)


def test_limits_come_from_the_settings() -> None:
    settings = Settings(dht_max_records=50, dht_max_records_per_source=7, dht_max_records_per_prefix=9)
    assert StorageLimits.from_settings(settings) == StorageLimits(50, 7, 9)
    assert Settings.load({"dht_self_check_interval": "30s"}, env={"HOME": "/h"}).dht_self_check_interval == 30
