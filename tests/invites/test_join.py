"""Issue 13: a devnet node invites a node that is not in its DHT. The new node starts from an empty
data folder, joins with the link, and ends up in the DHT with the guestbook installed, the inviter's
entries replicated and a new entry arriving live; the inviter records who joined."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from statebus.invites.membership import read_membership
from statebus.server import Cluster
from tests.federation.support import has, live, wait_until
from tests.invites.support import cli, fingerprint, install_guestbook, start_joined

pytestmark = pytest.mark.anyio


async def test_a_friend_joins_with_a_link_and_sees_new_entries_live(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = await cluster.add("a")
    await cluster.add("b")  # a devnet of two: the joiner is in neither's DHT yet
    app = await install_guestbook(a, tmp_path / "gb")
    await a.node.save("/~/guestbook/entries/1", {"name": "ann", "text": "first"})
    assert (
        await cli(
            "invite",
            "--app",
            "guestbook",
            "--uses",
            "2",
            "--note",
            "hi",
            "--json",
            "--data",
            str(a.settings.data_dir),
            "--url",
            a.url,
        )
        == 0
    )
    made = json.loads(capsys.readouterr().out)
    assert made["link"] == f"{a.url}/join#{made['payload']}" and made["app"] == "guestbook"

    async with httpx.AsyncClient() as http:
        page = await http.get(f"{a.url}/join")
    assert page.status_code == 200 and "statebus serve --join" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]

    joiner = tmp_path / "friend"
    assert await cli("join", made["link"], "--yes", "--data", str(joiner)) == 0
    out = capsys.readouterr()
    assert f"joined with invite {made['id']} from {a.pubkey}" in out.out
    assert f"installed guestbook 1.0.0 ({app.bundle_hash[:16]}" in out.out
    assert f"following /{a.pubkey}/guestbook/" in out.out
    assert "read   your guestbook/" in out.err  # the permissions were shown
    member = read_membership(joiner)
    assert member is not None and member.name == "devnet-inv"
    assert (joiner / "dht.json").stat().st_mode & 0o777 == 0o600
    assert (joiner / "store.sqlite3").stat().st_mode & 0o077 == 0  # private, as `statebus serve` makes it

    j = await start_joined(joiner)
    try:
        assert j.directory is not None and j.directory.dht_name == "devnet-inv"
        assert j.server.statebus_app.state.app_registry.names() == ["guestbook"]
        await j.stop()  # the same command again spends no use and installs nothing new (resumable)
        before = fingerprint(joiner / "blobs")
        assert await cli("join", made["link"], "--yes", "--data", str(joiner)) == 0
        assert "invite used 1 of 2 times" in capsys.readouterr().out
        assert fingerprint(joiner / "blobs") == before
        j = await start_joined(joiner)
        entry = f"/{a.pubkey}/guestbook/entries/"
        await wait_until(lambda: has(j, entry + "1", {"name": "ann", "text": "first"}), what="the backlog")
        await wait_until(lambda: live(j), what="a live follow")
        await a.node.save("/~/guestbook/entries/2", {"name": "ann", "text": "second"})
        await wait_until(lambda: has(j, entry + "2", {"name": "ann", "text": "second"}), what="a live entry")
        record = await j.directory.resolve(a.pubkey)  # the inviter is found through the DHT now
        assert record is not None and a.url in record.addrs
        # rotating the invite secret stops the link, and the member stays in the DHT
        assert await cli("invite", "rotate", "--data", str(a.settings.data_dir), "--url", a.url) == 0
        assert await cli("join", made["link"], "--yes", "--data", str(tmp_path / "late")) == 1
        assert "rotated" in capsys.readouterr().err and not (tmp_path / "late").exists()
        record = await j.directory.resolve(a.pubkey)
        assert record is not None and a.url in record.addrs
    finally:
        await j.stop()
    rec = a.node.fetch(f"/~/.invites/{made['id']}").value
    assert rec["used"] == 1 and [x["pubkey"] for x in rec["joined"]] == [j.pubkey]
