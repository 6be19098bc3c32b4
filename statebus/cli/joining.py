"""Joining with an invite: the part of ``statebus join`` and ``statebus serve --join`` that loads the
node stack (imported only by those commands, so the other commands start quickly).

Rules (those of :mod:`statebus.cli.invites`):
    1. A refused link writes nothing in the data folder.
    2. A join that fails while writing is undone and keeps the identity; the same command finishes it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from statebus.apps.bundle import Bundle
from statebus.apps.manifest import permission_lines
from statebus.apps.registry import AppRegistry
from statebus.cli.progress import Bar
from statebus.config import Settings
from statebus.errors import CliError, InvalidInvite
from statebus.identity import Identity, keystore
from statebus.identity.keys import identity_from_mnemonic, new_mnemonic
from statebus.invites.apply import apply_join
from statebus.invites.join import Inviter
from statebus.invites.membership import read_membership
from statebus.invites.payload import Invite, parse_link
from statebus.server.assembly import STORE_FILE, open_node
from statebus.server.runfile import running_url


def _consent(bundle: Bundle, yes: bool) -> None:
    m = bundle.manifest
    sys.stderr.write(f"{m.name} {m.version} by {m.author}\n")
    if m.description:
        sys.stderr.write(f"  {m.description}\n")
    sys.stderr.write(
        f"  bundle sha256 {bundle.hash} ({bundle.size} bytes), signed by {bundle.signature.signer}\n"
    )
    sys.stderr.write("It asks to:\n" + "".join(line + "\n" for line in permission_lines(m.permissions)))
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(
            "install asks for your consent: run it in a terminal, or pass --yes to accept these permissions"
        )
    sys.stderr.write(f"Install {m.name} {m.version} with these permissions and join? [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CliError("not joined: you did not consent")


def join(link: str, settings: Settings, *, yes: bool, now: float | None = None) -> dict[str, Any]:
    """Join with ``link`` into the data folder of ``settings`` (every rule above); returns a summary."""
    old = os.umask(0o077)  # the data folder is private to the user, as `statebus serve` makes it
    try:
        return _join(link, settings, yes=yes, now=now)
    finally:
        os.umask(old)


def _join(link: str, settings: Settings, *, yes: bool, now: float | None) -> dict[str, Any]:
    invite = parse_link(link, time.time() if now is None else now)
    data = Path(settings.data_dir)
    if running_url(data) is not None:
        raise CliError(
            f"a node is running on {data}: stop it first (or start a new node with `statebus serve --join`)"
        )
    identity: Identity | None = keystore.load(data) if keystore.exists(data) else None
    if identity is not None and identity.pubkey == invite.by:
        raise InvalidInvite("this is this node's own invite")
    _check_dht(invite, settings)
    phrase = None
    if identity is None:
        phrase = new_mnemonic()
        identity = identity_from_mnemonic(phrase)
    inviter = Inviter(invite, identity.pubkey)
    status = inviter.check()
    bundle = None
    if invite.app is not None:
        registry_app = _installed(settings, invite) if phrase is None else None
        if registry_app is None:
            bundle = inviter.fetch_bundle(settings.app_bundle_max_bytes, Bar(f"fetching {invite.app.name}"))
            _consent(bundle, yes)
    answer = inviter.redeem(identity)
    if phrase is not None:  # the identity goes on disk first: the inviter knows it now (rule 2)
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        keystore.recover(data, phrase)
        keystore.write_private_file(keystore.phrase_file(data), (phrase + "\n").encode())
    asyncio.run(_write(settings, invite, answer, bundle))
    return {"invite": invite, "status": status, "answer": answer, "bundle": bundle, "pubkey": identity.pubkey}


def _check_dht(invite: Invite, settings: Settings) -> None:
    """A link for another DHT than the one this node is in is refused (rule 1)."""
    member = read_membership(settings.data_dir)
    mine = (
        member.name if member is not None else settings.dht_name if settings.dht_secret is not None else None
    )
    if invite.dht is not None and mine is not None and invite.dht.name != mine:
        raise InvalidInvite(f"this invite is for the DHT {invite.dht.name!r}; this node is in {mine!r}")


def _installed(settings: Settings, invite: Invite) -> Bundle | None:
    """The invite's app when this node already runs that very bundle (a join run again)."""
    assert invite.app is not None
    member_node = None
    if not (Path(settings.data_dir) / STORE_FILE).exists():
        return None
    try:
        _, member_node = open_node(settings)
        app = AppRegistry(settings.data_dir, member_node, max_bytes=settings.app_bundle_max_bytes).get(
            invite.app.name
        )
        return app.bundle if app is not None and app.bundle_hash == invite.app.hash else None
    finally:
        if member_node is not None:
            asyncio.run(member_node.aclose())


async def _write(settings: Settings, invite: Invite, answer: dict[str, Any], bundle: Bundle | None) -> None:
    """Write what the join brings into the stopped node's data folder (:func:`apply_join`, rule 2)."""
    _, node = open_node(settings)
    try:
        registry = AppRegistry(settings.data_dir, node, max_bytes=settings.app_bundle_max_bytes)
        await apply_join(node, registry, settings.data_dir, invite, answer, bundle)
    finally:
        await node.aclose()


def print_joined(result: dict[str, Any]) -> None:
    invite: Invite = result["invite"]
    answer = result["answer"]
    lines = [f"joined with invite {invite.id} from {invite.by} as {result['pubkey']}"]
    if answer.get("dht"):
        lines.append(f"  DHT {answer['dht']['name']!r}, first peer {', '.join(answer['dht']['peers'])}")
    bundle = result["bundle"]
    if bundle is not None:
        lines.append(f"  installed {bundle.manifest.name} {bundle.manifest.version} ({bundle.hash[:16]}…)")
    for p in answer.get("follow", []):
        lines.append(f"  following {p}")
    if answer.get("back"):
        lines.append("  the inviter follows you back")
    lines.append(f"  invite used {answer['used']} of {answer['uses']} times")
    print("\n".join(lines))


__all__ = ["Bar", "join", "print_joined"]
