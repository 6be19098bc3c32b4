"""Invites from the command line: make, list and revoke them; join a node with one.

    statebus invite [--app NAME] [--uses N] [--expires DURATION] [--note TEXT] [--follow-back]
                                          prints the link, a QR code and the bare payload
    statebus invite list                  every invite: id, uses, expiry, state, who joined
    statebus invite revoke ID             the invite stops working at once
    statebus invite rotate                a new invite secret: every earlier link stops
    statebus join LINK [--yes]            the node of the data folder joins with LINK (a running
                                          node joins itself: the command hands it the link)
    statebus serve --join LINK [--yes]    the same, then serve (a new node: empty data folder)

``invite`` talks to the running node (it is the first peer). ``join`` checks the link, asks the
inviter whether it is live, fetches and checks the app's bundle (with progress), shows its
permissions and asks for consent (``--yes`` for scripts), redeems the invite, and only then writes
the data folder: identity (a new one if none), the DHT membership, the app, the follows. When the
node of the data folder runs (its run file, ``<data>/node.json``), ``join`` hands the link to it
(``POST /.well-known/statebus/invites/join``, :mod:`statebus.invites.node_join`): the node does the
same checks and steps, streams the bundle's progress back, and waits for the consent given here.

Rules:
    1. A link that is refused (tampered, expired, spent, revoked, foreign DHT, unreachable inviter,
       a bundle that does not match) is one line on stderr and writes nothing in the data folder.
    2. A join that fails while writing is undone (app, follows, membership) and keeps the identity,
       which the inviter recorded: the same command finishes it without spending another use.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from typing import Any

import httpx

from statebus.cli.client import client_for
from statebus.cli.options import add_common
from statebus.config import Settings
from statebus.errors import (
    CliError,
    InvalidBundle,
    InvalidInvite,
    InviteRefused,
    PeerUnavailable,
    RemoteError,
    StatebusError,
)
from statebus.server.runfile import running_url

INVITES_PATH = "/.well-known/statebus/invites"
"""The node's invite routes (:mod:`statebus.invites.routes`; not imported here: the client commands
start without the node stack)."""


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


def cmd_join(args: argparse.Namespace, settings: Settings) -> int:
    url = running_url(settings.data_dir)
    if url is not None:  # the node runs: it joins itself, and says how far it got
        return join_running(args.link, settings, url, yes=args.yes)
    from statebus.cli.joining import join, print_joined

    result = join(args.link, settings, yes=args.yes)
    print_joined(result)
    print("Run `statebus serve` to start the node.")
    return 0


def join_running(link: str, settings: Settings, url: str, *, yes: bool) -> int:
    """``statebus join`` against the running node of the data folder: the node checks the link, fetches
    the app (its progress printed here), waits for the consent given here, then joins."""
    from statebus.cli.client import check, client_for, transport_error
    from statebus.cli.progress import Bar

    ready: dict[str, Any] | None = None
    with client_for(settings, url) as client:
        bar: Bar | None = None
        try:
            with client.http.stream("POST", f"{INVITES_PATH}/join", json={"link": link}) as r:
                if r.status_code >= 400:
                    _refusal(r)
                    check(r)
                for line in r.iter_lines():
                    event = json.loads(line)
                    if "error" in event:
                        raise _error(str(event["error"]), str(event.get("detail", "")))
                    if event.get("state") == "fetching":
                        bar = bar or Bar("fetching the app")
                        bar(int(event["done"]), int(event["total"]))
                    elif event.get("state") == "ready":
                        ready = event
        except httpx.HTTPError as exc:
            raise transport_error(client.url, exc) from None
        if ready is None:
            raise PeerUnavailable(f"the node at {client.url} ended the join without an answer")
        if ready.get("app"):
            consent(ready["app"], yes)
        done = client.request("POST", f"{INVITES_PATH}/join/{ready['ticket']}").json()
    lines = [f"the node at {url} joined with invite {done['invite']} from {done['by']} as {done['pubkey']}"]
    if done.get("dht"):
        lines.append(f"  DHT {done['dht']['name']!r}, first peer {', '.join(done['dht']['peers'])}")
    if done.get("app"):
        app = done["app"]
        lines.append(f"  installed {app['name']} {app['version']} ({app['hash'][:16]}…)")
    lines += [f"  following {p}" for p in done.get("follow", [])]
    if done.get("back"):
        lines.append("  the inviter follows you back")
    lines.append(f"  invite used {done['used']} of {done['uses']} times")
    print("\n".join(lines))
    return 0


def _error(code: str, detail: str) -> StatebusError:
    """A refusal the node passed on, as the error a stopped node's join raises (the same one line)."""
    kinds: dict[str, type[StatebusError]] = {
        "invalid_invite": InvalidInvite,
        "invite_refused": InviteRefused,
        "invalid_bundle": InvalidBundle,
        "peer_unavailable": PeerUnavailable,
    }
    kind = kinds.get(code)
    return kind(detail) if kind is not None else RemoteError(detail or code, remote_code=code)


def _refusal(r: httpx.Response) -> None:
    try:
        r.read()
        body = r.json()
    except ValueError:
        return
    if isinstance(body, dict) and body.get("error") in (
        "invalid_invite",
        "invite_refused",
        "peer_unavailable",
    ):
        raise _error(str(body["error"]), str(body.get("detail", "")))


def consent(app: dict[str, Any], yes: bool) -> None:
    """Show what the app asks for (as a stopped node's join does), and ask unless ``yes``."""
    sys.stderr.write(f"{app['name']} {app['version']} by {app['author']}\n")
    if app.get("description"):
        sys.stderr.write(f"  {app['description']}\n")
    sys.stderr.write(f"  bundle sha256 {app['hash']} ({app['size']} bytes), signed by {app['signer']}\n")
    sys.stderr.write("It asks to:\n" + "".join(line + "\n" for line in app["permissions"]))
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(
            "install asks for your consent: run it in a terminal, or pass --yes to accept these permissions"
        )
    sys.stderr.write(f"Install {app['name']} {app['version']} with these permissions and join? [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CliError("not joined: you did not consent")


def serve_join(args: argparse.Namespace, settings: Settings) -> Settings:
    """``statebus serve --join LINK``: join first (printing what it did), then serve."""
    from statebus.cli.joining import join, print_joined

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
    a = actions.add_parser("list", help="list the invites made here", argument_default=argparse.SUPPRESS)
    a.add_argument("--json", action="store_true", help="print JSON")
    add_common(a, client=True)
    a = actions.add_parser(
        "revoke", help="revoke an invite: its link stops working", argument_default=argparse.SUPPRESS
    )
    a.add_argument("id", metavar="ID")
    add_common(a, client=True)
    a = actions.add_parser(
        "rotate",
        help="rotate the DHT's invite secret: every earlier link stops",
        argument_default=argparse.SUPPRESS,
    )
    add_common(a, client=True)

    p = sub.add_parser(
        "join",
        help="join this node with an invite link (a running node joins itself)",
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


__all__ = ["INVITES_PATH", "cmd_invite", "cmd_join", "register", "serve_join", "terminal_qr"]
