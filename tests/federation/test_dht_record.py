"""The pure record format: signing, canonical encoding, and every rejection rule."""

from __future__ import annotations

import json

import pytest
from nacl.signing import SigningKey

from statebus.errors import BadSignature, InvalidKey, InvalidValue, TooLarge
from statebus.federation.dht_record import (
    MAX_RECORD_TTL,
    SIGNING_DOMAIN,
    NodeRecord,
    check_addrs,
    dht_key,
    make_record,
    pubkey_of,
    sign_record,
    verify_record,
)

SEED = bytes(range(32))
NOW = 1_800_000_000
PK = pubkey_of(SEED)


def _record(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "addrs": ["http://127.0.0.1:8000"],
        "seq": 5,
        "expires": NOW + 3600,
        "dht_name": "alpha",
    }
    fields.update(overrides)
    return make_record(SEED, fields.pop("addrs"), **fields)  # type: ignore[arg-type]


def _sign_raw(body: dict[str, object], seed: bytes = SEED) -> bytes:
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return SigningKey(seed).sign(SIGNING_DOMAIN + raw).signature + raw


def test_round_trip_and_key() -> None:
    data = _record()
    record = verify_record(data, NOW, "alpha", PK)
    assert record == NodeRecord(PK, ("http://127.0.0.1:8000",), 5, NOW + 3600, "alpha")
    assert record.key == dht_key("alpha", PK)
    assert len(record.key) == 20
    assert verify_record(data, NOW, "alpha", key=record.key) == record
    assert data[64:] == record.body()  # canonical: re-encoding gives the same bytes


def test_seed_and_signing_key_are_interchangeable() -> None:
    assert _record() == make_record(
        SigningKey(SEED), ["http://127.0.0.1:8000"], seq=5, expires=NOW + 3600, dht_name="alpha"
    )


def test_key_depends_on_dht_name() -> None:
    assert dht_key("alpha", PK) != dht_key("beta", PK)


def test_unsigned_is_refused() -> None:
    body = verify_record(_record(), NOW, "alpha").body()
    with pytest.raises(BadSignature):
        verify_record(body, NOW, "alpha")
    with pytest.raises(BadSignature):
        verify_record(b"x" * 10, NOW, "alpha")


def test_flipped_bit_is_refused() -> None:
    data = bytearray(_record())
    data[-10] ^= 1
    with pytest.raises((BadSignature, InvalidValue)):
        verify_record(bytes(data), NOW, "alpha")
    sig_flipped = bytearray(_record())
    sig_flipped[3] ^= 1
    with pytest.raises(BadSignature):
        verify_record(bytes(sig_flipped), NOW, "alpha")


def test_signed_by_another_key_is_refused() -> None:
    body = {"addrs": ["1.2.3.4:5"], "dht": "alpha", "exp": NOW + 60, "pk": PK, "seq": 9, "v": 1}
    with pytest.raises(BadSignature):
        verify_record(_sign_raw(body, seed=b"\x07" * 32), NOW, "alpha")


def test_expired_and_too_long_lived_are_refused() -> None:
    with pytest.raises(InvalidValue, match="expired"):
        verify_record(_record(expires=NOW - 1), NOW, "alpha")
    with pytest.raises(InvalidValue, match="lifetime"):
        verify_record(_record(expires=NOW + MAX_RECORD_TTL + 10), NOW, "alpha")


def test_wrong_dht_pubkey_or_key_is_refused() -> None:
    data = _record()
    with pytest.raises(InvalidValue, match="another DHT"):
        verify_record(data, NOW, "beta")
    with pytest.raises(InvalidValue, match="another public key"):
        verify_record(data, NOW, "alpha", pubkey_of(b"\x01" * 32))
    with pytest.raises(InvalidValue, match="not its own"):
        verify_record(data, NOW, "alpha", key=dht_key("alpha", pubkey_of(b"\x01" * 32)))


def test_oversized_is_refused() -> None:
    addrs = ["http://" + "a" * 180 + ".example:1" for _ in range(8)]
    with pytest.raises(TooLarge):
        _record(addrs=addrs)
    body = {"addrs": addrs, "dht": "alpha", "exp": NOW + 60, "pk": PK, "seq": 9, "v": 1}
    with pytest.raises(TooLarge):
        verify_record(_sign_raw(body), NOW, "alpha")


def test_non_canonical_and_malformed_bodies_are_refused() -> None:
    good = {"addrs": ["1.2.3.4:5"], "dht": "alpha", "exp": NOW + 60, "pk": PK, "seq": 9, "v": 1}
    assert verify_record(_sign_raw(good), NOW, "alpha").seq == 9
    raw = json.dumps(good, sort_keys=True).encode()  # with spaces: not canonical
    with pytest.raises(InvalidValue, match="canonical"):
        verify_record(SigningKey(SEED).sign(SIGNING_DOMAIN + raw).signature + raw, NOW, "alpha")
    for bad in (
        {**good, "extra": 1},
        {**good, "seq": -1},
        {**good, "seq": True},
        {**good, "exp": 1.5},
        {**good, "v": 2},
        {**good, "dht": "bad name!"},
        {**good, "pk": "A" * 52},
        {**good, "addrs": "1.2.3.4:5"},
        {**good, "addrs": ["no port"]},
        {**good, "addrs": ["1.2.3.4:99999"]},
        {**good, "addrs": ["ftp://x:1"]},
    ):
        with pytest.raises(InvalidValue):
            verify_record(_sign_raw(bad), NOW, "alpha")
    with pytest.raises(InvalidValue):
        verify_record("not bytes", NOW, "alpha")


def test_check_addrs() -> None:
    ok = ["http://127.0.0.1:8000", "https://node.example/bus", "127.0.0.1:9", "[::1]:80", "node.example:443"]
    assert check_addrs(ok) == tuple(ok)
    for bad in (["http://127.0.0.1:0"], ["http://:80"], ["https://u:p@h:1"], ["h:1\n"], [5], ["h"] * 9):
        with pytest.raises(InvalidValue):
            check_addrs(bad)  # type: ignore[arg-type]


def test_sign_record_checks_the_key() -> None:
    record = NodeRecord(pubkey_of(b"\x01" * 32), ("1.2.3.4:5",), 1, NOW, "alpha")
    with pytest.raises(InvalidKey):
        sign_record(SEED, record)
    with pytest.raises(InvalidKey):
        sign_record(b"short", record)
