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
from statebus.config import Settings
from statebus.errors import CliError, InvalidInvite, StatebusError
from statebus.federation.policy import FOLLOWS, new_follow
from statebus.identity import Identity, keystore
from statebus.identity.keys import identity_from_mnemonic, new_mnemonic
from statebus.invites.join import Inviter
from statebus.invites.ledger import INVITED_LIST, app_subtrees
from statebus.invites.membership import Membership, read_membership, write_membership
from statebus.invites.payload import Invite, parse_link
from statebus.server.assembly import STORE_FILE, open_node
from statebus.server.runfile import running_url

PROGRESS_AFTER = 0.3
"""Seconds a transfer runs before its progress is shown."""


class Bar:
    """Progress of a transfer on stderr, shown once it has run :data:`PROGRESS_AFTER` seconds."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.start = time.monotonic()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if time.monotonic() - self.start < PROGRESS_AFTER and done < total:
            return
        if not self.shown and done >= total and time.monotonic() - self.start < PROGRESS_AFTER:
            return
        self.shown = True
        pct = 100 * done // total if total else 100
        sys.stderr.write(f"\r{self.what}: {done // 1024} KiB of {total // 1024} KiB ({pct}%)")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


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
    """Write the membership, the app, the follows; undo them all if one fails (rule 2)."""
    data = Path(settings.data_dir)
    had_member = read_membership(data)
    _, node = open_node(settings)
    registry = AppRegistry(data, node, max_bytes=settings.app_bundle_max_bytes)
    done: list[str] = []
    step = "the DHT membership"
    try:
        dht = answer.get("dht")
        if dht is not None and had_member is None:
            write_membership(data, Membership(dht["name"], bytes.fromhex(dht["secret"]), tuple(dht["peers"])))
            done.append("membership")
        if bundle is not None:
            step = f"installing {bundle.manifest.name}"
            current = registry.get(bundle.manifest.name)
            if current is None or current.bundle_hash != bundle.hash:  # install, or upgrade to the invite's
                await registry.install(bundle, bundle.manifest.permissions)
                done.append("app" if current is None else "upgraded")
        step = "following the inviter"
        for pattern in answer.get("follow", []):
            f = new_follow(node.local, pattern, tuple(answer.get("addrs", []))[:8])
            await node.save(f"/~/{FOLLOWS}/{f.id}", f.to_json())
            done.append(f"/~/{FOLLOWS}/{f.id}")
        if invite.back and bundle is not None:  # let the inviter read what it follows back
            step = "opening the app's data to the inviter"
            await node.save(f"/~/.acl/.lists/{INVITED_LIST}", [invite.by])
            for p in app_subtrees(bundle.manifest):
                await node.save(f"/~/.acl/{p.strip('/')}", {"read": [f"@{INVITED_LIST}"]})
        await node.save(
            f"/~/.joined/{invite.id}",
            {"by": invite.by, "at": int(time.time()), "dht": (dht or {}).get("name")},
        )
    except (StatebusError, OSError) as exc:
        reason = exc.detail or exc.code if isinstance(exc, StatebusError) else str(exc)
        for item in reversed(done):
            try:
                if item == "membership":
                    (data / "dht.json").unlink(missing_ok=True)
                elif item == "app" and bundle is not None:
                    await registry.remove(bundle.manifest.name)
                elif item == "upgraded":  # an upgrade the owner consented to stays; the rerun keeps it
                    continue
                else:
                    await node.delete(item)
            except StatebusError:
                pass
        raise CliError(
            f"the join stopped at {step}: {reason}; what it wrote was undone: "
            "run the same command again to finish"
        ) from None
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
