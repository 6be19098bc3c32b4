"""Mirror commands of the ``statebus`` CLI (docs/mirror.md).

    statebus mirror add URL|PUBKEY [--quota SIZE]   check that the node mirrors for us; add it
    statebus mirror list                     the mirrors and what each holds
    statebus mirror remove URL [--purge]     stop pushing there (--purge: delete our objects on it first)
    statebus mirror push                     push to every mirror now and challenge each (node stopped)
    statebus mirror status [--copies N]      last proof, lag and errors per mirror; under-replication
    statebus restore --from-mirror URL|PUBKEY       (in :mod:`statebus.cli.federation`)

A running node pushes and challenges by itself every ``mirror_push_interval``; ``push`` is for a
stopped node. ``status`` opens the store to count the lag when the node is stopped, and otherwise
shows the figures the running node last recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

from statebus.cli.options import add_common
from statebus.config import Settings, _size
from statebus.errors import CliError, InvalidValue, RemoteError, StatebusError, StoreInUse
from statebus.identity import keystore
from statebus.keys import is_pubkey
from statebus.mirror.client import MirrorClient
from statebus.mirror.push import MirrorStatus, MirrorTargets, challenge, check_url, copies, push, status


def _identity(settings: Settings) -> Any:
    if not keystore.exists(settings.data_dir):
        raise CliError(f"no identity in {settings.data_dir}: run `statebus init` (or `init --recover`) first")
    return keystore.load(settings.data_dir)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "never"


async def _resolve(settings: Settings, pubkey: str) -> str:
    """The http(s) address the DHT (``dht_name``, ``dht_secret``, ``dht_bootstrap``) holds for ``pubkey``,
    looked up by a throwaway DHT node on a free port, checked against the node's own answer."""
    from statebus.federation.client import PeerClient
    from statebus.federation.dht import KademliaDirectory
    from statebus.identity.keys import Identity
    from statebus.server.running import parse_bootstrap

    bootstrap = parse_bootstrap(settings.dht_bootstrap)
    if not bootstrap:
        raise CliError(
            "to find a mirror by pubkey, give the DHT to ask: dht_bootstrap (and dht_secret, dht_name)"
        )
    secret = settings.dht_secret.reveal().encode() if settings.dht_secret is not None else b""
    directory = KademliaDirectory(os.urandom(32), settings.dht_name, secret, interface=settings.host, port=0)
    await directory.start(bootstrap)
    try:
        record = await directory.resolve(pubkey)
    finally:
        await directory.stop()
    urls = [a for a in (record.addrs if record is not None else ()) if a.startswith(("http://", "https://"))]
    if not urls:
        raise CliError(f"the DHT {settings.dht_name!r} holds no address for {pubkey}")
    client = PeerClient(Identity.generate())
    try:
        for url in urls:
            try:
                if await client.node_info(url) == pubkey:
                    return check_url(url)
            except StatebusError:
                continue
    finally:
        await client.aclose()
    raise CliError(f"no address the DHT holds for {pubkey} answers as that node: {', '.join(urls)}")


def target_url(settings: Settings, target: str, what: str) -> str:
    """``target`` as a mirror URL: an http(s) URL as given, or a pubkey found through the DHT."""
    if target.startswith(("http://", "https://")):
        return check_url(target)
    if not is_pubkey(target):
        raise InvalidValue(f"{what} takes the mirror's http(s) URL or its 52-character pubkey")
    return asyncio.run(_resolve(settings, target))


def cmd_mirror_add(args: argparse.Namespace, settings: Settings) -> int:
    url = target_url(settings, args.target, "mirror add")
    quota = _size(args.quota, "--quota") if args.quota is not None else None
    identity = _identity(settings)

    async def probe() -> dict[str, Any]:
        async with MirrorClient(url, identity.pubkey, identity) as client:
            return await client.listing()

    try:
        info = asyncio.run(probe())
    except RemoteError as exc:
        raise CliError(f"{url} refuses to mirror for {identity.pubkey}: {exc.detail}") from None
    MirrorTargets(settings.data_dir).add(url, quota)
    print(f"mirror {url} added: it keeps up to {info['quota']} bytes for us and holds {info['used']}")
    return 0


def cmd_mirror_list(args: argparse.Namespace, settings: Settings) -> int:
    targets = MirrorTargets(settings.data_dir)
    if not targets.mirrors:
        print("no mirrors (add one with `statebus mirror add URL`)")
    for m in targets.mirrors.values():
        quota = f"quota {m.quota} bytes" if m.quota is not None else "no quota of ours"
        print(
            f"{m.url}  added {_when(m.added)}  {quota}  holds {m.used} bytes  last push {_when(m.last_push)}"
        )
    return 0


def cmd_mirror_remove(args: argparse.Namespace, settings: Settings) -> int:
    targets = MirrorTargets(settings.data_dir)
    url = check_url(args.target)
    if url not in targets.mirrors:
        raise CliError(f"{url} is not one of this node's mirrors (`statebus mirror list`)")
    if args.purge:
        identity = _identity(settings)

        async def purge() -> int:
            async with MirrorClient(url, identity.pubkey, identity) as client:
                objects = (await client.listing())["objects"]
                for oid, _, _ in objects:
                    await client.delete(oid)
                return len(objects)

        print(f"deleted {asyncio.run(purge())} objects on {url}")
    targets.remove(url)
    print(f"{url} removed: nothing more is pushed there")
    return 0


async def _push_all(settings: Settings) -> list[str]:
    from statebus.server.assembly import build_node

    identity = _identity(settings)
    node = build_node(settings)  # StoreInUse while the node runs
    lines = []
    try:
        targets = MirrorTargets(settings.data_dir)
        for url in list(targets.mirrors):
            r = await push(
                node, identity, targets, url, progress=lambda line: print(line, file=sys.stderr, flush=True)
            )
            if r.error:
                lines.append(f"{url}: push failed: {r.error}")
                continue
            proof = await challenge(node, identity, targets, url)
            lines.append(
                f"{url}: pushed {r.ops} ops in {r.segments} segments and {r.blobs} blobs "
                f"({r.bytes_sent} bytes sent); proof of {proof['object'] or '-'}: {proof['detail']}"
            )
    finally:
        await node.aclose()
    return lines


def cmd_mirror_push(args: argparse.Namespace, settings: Settings) -> int:
    if not MirrorTargets(settings.data_dir).mirrors:
        raise CliError("no mirrors to push to (add one with `statebus mirror add URL`)")
    try:
        lines = asyncio.run(_push_all(settings))
    except StoreInUse:
        raise CliError(
            "the node is running: it pushes to its mirrors every mirror_push_interval by itself"
        ) from None
    for line in lines:
        print(line)
    return 1 if any("push failed" in line for line in lines) else 0


async def _fresh_status(settings: Settings) -> list[MirrorStatus]:
    from statebus.server.assembly import build_node

    node = build_node(settings)
    try:
        return status(node, MirrorTargets(settings.data_dir))
    finally:
        await node.aclose()


def cmd_mirror_status(args: argparse.Namespace, settings: Settings) -> int:
    targets = MirrorTargets(settings.data_dir)
    try:
        rows = asyncio.run(_fresh_status(settings))
        note = ""
    except StoreInUse:
        owner = _identity(settings).pubkey
        rows = [
            MirrorStatus(m.url, m.manifest_of(owner).ops, -1, m.last_push, m.last_proof, m.last_error, m.used)
            for m in targets.mirrors.values()
        ]
        note = " (the node is running: lag not counted; last figures recorded by it)"
    want = args.copies or settings.mirror_copies
    for s in rows:
        lag = "?" if s.lag_ops < 0 else f"{s.lag_ops} ops behind"
        p = s.last_proof
        proof = (
            f"{_when(p.get('at', 0))} {p.get('object', '-')}: {p.get('detail', '')}"
            if p
            else "never challenged"
        )
        print(f"{s.url}")
        print(f"  holds      {s.pushed_ops} ops, {s.used} bytes; last push {_when(s.last_push)}; {lag}")
        print(f"  last proof {proof}")
        if s.last_error:
            print(f"  error      {s.last_error}")
    have = copies(rows)
    verdict = "ok" if have >= want else f"UNDER-REPLICATED: {want - have} more needed"
    print(f"copies of /~/: {have} of {want} wanted (this node + complete, proven mirrors): {verdict}{note}")
    return 0


def register(sub: Any) -> None:
    mirror = sub.add_parser(
        "mirror",
        help="end-to-end encrypted mirrors of this node's namespace",
        description=(
            "Push this node's whole namespace, encrypted with keys derived from its phrase, to always-on "
            "nodes that mirror for it; check that they still hold it. Docs: docs/mirror.md"
        ),
    )
    msub = mirror.add_subparsers(dest="mirror_command", metavar="SUBCOMMAND", required=True)
    p = msub.add_parser("add", help="add a mirror (it must list our pubkey in its mirror_for)")
    p.add_argument("target", metavar="URL|PUBKEY", help="its URL, or its pubkey to look up in the DHT")
    p.add_argument("--quota", metavar="SIZE", help="push at most this much there (e.g. 500MiB)")
    add_common(p, client=False)
    p.set_defaults(func=cmd_mirror_add)
    p = msub.add_parser("list", help="the mirrors of this node")
    add_common(p, client=False)
    p.set_defaults(func=cmd_mirror_list)
    p = msub.add_parser("remove", help="stop pushing to a mirror")
    p.add_argument("target", metavar="URL")
    p.add_argument("--purge", action="store_true", help="first delete every object of ours on it")
    add_common(p, client=False)
    p.set_defaults(func=cmd_mirror_remove)
    p = msub.add_parser("push", help="push to every mirror now and challenge each (with the node stopped)")
    add_common(p, client=False)
    p.set_defaults(func=cmd_mirror_push)
    p = msub.add_parser("status", help="what each mirror holds, its last proof and lag; under-replication")
    p.add_argument(
        "--copies", type=int, metavar="N", help="copies wanted (default: the mirror_copies setting)"
    )
    add_common(p, client=False)
    p.set_defaults(func=cmd_mirror_status)
