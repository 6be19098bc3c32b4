"""The ACL format and the decisions of AclRules (pure, no bus)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from statebus.access.acl import (
    BUILTIN_PUBLIC,
    CLOSED,
    AclRules,
    Grant,
    acl_prefix,
    check_acl_value,
    parse_grant,
    parse_key_list,
    parse_rule,
    rule_key,
)
from statebus.errors import InvalidKey, InvalidValue
from statebus.keys import encode_pubkey

OWNER = encode_pubkey(bytes(31) + b"\x01")
ALICE = encode_pubkey(bytes(31) + b"\x02")
BOB = encode_pubkey(bytes(31) + b"\x03")
CAROL = encode_pubkey(bytes(31) + b"\x04")


def k(path: str) -> str:
    return f"/{OWNER}/{path}"


def rules_with(**items: object) -> AclRules:
    rules = AclRules(OWNER)
    for path, value in items.items():
        rules.update(rule_key(OWNER, path.replace("__", "/").replace("_dot_", ".")), value)
    return rules


def test_grant_parsing_and_round_trip() -> None:
    assert parse_grant("public") == Grant(public=True)
    assert parse_grant("signed") == Grant(signed=True)
    assert parse_grant("owner") == Grant()
    g = parse_grant([ALICE, "@friends", "signed", ALICE, "@friends"])
    assert g.keys == {ALICE} and g.lists == ("friends",) and g.signed
    assert parse_grant(g.to_json()) == g
    for bad in ("everyone", 3, None, {"a": 1}, ["nobody"], ["@"], ["@a/b"], [ALICE.upper()]):
        with pytest.raises(InvalidValue):
            parse_grant(bad)


def test_rule_parsing() -> None:
    rule = parse_rule({"read": "public"})
    assert rule.read.public and rule.write == Grant() and rule.list == rule.read
    rule = parse_rule({"read": [ALICE], "list": "owner", "write": ["@team"]})
    assert rule.list == Grant() and rule.write.lists == ("team",)
    assert parse_rule(rule.to_json()) == rule
    assert parse_rule({}) == CLOSED
    for bad in ([], "public", {"reed": "public"}, {"read": "x"}):
        with pytest.raises(InvalidValue):
            parse_rule(bad)


def test_key_lists() -> None:
    assert parse_key_list([ALICE, BOB]) == {ALICE, BOB}
    for bad in ({}, [ALICE, 1], ["@x"], "x"):
        with pytest.raises(InvalidValue):
            parse_key_list(bad)


def test_check_acl_value_by_key() -> None:
    check_acl_value(rule_key(OWNER, "chirp/posts"), {"read": "public"})
    check_acl_value(rule_key(OWNER, ".default"), {"read": "signed"})
    check_acl_value(rule_key(OWNER, ".deny"), [ALICE])
    check_acl_value(rule_key(OWNER, ".allow"), [])
    check_acl_value(rule_key(OWNER, ".host"), [BOB])
    check_acl_value(rule_key(OWNER, ".lists/friends"), [ALICE, BOB])
    with pytest.raises(InvalidValue):
        check_acl_value(rule_key(OWNER, ".deny"), {"read": "public"})
    with pytest.raises(InvalidValue):
        check_acl_value(rule_key(OWNER, "chirp"), [ALICE])
    with pytest.raises(InvalidKey):
        check_acl_value(rule_key(OWNER, ".secret"), {"read": "public"})
    with pytest.raises(InvalidKey):
        check_acl_value(rule_key(OWNER, ".lists/a/b"), [ALICE])


def test_private_by_default_and_owner_always() -> None:
    rules = AclRules(OWNER)
    for action in ("read", "write", "list"):
        assert rules.decide(action, OWNER, k("x")) is None
        assert rules.decide(action, OWNER, k(".acl/x")) is None
        assert rules.decide(action, ALICE, k("x")) is not None
        assert rules.decide(action, None, k("x")) is not None
    reason = rules.decide("read", None, k("x"))
    assert reason is not None and "private by default" in reason


def test_most_specific_rule_wins() -> None:
    rules = rules_with(
        _dot_default={"read": "signed"},
        chirp={"read": "public", "write": [ALICE]},
        chirp__drafts={"read": "owner"},
    )
    assert rules.decide("read", None, k("chirp/1")) is None
    assert rules.decide("read", None, k("chirp")) is None
    assert rules.decide("read", None, k("chirp/")) is None
    assert rules.decide("read", BOB, k("chirp/drafts/1")) is not None
    assert rules.decide("read", BOB, k("notes/1")) is None  # .default: signed
    assert rules.decide("read", None, k("notes/1")) is not None
    assert rules.decide("write", ALICE, k("chirp/2")) is None
    assert rules.decide("write", ALICE, k("chirp/drafts/2")) is not None
    assert rules.decide("write", BOB, k("chirp/2")) is not None
    assert rules.rule_for(k("chirp/drafts/x/y"))[0] == "chirp/drafts"
    # removing a rule falls back to the next one up
    rules.update(rule_key(OWNER, "chirp/drafts"), None, exists=False)
    assert rules.decide("read", BOB, k("chirp/drafts/1")) is None


def test_lists_deny_allow() -> None:
    rules = rules_with(
        chirp={"read": ["@friends"], "write": ["@friends", CAROL]},
        _dot_lists__friends=[ALICE, BOB],
    )
    assert rules.decide("read", ALICE, k("chirp/1")) is None
    assert rules.decide("read", CAROL, k("chirp/1")) is not None
    assert rules.decide("write", CAROL, k("chirp/1")) is None
    rules.update(rule_key(OWNER, ".deny"), [BOB])
    reason = rules.decide("read", BOB, k("chirp/1"))
    assert reason is not None and "deny" in reason
    # deny beats a delegation too, but never the owner
    assert rules.decide("write", BOB, k("chirp/1"), delegate_ok=True) is not None
    rules.update(rule_key(OWNER, ".deny"), [OWNER])
    assert rules.decide("write", OWNER, k("chirp/1")) is None
    # an allow-list: a key not on it is treated as anonymous
    rules.update(rule_key(OWNER, ".allow"), [ALICE])
    assert rules.decide("read", ALICE, k("chirp/1")) is None
    assert rules.decide("write", CAROL, k("chirp/1")) is not None
    rules.update(rule_key(OWNER, ".allow"), None, exists=False)
    assert rules.decide("write", CAROL, k("chirp/1")) is None


def test_who_may_receive_the_rules_themselves() -> None:
    """A relay hands the rules on only to keys they admit somewhere (the built-in public rule aside)."""
    rules = rules_with(team={"read": ["@friends"]}, drafts={"read": "owner", "list": [CAROL]})
    assert rules.admits_somewhere(OWNER) and rules.admits_somewhere(CAROL)
    assert not rules.admits_somewhere(ALICE) and not rules.admits_somewhere(None)
    rules.update(rule_key(OWNER, ".lists/friends"), [ALICE])
    assert rules.admits_somewhere(ALICE) and not rules.admits_somewhere(BOB)
    rules.update(rule_key(OWNER, ".deny"), [ALICE])
    assert not rules.admits_somewhere(ALICE)
    rules.update(rule_key(OWNER, ".allow"), [BOB])  # CAROL now counts as anonymous
    assert not rules.admits_somewhere(CAROL)
    rules.update(rule_key(OWNER, "open"), {"read": "public"})
    assert rules.admits_somewhere(None) and rules.admits_somewhere(CAROL)


def test_reserved_subtrees() -> None:
    rules = rules_with(_dot_default={"read": "public", "write": "signed"})
    assert rules.decide("read", None, k(".acl/chirp")) is not None
    assert rules.decide("list", ALICE, k(".acl/")) is not None
    assert rules.decide("read", None, k(f".keys/{ALICE}")) is None
    assert rules.decide("write", ALICE, k(f".keys/{ALICE}")) is not None
    assert rules.decide("write", ALICE, k(f".keys/{ALICE}"), delegate_ok=True) is not None
    assert rules.decide("write", ALICE, k("x")) is None
    assert rules.decide("write", None, k("x")) is not None  # anonymous clients cannot sign ops
    assert rules.decide("read", ALICE, f"/{BOB}/x") is not None  # another namespace


def test_builtin_public_rule_is_replaced_by_a_stored_one() -> None:
    rules = AclRules(OWNER)
    rules.builtin["public"] = BUILTIN_PUBLIC
    assert rules.decide("read", None, k("public/a")) is None
    assert rules.decide("list", None, k("public/")) is None
    assert rules.decide("write", ALICE, k("public/a")) is not None
    rules.update(rule_key(OWNER, "public"), {"read": [ALICE]})
    assert rules.decide("read", None, k("public/a")) is not None
    assert rules.decide("read", ALICE, k("public/a")) is None


def test_broken_values_fail_closed() -> None:
    rules = rules_with(_dot_default={"read": "public"})
    rules.update(rule_key(OWNER, "chirp"), {"read": "everyone"})
    assert rule_key(OWNER, "chirp") in rules.broken
    assert rules.decide("read", None, k("chirp/1")) is not None
    assert rules.decide("read", None, k("other")) is None
    rules.update(rule_key(OWNER, ".deny"), "garbage")
    assert rules.decide("read", None, k("other")) is not None
    assert rules.decide("read", OWNER, k("other")) is None
    rules.update(rule_key(OWNER, ".deny"), [])
    assert rules.decide("read", None, k("other")) is None
    rules.update(rule_key(OWNER, ".allow"), 7)
    assert rules.allow == frozenset()
    assert acl_prefix(OWNER) == f"/{OWNER}/.acl/"


@given(
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=4),
    st.dictionaries(
        st.sampled_from(["a", "a/b", "a/b/c", "b", ".default"]),
        st.sampled_from(["public", "owner", "signed"]),
    ),
)
def test_most_specific_prefix_property(path: list[str], rule_paths: dict[str, str]) -> None:
    """The decision for a signed reader equals the grant of the longest rule path prefixing the key."""
    rules = AclRules(OWNER)
    for p, who in rule_paths.items():
        rules.update(rule_key(OWNER, p), {"read": who})
    key = k("/".join(path))
    expected = "owner"
    for n in range(len(path), 0, -1):
        if "/".join(path[:n]) in rule_paths:
            expected = rule_paths["/".join(path[:n])]
            break
    else:
        expected = rule_paths.get(".default", "owner")
    assert (rules.decide("read", ALICE, key) is None) == (expected != "owner")
    assert (rules.decide("read", None, key) is None) == (expected == "public")
