"""Hosted apps from the command line: pack, publish, install, list, upgrade, remove.

    statebus app pack DIR [--out FILE] [--key KEYFILE]      FILE (deterministic) + FILE.sig (signed)
    statebus app publish FILE|DIR                           /~/.apps/<name> + the bundle, shared to peers
    statebus app install FILE|URL|/<author>/.apps/<name> [--via URL] [--yes]
    statebus app list
    statebus app upgrade NAME [SOURCE] [--via URL] [--yes]
    statebus app remove NAME

Every command works against the running node (its owner routes under
``/.well-known/statebus/apps`` and its keys, with the owner token) and, when no node answers at
``--url``, on the data folder directly (the node stopped). Installing from ``/<author>/.apps/<name>``
needs the running node: it fetches through federation.

Install is consent: the permissions the app asks for are shown and the owner must answer ``y``;
without a terminal the command refuses unless ``--yes``. An upgrade asking for no more than was
granted goes ahead; one asking for more asks again.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

import httpx

from statebus.apps.bundle import BUNDLE_SUFFIX, SIGNATURE_SUFFIX, Bundle, Signature, open_bundle, pack, sign
from statebus.apps.install import AppService, fetch_url, parse_source_key, read_files
from statebus.apps.manifest import permission_lines
from statebus.apps.patterns import Grants
from statebus.apps.publish import pointer_key
from statebus.apps.registry import AppRegistry
from statebus.cli.client import INFO_PATH, Client, client_for
from statebus.cli.options import add_common
from statebus.cli.signed import load_key_file
from statebus.config import Settings
from statebus.errors import CliError, NotFound, PeerUnavailable
from statebus.http.apps import APPS_PATH, BUNDLE_TYPE, SIGNATURE_HEADER, app_json, checked_json
from statebus.identity import Identity, keystore
from statebus.runtime import Node

FETCH_TIMEOUT_MARGIN = 15.0


# ---------------------------------------------------------------------- the two ways to a node


class Backend(Protocol):
    """The node the command manages: running (HTTP) or stopped (its data folder)."""

    node: str

    async def check_bundle(self, data: bytes, signature: Signature) -> dict[str, Any]: ...

    async def check_source(self, key: str, via: Sequence[str]) -> dict[str, Any]: ...

    async def install(self, hash_: str, grant: Grants) -> dict[str, Any]: ...

    async def apps(self) -> list[dict[str, Any]]: ...

    async def remove(self, name: str) -> None: ...

    async def publish(self, data: bytes, signature: Signature) -> dict[str, Any]: ...


class HttpBackend:
    def __init__(self, client: Client, node: str, fetch_timeout: float) -> None:
        self.client = client
        self.node = node
        self.fetch_timeout = fetch_timeout

    async def check_bundle(self, data: bytes, signature: Signature) -> dict[str, Any]:
        return await self._post_bundle("check", data, signature)

    async def publish(self, data: bytes, signature: Signature) -> dict[str, Any]:
        return await self._post_bundle("publish", data, signature)

    async def _post_bundle(self, route: str, data: bytes, signature: Signature) -> dict[str, Any]:
        sig = base64.b64encode(json.dumps(signature.to_json()).encode()).decode()
        headers = {"Content-Type": BUNDLE_TYPE, SIGNATURE_HEADER: sig}
        r = self.client.request("POST", f"{APPS_PATH}/{route}", content=data, headers=headers)
        return dict(r.json())

    async def check_source(self, key: str, via: Sequence[str]) -> dict[str, Any]:
        r = self.client.request(
            "POST",
            f"{APPS_PATH}/check",
            json={"source": key, "via": list(via)},
            timeout=self.fetch_timeout + FETCH_TIMEOUT_MARGIN,
        )
        return dict(r.json())

    async def install(self, hash_: str, grant: Grants) -> dict[str, Any]:
        r = self.client.request(
            "POST", f"{APPS_PATH}/install", json={"hash": hash_, "grant": grant.to_json()}
        )
        return dict(r.json())

    async def apps(self) -> list[dict[str, Any]]:
        return list(self.client.request("GET", APPS_PATH).json()["apps"])

    async def remove(self, name: str) -> None:
        self.client.request("DELETE", f"{APPS_PATH}/{name}")


class FolderBackend:
    """The stopped node's data folder, opened in this process."""

    def __init__(self, node: Node, settings: Settings) -> None:
        self.node_obj = node
        self.node = node.local
        registry = AppRegistry(settings.data_dir, node, max_bytes=settings.app_bundle_max_bytes)
        self.service = AppService(registry, settings)

    async def check_bundle(self, data: bytes, signature: Signature) -> dict[str, Any]:
        bundle = self.service.check(data, signature)
        return checked_json(bundle, self.service.registry.get(bundle.manifest.name))

    async def check_source(self, key: str, via: Sequence[str]) -> dict[str, Any]:
        author, name = parse_source_key(key)
        if author != self.node:
            raise CliError(
                f"installing from {key} fetches it through federation: start the node (`statebus serve`)"
            )
        bundle = await self.service.check_published(author, name)
        return checked_json(bundle, self.service.registry.get(name))

    async def install(self, hash_: str, grant: Grants) -> dict[str, Any]:
        return app_json(await self.service.install(hash_, grant))

    async def apps(self) -> list[dict[str, Any]]:
        return [app_json(a) for a in self.service.list()]

    async def remove(self, name: str) -> None:
        await self.service.remove(name)

    async def publish(self, data: bytes, signature: Signature) -> dict[str, Any]:
        bundle = await self.service.publish(data, signature)
        return {"name": bundle.manifest.name, "version": bundle.manifest.version, "hash": bundle.hash}


def _with_backend(
    args: argparse.Namespace, settings: Settings, run: Callable[[Backend], Coroutine[Any, Any, int]]
) -> int:
    """Run ``run`` against the node at --url, or, when none answers, on the data folder."""
    client = client_for(settings, args.url)
    try:
        try:
            info = client.http.get(INFO_PATH)
        except httpx.ConnectError:
            info = None
        if info is not None:
            node = info.json().get("node") if info.status_code == 200 else None
            if not isinstance(node, str):
                raise PeerUnavailable(
                    f"{client.url} is not a statebus node (GET {INFO_PATH}: {info.status_code})"
                )
            return asyncio.run(run(HttpBackend(client, node, settings.app_fetch_timeout)))
    finally:
        client.http.close()
    return asyncio.run(_offline(settings, run))


async def _offline(settings: Settings, run: Callable[[Backend], Coroutine[Any, Any, int]]) -> int:
    from statebus.server.assembly import build_node  # the store: only when the node is stopped

    if not keystore.exists(settings.data_dir):
        raise CliError(f"no node answers and no node identity is in {settings.data_dir}: run `statebus init`")
    node = build_node(settings)
    try:
        return await run(FolderBackend(node, settings))
    finally:
        await node.aclose()


# ---------------------------------------------------------------------- consent


def _describe(info: dict[str, Any], out: TextIO) -> None:
    out.write(f"{info['name']} {info['version']} by {info['author']}\n")
    if info.get("description"):
        out.write(f"  {info['description']}\n")
    out.write(f"  bundle sha256 {info['hash']} ({info['size']} bytes), signed by {info['signer']}\n")
    out.write("It asks to:\n")
    for line in permission_lines(Grants.from_json(info["permissions"])):
        out.write(line + "\n")


def _consent(info: dict[str, Any], yes: bool, verb: str) -> None:
    """Show what the app asks for and get the owner's yes (a terminal, or --yes)."""
    _describe(info, sys.stderr)
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(
            f"{verb} asks for your consent: run it in a terminal, or pass --yes to accept these permissions"
        )
    sys.stderr.write(f"{verb.capitalize()} {info['name']} {info['version']} with these permissions? [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CliError(f"not {verb}ed: you did not consent")


# ---------------------------------------------------------------------- commands


def _signer(args: argparse.Namespace, settings: Settings) -> Identity:
    if args.key:
        return load_key_file(args.key)
    try:
        return keystore.load(settings.data_dir)
    except NotFound:
        raise CliError(
            f"no node identity in {settings.data_dir} to sign with: pass --key KEYFILE or run `statebus init`"
        ) from None


def _delegation(args: argparse.Namespace) -> dict[str, Any] | None:
    if not args.delegation:
        return None
    try:
        value = json.loads(Path(args.delegation).read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the delegation record {args.delegation}: {exc}") from None
    return value if isinstance(value, dict) else None


def _packed(args: argparse.Namespace, settings: Settings, folder: str) -> Bundle:
    data = pack(folder, settings.app_bundle_max_bytes)
    signature = sign(data, _signer(args, settings), _delegation(args))
    return open_bundle(data, signature, settings.app_bundle_max_bytes)


def cmd_pack(args: argparse.Namespace, settings: Settings) -> int:
    bundle = _packed(args, settings, args.dir)
    m = bundle.manifest
    out = Path(args.out or f"{m.name}-{m.version}{BUNDLE_SUFFIX}")
    out.write_bytes(bundle.data)
    sig_path = out.with_name(out.name + SIGNATURE_SUFFIX)
    sig_path.write_text(json.dumps(bundle.signature.to_json(), indent=2) + "\n")
    sys.stdout.write(
        f"packed {m.name} {m.version}: {out} ({bundle.size} bytes) and {sig_path.name}\n"
        f"sha256 {bundle.hash}, signed by {bundle.signature.signer}\n"
    )
    return 0


def _load_source(args: argparse.Namespace, settings: Settings, source: str) -> tuple[bytes, Signature]:
    if source.startswith(("http://", "https://")):
        return fetch_url(source, settings.app_bundle_max_bytes)
    if Path(source).is_dir():
        raise CliError(f"{source} is a folder: pack and sign it first (`statebus app pack {source}`)")
    if not Path(source).is_file():
        raise CliError(f"{source} is not a bundle file, an http(s) URL or /<author>/.apps/<name>")
    return read_files(source)


async def _check(
    backend: Backend, args: argparse.Namespace, settings: Settings, source: str
) -> dict[str, Any]:
    if source.startswith("/") and not Path(source).exists() and "/.apps/" in source:
        return await backend.check_source(source, args.via or [])
    data, signature = _load_source(args, settings, source)
    return await backend.check_bundle(data, signature)


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    async def run(backend: Backend) -> int:
        if Path(args.source).is_dir():
            bundle = _packed(args, settings, args.source)
        else:
            data, signature = read_files(args.source)
            bundle = open_bundle(data, signature, settings.app_bundle_max_bytes)
        name = bundle.manifest.name
        await backend.publish(bundle.data, bundle.signature)
        sys.stdout.write(
            f"published {name} {bundle.manifest.version} at {pointer_key(backend.node, name)}\n"
            f"sha256 {bundle.hash} ({bundle.size} bytes); peers may read and follow /{backend.node}/.apps/\n"
        )
        return 0

    return _with_backend(args, settings, run)


def cmd_install(args: argparse.Namespace, settings: Settings) -> int:
    async def run(backend: Backend) -> int:
        info = await _check(backend, args, settings, args.source)
        current = info.get("installed")
        if current is not None and current["hash"] == info["hash"]:
            sys.stdout.write(f"{info['name']} {info['version']} is installed already\n")
            return 0
        if current is not None:
            raise CliError(
                f"{info['name']} {current['version']} is installed: use `statebus app upgrade {info['name']}`"
            )
        _consent(info, args.yes, "install")
        app = await backend.install(info["hash"], Grants.from_json(info["permissions"]))
        sys.stdout.write(f"installed {app['name']} {app['version']} ({app['hash'][:16]}…)\n")
        return 0

    return _with_backend(args, settings, run)


def cmd_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    async def run(backend: Backend) -> int:
        installed = {a["name"]: a for a in await backend.apps()}
        current = installed.get(args.name)
        if current is None:
            raise CliError(f"no app named {args.name!r} is installed (`statebus app list`)")
        source = args.source or pointer_key(current["author"], args.name)
        info = await _check(backend, args, settings, source)
        if info["name"] != args.name:
            raise CliError(f"{source} is the app {info['name']}, not {args.name}")
        if info["author"] != current["author"]:
            raise CliError(
                f"{source} is by {info['author']}; the installed {args.name} is by {current['author']}"
            )
        if info["hash"] == current["hash"]:
            sys.stdout.write(f"{args.name} {current['version']} is up to date\n")
            return 0
        granted = Grants.from_json(current["granted"])
        asked = Grants.from_json(info["permissions"])
        if info.get("asks_more") or not granted.covers(asked):
            sys.stderr.write(
                f"{args.name} {info['version']} asks for more than you granted {current['version']}.\n"
            )
            _consent(info, args.yes, "upgrade")
        app = await backend.install(info["hash"], asked)
        sys.stdout.write(
            f"upgraded {args.name} {current['version']} -> {app['version']} ({app['hash'][:16]}…)\n"
        )
        return 0

    return _with_backend(args, settings, run)


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    async def run(backend: Backend) -> int:
        apps = await backend.apps()
        if args.json:
            for a in apps:
                sys.stdout.write(json.dumps(a, sort_keys=True) + "\n")
            return 0
        if not apps:
            sys.stdout.write("no apps installed\n")
        for a in apps:
            sys.stdout.write(f"{a['name']} {a['version']}  by {a['author']}  sha256 {a['hash'][:16]}…\n")
            for line in permission_lines(Grants.from_json(a["granted"])):
                sys.stdout.write(line + "\n")
        return 0

    return _with_backend(args, settings, run)


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    async def run(backend: Backend) -> int:
        await backend.remove(args.name)
        sys.stdout.write(f"removed {args.name} (its keys stay; delete /~/… yourself if you want them gone)\n")
        return 0

    return _with_backend(args, settings, run)


# ---------------------------------------------------------------------- the parser


def _signing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key", metavar="KEYFILE", help="sign with this key file (default: the node identity)")
    p.add_argument(
        "--delegation",
        metavar="FILE",
        help="the author's delegation record for --key (JSON, as `statebus get /~/.keys/<pubkey>` prints)",
    )


def register(sub: Any) -> None:
    """Add ``statebus app …`` to the parser."""
    app = sub.add_parser(
        "app",
        help="pack, publish, install, list, upgrade and remove hosted apps",
        description="Hosted apps: signed bundles of web files and sandboxed handlers (docs/apps.md). Works "
        "against the running node, or on the data folder when the node is stopped.",
    )
    asub = app.add_subparsers(dest="app_command", metavar="SUBCOMMAND", required=True)

    p = asub.add_parser(
        "pack",
        help="pack and sign an app folder",
        description="Pack DIR (statebus-app.json, handlers, schemas, web files) into a deterministic archive "
        "(the same bytes on every machine; its sha256 is the bundle id) and sign it. Writes FILE, FILE.sig.",
    )
    p.add_argument("dir", metavar="DIR", help="the app folder")
    p.add_argument("--out", metavar="FILE", help="the bundle file (default: <name>-<version>.sbx)")
    _signing(p)
    add_common(p, client=False)
    p.set_defaults(func=cmd_pack)

    p = asub.add_parser(
        "publish",
        help="publish a bundle at /~/.apps/<name> for other nodes",
        description="Store the bundle and the pointer /~/.apps/<name> = {version, hash, size, signature} in "
        "this node's namespace, and share /~/.apps/ with peers: other nodes install it through federation.",
    )
    p.add_argument("source", metavar="FILE|DIR", help="a packed bundle (with FILE.sig), or an app folder")
    _signing(p)
    add_common(p, client=True)
    p.set_defaults(func=cmd_publish)

    for name, func, help_ in (
        ("install", cmd_install, "install an app (shows its permissions and asks)"),
        ("upgrade", cmd_upgrade, "upgrade an installed app (asks again if it wants more)"),
    ):
        p = asub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        if name == "upgrade":
            p.add_argument("name", metavar="NAME", help="the installed app")
            p.add_argument(
                "source",
                metavar="SOURCE",
                nargs="?",
                help="FILE, URL or /<author>/.apps/<name> (default: its author's published pointer)",
            )
        else:
            p.add_argument(
                "source",
                metavar="SOURCE",
                help="a bundle FILE (with FILE.sig), a URL, or /<author>/.apps/<name>",
            )
        p.add_argument(
            "--via", action="append", metavar="URL", help="the author's node, when the DHT does not find it"
        )
        p.add_argument("--yes", action="store_true", help="accept the permissions without asking (scripts)")
        add_common(p, client=True)
        p.set_defaults(func=func)

    p = asub.add_parser("list", help="list the installed apps and what they were granted")
    p.add_argument("--json", action="store_true", help="one JSON object per app")
    add_common(p, client=True)
    p.set_defaults(func=cmd_list)

    p = asub.add_parser("remove", help="uninstall an app (its keys stay)")
    p.add_argument("name", metavar="NAME")
    add_common(p, client=True)
    p.set_defaults(func=cmd_remove)


__all__ = ["cmd_install", "cmd_list", "cmd_pack", "cmd_publish", "cmd_remove", "cmd_upgrade", "register"]
