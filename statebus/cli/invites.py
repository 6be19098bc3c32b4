"""Invites from the command line: make, list and revoke them; join a node with one.

    statebus invite [--app NAME] [--uses N] [--expires DURATION] [--note TEXT] [--follow-back]
                                          prints the link, a QR code and the bare payload
    statebus invite list                  every invite: id, uses, expiry, state, who joined
    statebus invite revoke ID             the invite stops working at once
    statebus invite rotate                a new invite secret: every earlier link stops
    statebus join LINK [--yes]            the (stopped) node of the data folder joins with LINK
    statebus serve --join LINK [--yes]    the same, then serve (a new node: empty data folder)

``invite`` talks to the running node (it is the first peer). ``join`` checks the link, asks the
inviter whether it is live, fetches and checks the app's bundle (with progress), shows its
permissions and asks for consent (``--yes`` for scripts), redeems the invite, and only then writes
the data folder: identity (a new one if none), the DHT membership, the app, the follows.

Rules:
    1. A link that is refused (tampered, expired, spent, revoked, foreign DHT, unreachable inviter,
       a bundle that does not match) is one line on stderr and writes nothing in the data folder.
    2. A join that fails while writing is undone (app, follows, membership) and keeps the identity,
       which the inviter recorded: the same command finishes it without spending another use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from statebus.apps.bundle import Bundle
from statebus.apps.manifest import permission_lines
from statebus.apps.registry import AppRegistry
from statebus.cli.client import client_for
from statebus.cli.options import add_common
from statebus.config import Settings
from statebus.errors import CliError, InvalidInvite, StatebusError
from statebus.federation.policy import FOLLOWS, new_follow
from statebus.identity import Identity, keystore
from statebus.identity.keys import identity_from_mnemonic, new_mnemonic
from statebus.invites.join import Inviter
from statebus.invites.ledger import INVITED_LIST, app_subtrees
from statebus.invites.membership import Membership, read_membership, write_membership
from statebus.invites.payload import Invite, parse_link
from statebus.invites.routes import INVITES_PATH
from statebus.server.assembly import STORE_FILE, open_node
from statebus.server.runfile import running_url

PROGRESS_AFTER = 0.3
"""Seconds a transfer runs before its progress is shown."""


# ---------------------------------------------------------------------- the inviter's commands


def terminal_qr(text: str) -> str:
    """``text`` as a QR code drawn with half blocks (two modules a character row)."""
    import io

    import segno

    out = io.StringIO()
    segno.make(text, error="l", boost_error=False).terminal(out=out, compact=True, border=2)
    return out.getvalue()


def cmd_invite(args: argparse.Namespace, settings: Settings) -> int:
    action = getattr(args, "action", None)
    with client_for(settings, args.url) as client:
        if action == "list":
            invites = client.request("GET", INVITES_PATH).json()["invites"]
            if args.json:
                print(json.dumps(invites, indent=2))
                return 0
            now = time.time()
            for r in invites:
                state = (
                    "revoked"
                    if r["revoked"]
                    else "expired"
                    if r["exp"] <= now
                    else "spent"
                    if r["used"] >= r["uses"]
                    else "live"
                )
                app = r["app"] or "-"
                print(
                    f"{r['id']}  {state:7}  {r['used']}/{r['uses']} used  app {app}  "
                    f"expires {_when(r['exp'])}  {r['note']}"
                )
                for j in r["joined"]:
                    print(f"    joined: {j['pubkey']} at {_when(j['at'])}")
            if not invites:
                print("no invites yet (`statebus invite` makes one)")
            return 0
        if action == "revoke":
            r = client.request("DELETE", f"{INVITES_PATH}/{args.id}").json()
            print(f"revoked {r['id']} ({r['used']} of {r['uses']} uses taken): its link stops working now")
            return 0
        if action == "rotate":
            client.request("POST", f"{INVITES_PATH}/rotate")
            print("rotated the DHT's invite secret: every earlier invite link stops; members stay in the DHT")
            return 0
        body: dict[str, Any] = {"uses": args.uses, "expires": args.expires, "back": args.follow_back}
        if args.app:
            body["app"] = args.app
        if args.note:
            body["note"] = args.note
        made = client.request("POST", INVITES_PATH, json=body).json()
    if args.json:
        made.pop("qr_svg", None)
        print(json.dumps(made))
        return 0
    what = f"to {made['app']}" if made["app"] else "to your DHT"
    uses = "once" if made["uses"] == 1 else f"{made['uses']} times"
    print(f"invite {made['id']} {what}, usable {uses}, expires {_when(made['exp'])}")
    if not args.no_qr:
        print(terminal_qr(made["link"]), end="")
    print(made["link"])
    print(f"bare payload (for `statebus join`): {made['payload']}")
    return 0


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


# ---------------------------------------------------------------------- joining


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
            if registry.get(bundle.manifest.name) is None:
                await registry.install(bundle, bundle.manifest.permissions)
                done.append("app")
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


def cmd_join(args: argparse.Namespace, settings: Settings) -> int:
    result = join(args.link, settings, yes=args.yes)
    print_joined(result)
    print("Run `statebus serve` to start the node.")
    return 0


def serve_join(args: argparse.Namespace, settings: Settings) -> Settings:
    """``statebus serve --join LINK``: join first (printing what it did), then serve."""
    result = join(args.join, settings, yes=args.yes)
    print_joined(result)
    sys.stdout.flush()
    return replace(settings)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "invite",
        help="make an invite link (or list, revoke, rotate)",
        description=(
            "Print a link (and a QR code) that gives a friend a node of their own in this node's DHT, with "
            "APP installed and following this node's data for it. The running node is the first peer."
        ),
    )
    p.add_argument("--app", metavar="NAME", help="an installed app the invite shares")
    p.add_argument(
        "--uses", type=int, default=1, metavar="N", help="how many people may join with it (default 1)"
    )
    p.add_argument("--expires", default="7d", metavar="DURATION", help="e.g. 30m, 12h, 7d (default 7d)")
    p.add_argument("--note", metavar="TEXT", help="a note shown on the invite page (200 characters)")
    p.add_argument("--follow-back", action="store_true", help="follow each joiner's app data in turn")
    p.add_argument("--no-qr", action="store_true", help="print no QR code")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_common(p, client=True)
    p.set_defaults(func=cmd_invite)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=False)
    a = actions.add_parser("list", help="list the invites made here")
    a.add_argument("--json", action="store_true", help="print JSON")
    add_common(a, client=True)
    a = actions.add_parser("revoke", help="revoke an invite: its link stops working")
    a.add_argument("id", metavar="ID")
    add_common(a, client=True)
    a = actions.add_parser("rotate", help="rotate the DHT's invite secret: every earlier link stops")
    add_common(a, client=True)

    p = sub.add_parser(
        "join",
        help="join a node (stopped) with an invite link",
        description=(
            "Check LINK, fetch and check the app it shares (asking consent for its permissions), redeem it "
            "at the inviter, then write the node's DHT membership, the app and the follows. Nothing is "
            "written when the link is refused."
        ),
    )
    p.add_argument("link", metavar="LINK", help="an invite link (…/join#sbi1.…) or its sbi1.… payload")
    p.add_argument("--yes", action="store_true", help="accept the app's permissions without asking")
    add_common(p, client=False)
    p.set_defaults(func=cmd_join)


__all__ = ["cmd_invite", "cmd_join", "join", "register", "serve_join", "terminal_qr"]
