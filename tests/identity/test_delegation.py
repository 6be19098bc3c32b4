from __future__ import annotations

import json

import pytest

from statebus.errors import BadSignature, InvalidValue
from statebus.identity.delegation import (
    Keyring,
    delegate,
    keys_prefix,
    parse_record,
    record_key,
    revoke,
)
from statebus.identity.keys import Identity

OWNER = Identity.generate()
DEVICE = Identity.generate()
NOW = 1_800_000_000


def test_record_round_trip_through_json() -> None:
    rec = delegate(OWNER, DEVICE.pubkey, [f"/{OWNER.pubkey}/chirp/"], issued=7, not_before=5, expires=NOW)
    value = json.loads(json.dumps(rec.to_json()))
    assert value["type"] == "statebus/delegation" and value["scopes"] == [f"/{OWNER.pubkey}/chirp/"]
    again = parse_record(value, record_key(OWNER.pubkey, DEVICE.pubkey))
    assert again == rec
    assert rec.key == f"/{OWNER.pubkey}/.keys/{DEVICE.pubkey}"
    assert rec.key.startswith(keys_prefix(OWNER.pubkey))
    rev = revoke(OWNER, DEVICE.pubkey, issued=8, reason="lost phone")
    assert parse_record(rev.to_json(), rev.key) == rev


def test_signing_bytes_are_canonical() -> None:
    rec = delegate(OWNER, DEVICE.pubkey, issued=1)
    body = rec.signing_bytes().split(b"\n", 1)[1]
    assert body == json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()


def test_tampered_or_foreign_records_rejected() -> None:
    value = delegate(OWNER, DEVICE.pubkey, [f"/{OWNER.pubkey}/chirp/"], issued=1).to_json()
    widened = dict(value, scopes=[f"/{OWNER.pubkey}/"])
    with pytest.raises(BadSignature, match="not signed by its owner"):
        parse_record(widened)
    # the delegate cannot sign its own delegation
    forged = delegate(DEVICE, OWNER.pubkey, issued=1).to_json()
    forged_as_owner = dict(forged, owner=OWNER.pubkey, delegate=DEVICE.pubkey, scopes=[f"/{OWNER.pubkey}/"])
    with pytest.raises(BadSignature):
        parse_record(forged_as_owner)
    with pytest.raises(InvalidValue, match="stored at"):
        parse_record(value, record_key(OWNER.pubkey, Identity.generate().pubkey))
    with pytest.raises(InvalidValue, match="unknown fields"):
        parse_record(dict(value, extra=1))
    with pytest.raises(InvalidValue):
        parse_record([1, 2])


@pytest.mark.parametrize(
    "scopes",
    [[], ["/elsewhere/"], ["/{o}/chirp"], ["/{o}/.keys/"], ["/{o}/x/"] * 33],
)
def test_bad_scopes(scopes: list[str]) -> None:
    with pytest.raises(InvalidValue):
        delegate(OWNER, DEVICE.pubkey, [s.format(o=OWNER.pubkey) for s in scopes], issued=1)


def test_bad_fields() -> None:
    with pytest.raises(InvalidValue, match="itself"):
        delegate(OWNER, OWNER.pubkey, issued=1)
    with pytest.raises(InvalidValue, match="delegate"):
        delegate(OWNER, "nope", issued=1)
    with pytest.raises(InvalidValue, match="expires"):
        delegate(OWNER, DEVICE.pubkey, issued=1, not_before=10, expires=5)
    with pytest.raises(InvalidValue, match="issued"):
        revoke(OWNER, DEVICE.pubkey, issued=-1)


def test_keyring_newest_record_wins_and_revocation_sticks() -> None:
    ring = Keyring()
    d1 = delegate(OWNER, DEVICE.pubkey, issued=1)
    r2 = revoke(OWNER, DEVICE.pubkey, issued=2)
    key = f"/{OWNER.pubkey}/chirp/1"
    assert ring.add_stored(d1.key, d1.to_json())
    assert ring.may_write(DEVICE.pubkey, key, NOW)
    assert ring.add(r2)
    assert ring.is_revoked(OWNER.pubkey, DEVICE.pubkey)
    assert not ring.add(d1)  # replaying the older delegation changes nothing
    assert not ring.may_write(DEVICE.pubkey, key, NOW)
    assert not ring.add(delegate(OWNER, DEVICE.pubkey, issued=2))  # a tie goes to the revocation
    assert ring.add(delegate(OWNER, DEVICE.pubkey, issued=3))  # re-delegation needs a newer record
    assert ring.may_write(DEVICE.pubkey, key, NOW)
    assert len(ring) == 1


def test_keyring_owner_and_strangers() -> None:
    ring = Keyring()
    assert ring.may_write(OWNER.pubkey, f"/{OWNER.pubkey}/x")
    assert not ring.may_write(DEVICE.pubkey, f"/{OWNER.pubkey}/x")
    reason = ring.why_not(DEVICE.pubkey, f"/{OWNER.pubkey}/x")
    assert reason is not None and "no delegation" in reason
