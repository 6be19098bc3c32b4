"""The invite payload (pure): it round-trips, every changed byte is refused, expiry and durations."""

from __future__ import annotations

import hashlib
import time

import pytest

from statebus.cli.joining import Bar
from statebus.errors import InvalidInvite, InvalidValue, InviteRefused
from statebus.identity import Identity
from statebus.invites.payload import AppRef, DhtTicket, Invite, new_id, parse_duration, parse_link, ticket

ALICE = Identity(hashlib.sha256(b"invite alice").digest())
BOB = Identity(hashlib.sha256(b"invite bob").digest())


def make(**changes: object) -> Invite:
    fields: dict[str, object] = {
        "id": new_id(),
        "by": ALICE.pubkey,
        "addrs": ("http://10.0.0.1:8765",),
        "exp": 2_000_000_000,
        "uses": 2,
        "dht": DhtTicket("friends", "10.0.0.1:8766", ticket(b"k" * 32, "x")),
        "app": AppRef("guestbook", "a" * 64, 20480, f"/{ALICE.pubkey}/.apps/guestbook"),
        "note": "hi",
    }
    fields.update(changes)
    return Invite(**fields)  # type: ignore[arg-type]


def test_a_payload_round_trips_through_a_link() -> None:
    invite = make()
    text = invite.encode(ALICE)
    back = parse_link(invite.link(text), now=time.time())
    assert back == invite and back.text == text
    assert invite.link(text) == f"http://10.0.0.1:8765/join#{text}"
    assert parse_link(text, now=0) == invite  # the bare payload too


def test_every_changed_character_is_refused() -> None:
    text = make().encode(ALICE)
    for i in range(5, len(text)):
        if text[i] == ".":
            continue
        changed = text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1 :]
        with pytest.raises(InvalidInvite):
            parse_link(changed, now=0)


def test_another_spelling_of_the_same_bytes_is_refused() -> None:
    """The signature's last base64url character carries 4 unused bits: setting one decodes to the same
    bytes, and is still refused (one payload, one spelling)."""
    text = make().encode(ALICE)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    other = alphabet[alphabet.index(text[-1]) ^ 1]
    with pytest.raises(InvalidInvite, match="not the inviter's encoding"):
        parse_link(text[:-1] + other, now=0)


def test_only_the_inviter_signs_and_expired_is_refused() -> None:
    with pytest.raises(InvalidInvite, match="signed by its inviter"):
        make().encode(BOB)
    text = make(exp=1000).encode(ALICE)
    with pytest.raises(InviteRefused, match="expired"):
        parse_link(text, now=5000)


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90s", "30m", "12h", "7d", "2w", "15")] == [
        90,
        1800,
        43200,
        604800,
        1209600,
        15,
    ]
    for bad in ("", "0", "-1h", "7 days", "1y"):
        with pytest.raises(InvalidValue):
            parse_duration(bad)


def test_progress_shows_after_a_moment(capsys: pytest.CaptureFixture[str]) -> None:
    quick = Bar("fetching quick")
    quick(10240, 20480)
    quick(20480, 20480)
    assert capsys.readouterr().err == ""  # a transfer that took no time shows nothing
    slow = Bar("fetching slow")
    slow.start -= 1.0
    slow(10240, 20480)
    slow(20480, 20480)
    err = capsys.readouterr().err
    assert "fetching slow: 10 KiB of 20 KiB (50%)" in err and err.endswith("20 KiB of 20 KiB (100%)\n")


def test_the_cli_names_the_routes_the_node_serves() -> None:
    """The CLI keeps the node stack out of its start-up, so it spells the path itself: the same one."""
    import statebus.cli.invites as cli_invites
    import statebus.invites.routes as routes

    assert cli_invites.INVITES_PATH == routes.INVITES_PATH


def test_invite_options_go_before_or_after_the_action() -> None:
    from statebus.cli import build_parser

    parser = build_parser()
    before = parser.parse_args(["invite", "--url", "http://127.0.0.1:1", "--data", "/d", "list"])
    after = parser.parse_args(["invite", "list", "--url", "http://127.0.0.1:1", "--data", "/d", "--json"])
    assert (before.url, before.data, before.json) == ("http://127.0.0.1:1", "/d", False)
    assert (after.url, after.data, after.json) == ("http://127.0.0.1:1", "/d", True)
