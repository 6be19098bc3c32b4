"""Issue 13: every bad link is refused with one line, and the joining node's data folder has nothing
new (hashed before and after); an n-use invite admits exactly n joiners even when joins race."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from statebus.invites.payload import PREFIX
from statebus.server import Cluster, RunningNode
from tests.invites.support import cli, fingerprint, install_guestbook

pytestmark = pytest.mark.anyio


async def invite(node: RunningNode, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, str]:
    argv = ["invite", *args, "--json", "--data", str(node.settings.data_dir), "--url", node.url]
    assert await cli(*argv) == 0
    made: dict[str, str] = json.loads(capsys.readouterr().out)
    return made


async def refused(folder: Path, link: str, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    """Join with ``link``: it must fail with one line and leave ``folder`` exactly as it was."""
    before = fingerprint(folder)
    assert await cli("join", link, "--yes", "--data", str(folder), *extra) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("statebus: error: "), err
    assert fingerprint(folder) == before
    return err


def tamper(link: str) -> str:
    """The signed body changed: ``uses`` 1 became 9 (the signature kept)."""
    head, payload = link.split("#")
    body, sig = payload[len(PREFIX) :].split(".")
    doc = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).replace(b'"uses":1', b'"uses":9')
    return f"{head}#{PREFIX}{base64.urlsafe_b64encode(doc).decode().rstrip('=')}.{sig}"


def flip(link: str) -> str:
    """One character of the payload changed."""
    i = len(link) - 30
    return link[:i] + ("A" if link[i] != "A" else "B") + link[i + 1 :]


async def test_every_bad_link_is_refused_and_writes_nothing(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = await cluster.add("a")
    await install_guestbook(a, tmp_path / "gb")
    new = tmp_path / "new"  # an empty data folder: it must stay absent
    ok = await invite(a, capsys, "--app", "guestbook")

    assert "signature does not verify" in await refused(new, tamper(ok["link"]), capsys)
    assert "signed it" in await refused(new, flip(ok["link"]), capsys)
    assert "not a statebus invite" in await refused(new, f"{a.url}/join#nothing", capsys)

    short = await invite(a, capsys, "--expires", "1s")
    await asyncio.sleep(1.1)
    assert "expired" in await refused(new, short["link"], capsys)

    gone = await invite(a, capsys)
    assert await cli("invite", "revoke", gone["id"], "--data", str(a.settings.data_dir), "--url", a.url) == 0
    assert "revoked" in capsys.readouterr().out
    assert "was revoked by its inviter" in await refused(new, gone["link"], capsys)

    config = tmp_path / "other.toml"
    config.write_text('dht_name = "elsewhere"\ndht_secret = "x"\n')
    err = await refused(new, ok["payload"], capsys, "--config", str(config))
    assert "for the DHT 'devnet-inv'; this node is in 'elsewhere'" in err

    c = await cluster.add("c")
    away = await invite(c, capsys)
    await cluster.stop("c")
    assert "cannot reach the inviter" in await refused(new, away["link"], capsys)

    stale = await invite(a, capsys, "--app", "guestbook")
    await install_guestbook(a, tmp_path / "gb2", version="1.0.1")  # the inviter runs another bundle now
    assert "the invite names" in await refused(new, stale["link"], capsys)

    old = await invite(a, capsys)
    assert await cli("invite", "rotate", "--data", str(a.settings.data_dir), "--url", a.url) == 0
    capsys.readouterr()
    assert "rotated" in await refused(new, old["link"], capsys)
    assert not new.exists()

    fresh = await invite(a, capsys)  # a link made after the rotation works
    assert await cli("join", fresh["link"], "--yes", "--data", str(new)) == 0
    capsys.readouterr()
    assert "is spent: 1 of 1 uses taken" in await refused(tmp_path / "late", fresh["link"], capsys)


async def test_an_n_use_invite_admits_n_joiners_when_joins_race(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = await cluster.add("a")
    await install_guestbook(a, tmp_path / "gb")
    made = await invite(a, capsys, "--app", "guestbook", "--uses", "2")
    folders = [tmp_path / f"j{i}" for i in range(4)]
    codes = await asyncio.gather(*(cli("join", made["link"], "--yes", "--data", str(f)) for f in folders))
    err = capsys.readouterr().err
    assert sorted(codes) == [0, 0, 1, 1], err
    assert err.count("is spent: 2 of 2 uses taken") == 2
    refused_folders = [f for f, code in zip(folders, codes, strict=True) if code == 1]
    assert all(fingerprint(f) == {} for f in refused_folders)
    record = a.node.fetch(f"/~/.invites/{made['id']}").value
    assert record["used"] == 2 and len(record["joined"]) == 2
