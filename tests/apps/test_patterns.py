from __future__ import annotations

import pytest

from statebus.apps.patterns import Grants, Pattern, split_key
from statebus.apps.spec import AppSpec
from statebus.errors import InvalidValue

NS = "a" * 52


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("guestbook/entries/*", "guestbook/entries/42", True),
        ("guestbook/entries/*", "guestbook/entries/42/x", False),
        ("guestbook/entries/*", "guestbook/entries", False),
        ("guestbook/", "guestbook/a/b", True),
        ("guestbook/", "guestbook", False),
        ("guestbook/count", "guestbook/count", True),
        ("guestbook/count", "guestbook/countx", False),
        ("*/x", "a/x", True),
        ("guestbook/", "guestbookx/a", False),
    ],
)
def test_matches(pattern: str, path: str, expected: bool) -> None:
    assert Pattern.parse(pattern).matches(path) is expected


@pytest.mark.parametrize(
    "bad", ["", "/abs", "~/x", "a/**", "a/../b", "a//b", "a/b*", "./a", "a\\b", "a/\x01"]
)
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(InvalidValue):
        Pattern.parse(bad)


def test_grants() -> None:
    g = Grants.from_json({"read": ["gb/"], "write": ["gb/entries/*"], "read_others": ["gb/pub/"]})
    assert g.can_read(True, "gb/x") and g.can_read(True, "gb/entries/1")
    assert not g.can_read(True, "other/x")
    assert g.can_read(False, "gb/pub/1") and not g.can_read(False, "gb/x")
    assert g.can_write("gb/entries/1") and not g.can_write("gb/x")
    assert Grants.from_json(g.to_json()) == g
    assert g.covers(Grants.parse(read=["gb/"])) and not g.covers(Grants.parse(write=["gb/"]))
    with pytest.raises(InvalidValue):
        Grants.from_json({"read": "gb/"})
    with pytest.raises(InvalidValue):
        Grants.from_json({"admin": []})


def test_split_key() -> None:
    assert split_key(f"/{NS}/gb/entries/1") == (NS, "gb/entries/1")


def test_spec_checks_its_patterns() -> None:
    g = Grants.parse(read=["gb/"], write=["gb/"])
    ok = AppSpec("gb", "1.0.0", "h", NS, g, "function v(){}", validate={"gb/entries/*": "v"})
    assert ok.validate == {"gb/entries/*": "v"}
    with pytest.raises(InvalidValue, match="outside its write grant"):
        AppSpec("gb", "1.0.0", "h", NS, g, "function v(){}", validate={"other/*": "v"})
    with pytest.raises(InvalidValue, match="name"):
        AppSpec("Bad", "1.0.0", "h", NS, g)
    with pytest.raises(InvalidValue, match="plain function"):
        AppSpec("gb", "1.0.0", "h", NS, g, "x", validate={"gb/*": "a.b"})
    with pytest.raises(InvalidValue, match="need a handlers source"):
        AppSpec("gb", "1.0.0", "h", NS, g, None, validate={"gb/*": "v"})


def test_send_grants_only_name_other_namespaces_notices() -> None:
    g = Grants.from_json({"read": ["chirp/"], "write": ["chirp/"], "send": ["inbox/chirp/"]})
    assert g.can_send("inbox/chirp/alice/reply-1") and not g.can_send("chirp/posts/1")
    assert not g.can_write("inbox/chirp/alice/reply-1")  # sending writes nothing here
    assert g.to_json()["send"] == ["inbox/chirp/"]
    assert "send" not in Grants.parse(read=["a/"]).to_json()  # grants stored before send read the same
    assert not Grants.parse(read=["chirp/"], write=["chirp/"]).covers(g)  # an upgrade asking send is new
    with pytest.raises(InvalidValue, match="unknown field"):
        Grants.from_json({"sends": ["inbox/"]})
