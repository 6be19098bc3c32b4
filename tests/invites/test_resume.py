"""Issue 13: a join that fails half way is undone and finished by the same command (no second use
spent); an invite that says so makes the inviter follow the new user back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import statebus.invites.apply as joining  # the steps a join writes (stopped or running node)
from statebus.config import Settings
from statebus.errors import InvalidValue
from statebus.server import Cluster
from statebus.server.running import invite_addresses
from tests.federation.support import has, wait_until
from tests.invites.support import cli, install_guestbook, start_joined

pytestmark = pytest.mark.anyio


async def test_a_failed_join_is_undone_and_the_same_command_finishes_it(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await cluster.add("a")
    await install_guestbook(a, tmp_path / "gb")
    assert (
        await cli(
            "invite", "--app", "guestbook", "--no-qr", "--data", str(a.settings.data_dir), "--url", a.url
        )
        == 0
    )
    out = capsys.readouterr().out
    link = next(line for line in out.splitlines() if "/join#" in line)
    friend = tmp_path / "friend"

    def broken_follow(*args: object) -> None:  # the follow fails after the app was installed
        raise InvalidValue("the disk said no")

    monkeypatch.setattr(joining, "new_follow", broken_follow)
    assert await cli("join", link, "--yes", "--data", str(friend)) == 1
    err = capsys.readouterr().err
    assert "the join stopped at following the inviter: the disk said no; what it wrote was undone" in err
    assert not (friend / "dht.json").exists() and (friend / "identity").is_dir()  # the identity stays
    j = await start_joined(friend, dht_name="elsewhere")  # nothing else is left: no app, no follow
    try:
        assert j.server.statebus_app.state.app_registry.names() == []
        assert j.node.children("/~/.follows/") == []
    finally:
        await j.stop()

    monkeypatch.undo()
    assert await cli("join", link, "--yes", "--data", str(friend)) == 0
    assert "invite used 1 of 1 times" in capsys.readouterr().out  # the same use, not a second one
    assert (friend / "dht.json").exists()


async def test_a_follow_back_invite_makes_the_inviter_follow_the_new_user(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = await cluster.add("a")
    await install_guestbook(a, tmp_path / "gb")
    argv = ["invite", "--app", "guestbook", "--follow-back", "--json", "--data", str(a.settings.data_dir)]
    assert await cli(*argv, "--url", a.url) == 0
    made = json.loads(capsys.readouterr().out)
    friend = tmp_path / "friend"
    assert await cli("join", made["link"], "--yes", "--data", str(friend)) == 0
    assert "the inviter follows you back" in capsys.readouterr().out
    j = await start_joined(friend)
    try:
        await j.node.save("/~/guestbook/entries/1", {"name": "bo", "text": "hello back"})
        key = f"/{j.pubkey}/guestbook/entries/1"
        await wait_until(lambda: has(a, key, {"name": "bo", "text": "hello back"}), what="the follow-back")
    finally:
        await j.stop()


def test_a_node_on_every_interface_invites_with_its_public_origin() -> None:
    """A node bound to 0.0.0.0 gives its public origins, never 0.0.0.0 (none: invite refuses)."""
    wild = Settings(host="0.0.0.0", public_origins=("https://node.example.org",))
    assert invite_addresses(wild, "http://0.0.0.0:8765") == (
        ("https://node.example.org",),
        "node.example.org",
    )
    assert invite_addresses(Settings(host="0.0.0.0"), "http://0.0.0.0:8765") == ((), "")
    local = Settings(host="10.200.0.1")
    assert invite_addresses(local, "http://10.200.0.1:8765") == (("http://10.200.0.1:8765",), "10.200.0.1")
    assert invite_addresses(Settings(host="::1"), "http://[::1]:1")[1] == "[::1]"


async def test_a_second_invite_upgrades_the_app_to_the_bundle_it_names(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = await cluster.add("a")
    await install_guestbook(a, tmp_path / "gb")
    argv = ["invite", "--app", "guestbook", "--json", "--data", str(a.settings.data_dir), "--url", a.url]
    assert await cli(*argv) == 0
    first = json.loads(capsys.readouterr().out)
    friend = tmp_path / "friend"
    assert await cli("join", first["link"], "--yes", "--data", str(friend)) == 0
    assert "installed guestbook 1.0.0" in capsys.readouterr().out
    newer = await install_guestbook(a, tmp_path / "gb2", version="1.0.1")
    assert await cli(*argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert await cli("join", second["link"], "--yes", "--data", str(friend)) == 0
    assert "installed guestbook 1.0.1" in capsys.readouterr().out
    j = await start_joined(friend)
    try:
        app = j.server.statebus_app.state.app_registry.get("guestbook")
        assert app is not None and app.bundle_hash == newer.bundle_hash
    finally:
        await j.stop()
