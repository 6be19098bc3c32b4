"""AccessPolicy on a real bus: loaded from the store, kept current by writes, delegations followed."""

from __future__ import annotations

from statebus.access.acl import rule_key
from statebus.access.policy import AccessPolicy
from statebus.bus import Bus
from statebus.identity import Identity, delegate, revoke
from statebus.storage.memory import MemoryStorage


def test_policy_loads_rules_and_follows_changes() -> None:
    owner = Identity.generate()
    o = owner.pubkey
    alice = Identity.generate().pubkey
    bus = Bus(MemoryStorage(), local=o)
    bus.save(rule_key(o, "chirp"), {"read": "public", "write": ["@writers"]})
    bus.flush()
    policy = AccessPolicy(bus, o)
    seen: list[AccessPolicy] = []
    policy.listen(seen.append)
    assert policy.may_read(None, f"/{o}/chirp/1")
    assert not policy.may_write(alice, f"/{o}/chirp/1")
    bus.save(rule_key(o, ".lists/writers"), [alice])
    assert policy.may_write(alice, f"/{o}/chirp/1") and seen == [policy]
    bus.delete(rule_key(o, "chirp"))
    assert not policy.may_read(None, f"/{o}/chirp/1") and len(seen) == 2
    assert policy.may_read(None, f"/{o}/public/x") and policy.may_list(None, f"/{o}/public/")
    # a new policy over the same store sees the same state
    bus.flush()
    again = AccessPolicy(bus, o)
    assert again.rules.lists == policy.rules.lists and again.rules.rules == policy.rules.rules
    policy.close()
    bus.save(rule_key(o, ".deny"), [alice])
    assert len(seen) == 2 and again.rules.deny == {alice}


def test_delegates_read_and_write_in_scope_until_revoked() -> None:
    owner = Identity.generate()
    o = owner.pubkey
    phone = Identity.generate().pubkey
    bus = Bus(MemoryStorage(), local=o)
    policy = AccessPolicy(bus, o)
    rec = delegate(owner, phone, [f"/{o}/chirp/"], issued=1)
    bus.save(rec.key, rec.to_json())
    assert policy.may_write(phone, f"/{o}/chirp/1") and policy.may_read(phone, f"/{o}/chirp/1")
    assert policy.may_list(phone, f"/{o}/chirp/") and not policy.may_list(phone, f"/{o}/")
    assert not policy.may_write(phone, f"/{o}/notes/1")
    assert not policy.may_write(phone, rec.key)
    bus.save(rec.key, revoke(owner, phone, issued=2).to_json())
    assert not policy.may_write(phone, f"/{o}/chirp/1")
    # an old delegation replayed over the revocation does not bring the rights back
    bus.save(rec.key, rec.to_json())
    assert not policy.may_write(phone, f"/{o}/chirp/1")
    # deleting the record: the delegate has no rights at all
    bus.save(rec.key, delegate(owner, phone, [f"/{o}/chirp/"], issued=3).to_json())
    assert policy.may_write(phone, f"/{o}/chirp/1")
    bus.delete(rec.key)
    assert not policy.may_write(phone, f"/{o}/chirp/1")
    # an invalid record is ignored (logged), not fatal
    bus.save(f"/{o}/.keys/{phone}", {"type": "nonsense"})
    assert not policy.may_write(phone, f"/{o}/chirp/1")


def test_expired_delegation_by_clock() -> None:
    owner = Identity.generate()
    o = owner.pubkey
    app = Identity.generate().pubkey
    now = [1000.0]
    bus = Bus(MemoryStorage(), local=o)
    policy = AccessPolicy(bus, o, clock=lambda: now[0])
    bus.save(f"/{o}/.keys/{app}", delegate(owner, app, None, issued=1, expires=2000).to_json())
    assert policy.may_write(app, f"/{o}/x")
    now[0] = 2000.0
    assert not policy.may_write(app, f"/{o}/x")
