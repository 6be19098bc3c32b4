"""Federation commands of the ``statebus`` CLI.

    statebus follow PATTERN [--via URL]   follow /<their-pubkey>/path/ (writes /~/.follows/<id>)
    statebus unfollow PATTERN             stop following it (the replicated data stays)
    statebus peers [--wait live]          what this node follows, and how each follow is doing
    statebus restore --from URL [PATTERN] take this node's own data back from a follower (node stopped)
    statebus restore --from-mirror URL|PUBKEY  take the whole namespace back from an encrypted mirror
    statebus devnet N                     N federated nodes on 127.0.0.1 in one DHT; Ctrl-C stops them

``statebus.cli`` adds them with ``register(sub)``. ``devnet`` runs each node as ``statebus serve
--json``; nodes read the DHT invite secret from ``STATEBUS_DHT_SECRET`` (never from the command
line, where other users could see it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from statebus.cli.client import client_for
from statebus.cli.options import add_common
from statebus.cli.output import line_buffered
from statebus.config import Settings
from statebus.errors import CliError, InvalidValue, StatebusError
from statebus.federation.follow import STATE_SEGMENT
from statebus.federation.policy import FOLLOWS, check_pattern, follow_id
from statebus.identity import keystore
from statebus.keys import namespace_of

MAX_DEVNET = 32
START_TIMEOUT = 30.0
WAIT_TIMEOUT = 60.0


def _pattern(text: str) -> str:
    p = check_pattern(text)
    namespace_of(p)
    return p


# ---------------------------------------------------------------------- follow / unfollow / peers


def cmd_follow(args: argparse.Namespace, settings: Settings) -> int:
    pattern = _pattern(args.pattern)
    via = list(args.via or [])
    if any(not v.startswith(("http://", "https://")) for v in via):
        raise InvalidValue("--via takes an http(s) URL")
    body = {"pattern": pattern, "added": round(time.time(), 3), "via": via}
    with client_for(settings, args.url) as client:
        client.request("PUT", f"/~/{FOLLOWS}/{follow_id(pattern)}", json=body)
    print(f"following {pattern}")
    return 0


def cmd_unfollow(args: argparse.Namespace, settings: Settings) -> int:
    pattern = _pattern(args.pattern)
    with client_for(settings, args.url) as client:
        client.request("DELETE", f"/~/{FOLLOWS}/{follow_id(pattern)}")
    print(f"no longer following {pattern} (what was replicated stays)")
    return 0


FOLLOW_STATUSES = ("live", "syncing", "retrying", "incomplete", "stopped", "starting")
WAIT_POLL = 0.2


def _follow_rows(client: Any) -> list[dict[str, Any]]:
    """Each follow of the node (``/~/.follows/…``) with its state (``/~/.federation/follows/…``)."""
    listing = client.request("GET", f"/~/{FOLLOWS}/").json()
    rows = []
    for name in listing.get("children", []):
        if name.endswith("/"):
            continue
        follow = client.request("GET", f"/~/{FOLLOWS}/{name}").json()
        state: dict[str, Any] = {}
        try:
            state = client.request("GET", f"/~/{STATE_SEGMENT}/{name}").json()
        except StatebusError:
            pass
        rows.append({"id": name, **follow, "state": state})
    return rows


def _status(row: dict[str, Any]) -> str:
    return str(row["state"].get("status", "starting"))


def _wait_for(client: Any, status: str, timeout: float) -> list[dict[str, Any]]:
    """The follows once every one of them has ``status`` (and there is one); CliError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        rows = _follow_rows(client)
        if rows and all(_status(row) == status for row in rows):
            return rows
        if time.monotonic() >= deadline:
            others = [row for row in rows if _status(row) != status]
            what = (
                "this node follows nothing"
                if not rows
                else "; ".join(
                    f"{row.get('pattern')} is {_status(row)}"
                    + (f" ({row['state']['reason']})" if row["state"].get("reason") else "")
                    for row in others
                )
            )
            raise CliError(f"timed out after {timeout:g} s waiting for every follow to be {status}: {what}")
        time.sleep(WAIT_POLL)


def cmd_peers(args: argparse.Namespace, settings: Settings) -> int:
    if args.timeout is not None and args.timeout <= 0:
        raise InvalidValue("--timeout is a number of seconds above 0")
    with client_for(settings, args.url) as client:
        if args.wait is not None:
            rows = _wait_for(client, args.wait, args.timeout if args.timeout is not None else WAIT_TIMEOUT)
        else:
            rows = _follow_rows(client)
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    if not rows:
        print("following nothing (statebus follow /<pubkey>/path/)")
    for row in rows:
        print(peer_line(row))
    return 0


def peer_line(row: dict[str, Any]) -> str:
    """One follow as ``statebus peers`` prints it (a relay the origin shed us to says so)."""
    st = row["state"]
    shed_by = st.get("shed_by")
    relayed = f" (a relay: shed by {shed_by[:12]}…, {st.get('depth')} hops from the owner)" if shed_by else ""
    return (
        f"{row.get('pattern')}  {_status(row)}  via {st.get('url') or '-'}{relayed}  "
        f"applied {st.get('applied', 0)}  refused {st.get('rejected', 0)}"
        + (f"  ({st['reason']})" if st.get("reason") else "")
    )


# ---------------------------------------------------------------------- restore


async def _restore(settings: Settings, sources: list[str], pattern: str | None) -> list[Any]:
    # imported here: the node and federation stack is not loaded by the other commands
    from statebus.federation.client import PeerClient
    from statebus.federation.restore import own_pattern, restore
    from statebus.runtime import highwater
    from statebus.server.assembly import build_node

    node = build_node(settings)  # refused (StoreInUse) while a node runs on this data folder
    client = PeerClient(keystore.load(settings.data_dir))
    try:
        own_pattern(node, pattern)
        reports = await restore(node, client, sources, pattern)
        if any(not r.error for r in reports):
            await node.flush()
            highwater.accept(node, settings.data_dir)  # the owner took the data back: writes allowed
        return reports
    finally:
        await client.aclose()
        await node.aclose()


async def _restore_mirror(settings: Settings, url: str) -> Any:
    from statebus.federation.mirror_restore import restore_from_mirror
    from statebus.mirror.push import MirrorTargets
    from statebus.runtime import highwater
    from statebus.server.assembly import build_node

    node = build_node(settings)
    try:
        report = await restore_from_mirror(
            node,
            keystore.load(settings.data_dir),
            url,
            targets=MirrorTargets(settings.data_dir),
            progress=lambda line: print(f"{url}: {line}", file=sys.stderr, flush=True),
        )
        if not report.error:
            highwater.accept(node, settings.data_dir)
        return report
    finally:
        await node.aclose()


def cmd_restore_mirror(args: argparse.Namespace, settings: Settings) -> int:
    from statebus.cli.mirror import target_url

    if not keystore.exists(settings.data_dir):
        raise InvalidValue(
            f"no identity in {settings.data_dir}: recover it first with `statebus init --recover`"
        )
    url = target_url(settings, args.mirror, "--from-mirror")
    r = asyncio.run(_restore_mirror(settings, url))
    if r.error:
        print(f"{url}: failed at {r.failed_object or '-'}: {' '.join(r.error.split())}")
        print(f"  {r.applied} ops of {r.segments} good segments were restored before it")
        return 1
    print(
        f"{url}: restored {r.applied} ops from {r.segments} segments, "
        f"{r.snapshots} compaction snapshots and {r.blobs} blobs "
        f"({r.duplicates} already here, {len(r.rejected)} refused, {r.bytes_moved} bytes moved)"
    )
    for reason in r.rejected[:5]:
        print(f"  refused: {' '.join(reason.split())}")
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    if args.mirror is not None:
        if args.sources or args.pattern:
            raise InvalidValue("--from-mirror restores the whole namespace; give it alone")
        return cmd_restore_mirror(args, settings)
    sources = list(args.sources or [])
    if not sources or any(not u.startswith(("http://", "https://")) for u in sources):
        raise InvalidValue("--from takes the http(s) URL of a node that holds a copy (repeatable)")
    if not keystore.exists(settings.data_dir):
        raise InvalidValue(
            f"no identity in {settings.data_dir}: recover it first with `statebus init --recover`"
        )
    reports = asyncio.run(_restore(settings, sources, args.pattern))
    failed = 0
    for r in reports:
        if r.error:
            failed += 1
            print(f"{r.url}: failed: {' '.join(r.error.split())}")
            continue
        print(
            f"{r.url}: restored {r.applied} ops ({r.duplicates} already here, {len(r.rejected)} refused, "
            f"{r.bytes_moved} bytes moved)"
        )
        for reason in r.rejected[:5]:
            print(f"  refused: {' '.join(reason.split())}")
    return 1 if failed == len(reports) else 0


# ---------------------------------------------------------------------- devnet


def _read_info(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise CliError("a devnet node did not start in time")
        line = proc.stdout.readline()
    finally:
        sel.close()
    if not line:
        raise CliError(f"a devnet node exited at start (status {proc.wait()})")
    info: dict[str, Any] = json.loads(line)
    return info


def stop_all(procs: Sequence[subprocess.Popen[str]]) -> None:
    """SIGTERM every process, then wait up to 15 s each (SIGKILL after that) and close its stdout."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def start_devnet(
    n: int, base: Path, name: str, host: str = "127.0.0.1"
) -> tuple[list[subprocess.Popen[str]], list[dict[str, Any]]]:
    """Start ``n`` ``statebus serve --json`` processes in one new DHT; returns them and their info lines."""
    secret = secrets.token_urlsafe(24)
    # to restart a node into this DHT; never printed
    keystore.write_private_file(base / "dht_secret", (secret + "\n").encode())
    env = {**os.environ, "STATEBUS_DHT_SECRET": secret, "STATEBUS_DHT_NAME": name}
    env.pop("STATEBUS_DHT_BOOTSTRAP", None)
    procs: list[subprocess.Popen[str]] = []
    infos: list[dict[str, Any]] = []

    def spawn(i: int, bootstrap: str | None) -> subprocess.Popen[str]:
        label = chr(ord("a") + i) if i < 26 else f"n{i}"
        cmd = [sys.executable, "-m", "statebus", "serve", "--json", "--data", str(base / label)]
        cmd += ["--host", host, "--port", "0", "--dht-port", "0", "--log-level", "warning"]
        if bootstrap:
            cmd += ["--bootstrap", bootstrap]
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)

    try:
        procs.append(spawn(0, None))
        infos.append(_read_info(procs[0], START_TIMEOUT))
        procs.extend(spawn(i, infos[0]["dht"]) for i in range(1, n))  # the rest start together
        infos.extend(_read_info(p, START_TIMEOUT) for p in procs[1:])
        for i, info in enumerate(infos):
            info["name"] = chr(ord("a") + i) if i < 26 else f"n{i}"
    except BaseException:
        stop_all(procs)
        raise
    return procs, infos


def write_details(base: Path, name: str, infos: Sequence[dict[str, Any]]) -> Path:
    """``<base>/devnet.json``: every node's URL, pubkey, pid and login link, so mode 0600 from the
    start (whatever the umask, and also when it replaces an older one)."""
    details = json.dumps({"dht": name, "nodes": list(infos)}, indent=2) + "\n"
    return keystore.write_private_file(base / "devnet.json", details.encode())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both stop the devnet cleanly (also when started in the background, where
    the shell makes the process ignore SIGINT)."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


def cmd_devnet(args: argparse.Namespace, settings: Settings) -> int:
    n = args.n
    if not 1 <= n <= MAX_DEVNET:
        raise InvalidValue(f"a devnet has 1 to {MAX_DEVNET} nodes")
    base = Path(args.base) if args.base else Path(tempfile.mkdtemp(prefix="statebus-devnet-"))
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = args.name or f"devnet-{secrets.token_hex(3)}"
    line_buffered(sys.stdout)  # "node a stopped" must reach a pipe when it happens, not at exit
    _stop_on_signals()
    procs, infos = start_devnet(n, base, name, args.host)
    write_details(base, name, infos)
    secret_file = base / "dht_secret"
    print(f'devnet "{name}": {n} nodes, data in {base} (invite secret in {secret_file}, not shown)')
    for info in infos:
        print(f"  {info['name']}  pid {info['pid']:<7} {info['url']}  {info['pubkey']}")
        print(f"     login: {info['login']}")
    print(f"details: {base / 'devnet.json'}  —  Ctrl-C stops every node", flush=True)
    try:
        while any(p.poll() is None for p in procs):
            for proc, info in zip(procs, infos, strict=True):
                if proc.poll() is not None and not info.get("gone"):
                    info["gone"] = True
                    print(f"node {info['name']} stopped (status {proc.returncode}); the others keep running")
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("stopping the devnet…", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not leave nodes behind
        stop_all(procs)
    print("devnet stopped")
    return 0


# ---------------------------------------------------------------------- the parser


def register(sub: Any) -> None:
    """Add the federation commands to the ``statebus`` subparsers (``sub.add_parser``)."""
    p = sub.add_parser(
        "follow",
        help="follow another node's subtree",
        description=(
            "Keep a live, verified replica of PATTERN (/<their-pubkey>/path/) on this node. The owner is "
            "found through the DHT, or at the --via addresses (an invite, a relay)."
        ),
    )
    p.add_argument("pattern", metavar="PATTERN", help="/<pubkey>/path/ (a subtree)")
    p.add_argument("--via", action="append", metavar="URL", help="an address to fetch it from (repeatable)")
    add_common(p, client=True)
    p.set_defaults(func=cmd_follow)

    p = sub.add_parser("unfollow", help="stop following a subtree (its data stays)")
    p.add_argument("pattern", metavar="PATTERN")
    add_common(p, client=True)
    p.set_defaults(func=cmd_unfollow)

    p = sub.add_parser(
        "peers",
        help="what this node follows and how each follow is doing",
        description=(
            "One line per follow: pattern, status, the address it follows through, ops applied and refused. "
            "With --wait STATUS, first wait until every follow has that status (live: caught up and "
            "streaming), then print them; exit 1 with one line after --timeout seconds."
        ),
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--wait", choices=FOLLOW_STATUSES, metavar="STATUS", help="wait for every follow: live, retrying…"
    )
    p.add_argument(
        "--timeout", type=float, metavar="SECONDS", help=f"how long --wait waits (default {WAIT_TIMEOUT:g})"
    )
    add_common(p, client=True)
    p.set_defaults(func=cmd_peers)

    p = sub.add_parser(
        "restore",
        help="take this node's own data back from nodes that hold a copy",
        description=(
            "After losing the data folder: recover the identity (statebus init --recover), then pull the "
            "ops of your namespace (or PATTERN under it) that followers or relays hold. Every op is checked "
            "against your own key and delegations; a source can withhold data, never forge it. Run it with "
            "the node stopped; it is safe to repeat and to run against several sources."
        ),
    )
    p.add_argument("pattern", metavar="PATTERN", nargs="?", help="a subtree of your namespace (default /~/)")
    p.add_argument(
        "--from", dest="sources", action="append", metavar="URL", help="a node holding a copy (repeatable)"
    )
    p.add_argument(
        "--from-mirror",
        dest="mirror",
        metavar="URL|PUBKEY",
        help="an encrypted mirror of this namespace (docs/mirror.md): everything, private keys included",
    )
    add_common(p, client=False)
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser(
        "devnet",
        help="run N federated nodes on 127.0.0.1 in one new DHT",
        description=(
            "Start N nodes (one process each) that form a new, invite-only DHT; print their pubkeys, URLs "
            "and owner login links; Ctrl-C stops them all. Walkthrough: docs/devnet.md"
        ),
    )
    p.add_argument("n", type=int, metavar="N")
    p.add_argument("--base", metavar="DIR", help="folder for the nodes' data (default: a new temp folder)")
    p.add_argument("--name", help="DHT name (default: devnet-<random>)")
    p.add_argument("--host", default="127.0.0.1", help="address the nodes bind (default 127.0.0.1)")
    p.set_defaults(func=cmd_devnet)
