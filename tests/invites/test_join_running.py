"""Issue 13: ``statebus join LINK`` while the node runs. The CLI hands the link to the running node (its
run file says where it listens, the owner token authenticates), the node checks it, fetches the app
with its progress streamed back, waits for the consent given on the command line, joins the inviter's
DHT without a restart, installs, follows, and replicates; a bad link against a running node is one
line and changes nothing in its store."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from statebus.server import Cluster
from statebus.server.runfile import remove_run_file, write_run_file
from tests.federation.support import has, live, wait_until
from tests.invites.support import cli, install_guestbook, start_joined
from tests.invites.test_bad_links import tamper

pytestmark = pytest.mark.anyio


async def test_a_running_node_joins_with_a_link(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = await cluster.add("a")
    app = await install_guestbook(a, tmp_path / "gb")
    await a.node.save("/~/guestbook/entries/1", {"name": "ann", "text": "first"})
    argv = ["invite", "--app", "guestbook", "--json", "--data", str(a.settings.data_dir), "--url", a.url]
    assert await cli(*argv) == 0
    made = json.loads(capsys.readouterr().out)

    friend = tmp_path / "friend"
    j = await start_joined(friend)  # a node of its own, in no DHT of the inviter's
    write_run_file(friend, j.url)  # as `statebus serve` does: the CLI finds the running node
    try:
        assert j.directory is not None and j.directory.dht_name != "devnet-inv"
        seq = j.node.seq
        assert await cli("join", tamper(made["link"]), "--yes", "--data", str(friend)) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "signature does not verify" in err, err
        assert j.node.seq == seq and not (friend / "dht.json").exists()  # the bad link changed nothing

        assert await cli("join", made["link"], "--yes", "--data", str(friend)) == 0
        out = capsys.readouterr()
        assert f"the node at {j.url} joined with invite {made['id']} from {a.pubkey} as {j.pubkey}" in out.out
        assert f"installed guestbook 1.0.0 ({app.bundle_hash[:16]}" in out.out
        assert "read   your guestbook/" in out.err  # the permissions were shown
        assert j.directory.dht_name == "devnet-inv" and (friend / "dht.json").exists()  # in, no restart
        assert j.server.statebus_app.state.app_registry.names() == ["guestbook"]
        entry = f"/{a.pubkey}/guestbook/entries/"
        await wait_until(lambda: has(j, entry + "1", {"name": "ann", "text": "first"}), what="the backlog")
        await wait_until(lambda: live(j), what="a live follow")
        await a.node.save("/~/guestbook/entries/2", {"name": "ann", "text": "second"})
        await wait_until(lambda: has(j, entry + "2", {"name": "ann", "text": "second"}), what="a live entry")
        record = await j.directory.resolve(a.pubkey)  # the inviter is found through the new DHT
        assert record is not None and a.url in record.addrs
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {j.token}"}) as http:
            joins = (await http.get(f"{j.url}/.well-known/statebus/invites/joins")).json()["joins"]
            dht = (await http.get(f"{j.url}/.well-known/statebus/dht")).json()
        assert [(x["id"], x["app"], x["state"]) for x in joins] == [(made["id"], "guestbook", "joined")]
        assert dht["dht"] == "devnet-inv" and dht["record"]["addrs"] == [j.url], dht
        assert "secret" not in json.dumps(joins) + out.out + out.err
    finally:
        remove_run_file(friend)
        await j.stop()
    rec = a.node.fetch(f"/~/.invites/{made['id']}").value
    assert rec["used"] == 1 and [x["pubkey"] for x in rec["joined"]] == [j.pubkey]
