"""The ``statebus`` command: set up a node, run it, and read/write/watch its keys over HTTP.

    statebus init [--recover]          create (or restore) the node identity and owner token
                  [--encrypt]          ...in a new data folder encrypted at rest (docs/storage.md)
    statebus serve [--host --port]     run the node; prints its pubkey, URL and login link (--json)
    statebus phrase                    show a new identity's recovery phrase once (made with no terminal)
    statebus token                     print the owner token
    statebus info                      node identity, URL, data folder, key count, version (or: not running)
    statebus get KEY [--range R]       print a value (or a subtree's children)
    statebus put KEY VALUE|-           write a JSON value (or bytes with --content-type)
    statebus delete KEY                delete a key
    statebus watch KEY|SUBTREE/        print every change live (resumes after a dropped connection)
    statebus export [--subtree P] FILE write a self-verifying backup archive (while the node serves)
    statebus import FILE               check an archive, then apply it to this (stopped) node

Settings: CLI flags > ``STATEBUS_*`` environment > ``--config`` TOML file > defaults
(:meth:`statebus.config.Settings.load`). Client commands talk HTTP to ``--url`` (default: the node
serving the data folder, from its ``node.json``, else ``http://<host>:<port>`` from the settings)
with the owner token read from the data folder.
Every expected failure is one line on stderr and exit status 1 (2 for usage errors). The
federation commands (follow, unfollow, peers, restore, devnet) are in :mod:`statebus.cli.federation`.
The hosted-app commands (``statebus app pack|publish|install|list|upgrade|remove``) are in
:mod:`statebus.cli.apps`; ``statebus invite`` and ``statebus join`` in :mod:`statebus.cli.invites`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from statebus.cli import apps as apps_cli
from statebus.cli import backup as backup_cli
from statebus.cli import blobs as blobs_cli
from statebus.cli import federation as federation_cli
from statebus.cli import invites as invites_cli
from statebus.cli import keys as keys_cli
from statebus.cli import mirror as mirror_cli
from statebus.cli.client import (
    Client,
    client_for,
    cmd_delete,
    cmd_get,
    cmd_info,
    cmd_put,
    cmd_watch,
)
from statebus.cli.options import add_common
from statebus.config import Settings
from statebus.errors import CliError, Forbidden, InvalidValue, StatebusError
from statebus.identity import atrest, keystore
from statebus.server.phrase import phrase_text

EXIT_ERROR = 1


def _load_settings(args: argparse.Namespace) -> Settings:
    """Settings from the command's flags (any flag named like a setting), env, config file, defaults."""
    overrides: dict[str, Any] = {"data_dir": getattr(args, "data", None)}
    for f in dataclasses.fields(Settings):
        if f.name != "data_dir" and getattr(args, f.name, None) is not None:
            overrides[f.name] = getattr(args, f.name)
    return Settings.load(overrides, config_file=getattr(args, "config", None))


# ---------------------------------------------------------------------- node-side commands


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return _init(args, Path(settings.data_dir))
    except Forbidden as exc:  # the keystore's advice names its Python argument
        raise CliError(exc.detail.replace("pass force=True", "pass --force")) from None


def _init(args: argparse.Namespace, data: Path) -> int:
    if args.encrypt:
        return _init_encrypted(args, data)
    if args.recover:
        phrase = _read_phrase()
        identity = keystore.recover(data, phrase, force=args.force)
        print(f"Restored node identity {identity.pubkey} in {data}")
        print("A new owner token was issued (`statebus token` prints it).")
        return 0
    identity, phrase = keystore.init(data, force=args.force)
    print(phrase_text(f"Created node identity {identity.pubkey} in {data}", phrase), end="")
    return 0


def _init_encrypted(args: argparse.Namespace, data: Path) -> int:
    """``init --encrypt``: a new data folder encrypted at rest; the key goes to a key file, the OS
    keyring, or nowhere (the phrase unlocks the node at every start)."""
    key_file: Path | None = args.at_rest_key_file
    if key_file is not None and args.keyring:
        raise CliError("give --at-rest-key-file or --keyring, not both")
    if args.keyring and not atrest.keyring_available():
        raise CliError(
            "no OS keyring is available here (install `keyring` and a backend), use --at-rest-key-file"
        )
    if key_file is not None and Path(key_file).exists():
        raise CliError(f"{key_file} exists: choose a new key file (an existing one is never overwritten)")
    if key_file is not None and data.resolve() in Path(key_file).resolve().parents:
        raise CliError(f"the key file {key_file} would be inside the data folder it opens; keep it elsewhere")
    phrase = _read_phrase() if args.recover else None
    identity, phrase, key = keystore.init_encrypted(data, phrase)
    failed = ""
    try:
        if key_file is not None:
            atrest.write_key_file(Path(key_file), key, data)
            where = (
                f"Its at-rest key is in {key_file} (mode 0600): the node unlocks with it (at_rest_key_file)."
            )
        elif args.keyring:
            atrest.keyring_store(identity.pubkey, key)
            where = "Its at-rest key is in the OS keyring: the node unlocks from it at start."
        else:
            where = (
                "No key file or keyring: the node asks for the recovery phrase at every start (a terminal)."
            )
    except (StatebusError, OSError) as exc:  # the folder exists now: its phrase must still be shown
        failed = f"the at-rest key could not be stored ({exc}); the folder unlocks with its recovery phrase"
        where = "The at-rest key could not be stored: the node asks for the recovery phrase at every start."
    head = f"Created node identity {identity.pubkey} in {data}, encrypted at rest.\n{where}"
    if args.recover:
        print(head)
    else:
        print(phrase_text(head, phrase), end="")
    if failed:
        raise CliError(failed)
    return 0


def _read_phrase() -> str:
    if sys.stdin.isatty():
        import getpass

        text = getpass.getpass("Recovery phrase (24 words, not shown): ")
    else:
        text = sys.stdin.read()
    phrase = " ".join(text.split())
    if not phrase:
        raise CliError("no recovery phrase given (pass it on stdin or type it at the prompt)")
    return phrase


def cmd_phrase(args: argparse.Namespace, settings: Settings) -> int:
    data = Path(settings.data_dir)
    if not keystore.phrase_pending(data):
        if not keystore.exists(data):
            raise CliError(f"no node identity in {data}: run `statebus init` (it shows the phrase)")
        raise CliError(
            f"no recovery phrase waits in {data}: it was shown already (it is shown once). If it is "
            "lost, make a new identity with `statebus init --force` (the old keys are lost)"
        )
    if not sys.stdout.isatty() and not args.force:
        raise CliError(
            "standard output is not a terminal: the phrase would land in a file or a pipe and is then "
            "deleted. Run this in a terminal, or pass --force to print it anyway"
        )
    phrase = keystore.take_phrase(data)
    print(phrase_text(f"Recovery phrase of node identity {keystore.load(data).pubkey}:", phrase), end="")
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    data = Path(settings.data_dir)
    if not keystore.exists(data):
        raise CliError(f"no node identity in {data}: run `statebus init` or `statebus serve` first")
    print(keystore.load_owner_token(data))
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from statebus.cli.serve import run_server  # the server stack: not loaded by the client commands

    if args.join:
        from statebus.cli.invites import serve_join

        serve_join(args, settings)
    run_server(settings, as_json=args.json, confirm_phrase=not args.yes)
    return 0


# ---------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``statebus`` command."""
    parser = argparse.ArgumentParser(
        prog="statebus",
        description="A reactive key-value node: pubkey-namespaced keys, live subscriptions over SSE, "
        "Braid-HTTP and websockets. Keys are /~/path (this node's namespace), /<pubkey>/path, or a bare "
        "path meaning /~/path.",
        epilog="Run `statebus COMMAND --help` for a command's options. Docs: docs/cli.md",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "init",
        help="create the node identity and owner token",
        description=(
            "Create the node identity (an Ed25519 key from a fresh 24-word BIP39 phrase) and the owner token "
            "in the data folder. The phrase is printed once and never stored."
        ),
    )
    p.add_argument(
        "--recover",
        action="store_true",
        help="restore an identity from its phrase (read from stdin or a prompt)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing, different identity (its keys are lost)"
    )
    p.add_argument(
        "--encrypt",
        action="store_true",
        help="encrypt the new data folder at rest (store, blobs, identity) with a key from the phrase",
    )
    p.add_argument(
        "--keyring", action="store_true", help="with --encrypt: keep the at-rest key in the OS keyring"
    )
    add_common(p, client=False)
    p.set_defaults(func=cmd_init)

    p = sub.add_parser(
        "serve",
        help="run the node",
        description=(
            "Run the node: its HTTP server, its peer endpoints, its DHT directory and the follows it keeps. "
            "Creates the identity on first start. Prints the pubkey, the URL and a login link for the web "
            "page (keep the link secret: it holds the owner token)."
        ),
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", help="TCP port (default 8765; 0 picks a free one, the real URL is printed)")
    p.add_argument("--dht-port", dest="dht_port", help="UDP port of the DHT (default 8766; 0: any free port)")
    p.add_argument("--dht-name", dest="dht_name", help="name of the DHT to join (default 'default')")
    p.add_argument(
        "--bootstrap",
        dest="dht_bootstrap",
        metavar="HOST:PORT[,…]",
        help="DHT peers to join through (the invite secret comes from $STATEBUS_DHT_SECRET)",
    )
    p.add_argument("--log-level", dest="log_level", help="debug, info, warning, error or critical")
    p.add_argument(
        "--log-format",
        dest="log_format",
        help="text (default) or json: one JSON object a line, secrets masked",
    )
    p.add_argument(
        "--durability",
        dest="durability",
        help="power (fsync before each answer, the default) or process (survives kill -9, not a power cut)",
    )
    p.add_argument(
        "--full-check",
        dest="store_full_check",
        action="store_true",
        default=None,
        help="check the whole store (PRAGMA integrity_check) at start, not only quick_check",
    )
    p.add_argument(
        "--accept-store-loss",
        dest="accept_store_loss",
        action="store_true",
        default=None,
        help="the store is behind what this node committed (deleted): start over instead of refusing writes",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="once listening, print one JSON line (pubkey, url, dht, login, pid, data) instead of the banner",
    )
    p.add_argument(
        "--yes",
        action="store_true",
        help="on first start, show the recovery phrase without waiting for Enter (with --join: also accept "
        "the app's permissions)",
    )
    p.add_argument(
        "--join", metavar="LINK", help="first join with this invite link (`statebus join`), then serve"
    )
    add_common(p, client=False)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "phrase",
        help="show the recovery phrase of a new identity, once",
        description=(
            "Show the 24-word recovery phrase of this node's identity when `statebus serve` made it with "
            "no terminal to show it on (it then keeps it in <data>/identity/recovery_phrase, 0600). "
            "The phrase is printed once, then deleted."
        ),
    )
    p.add_argument(
        "--force", action="store_true", help="print it even when standard output is not a terminal"
    )
    add_common(p, client=False)
    p.set_defaults(func=cmd_phrase)

    p = sub.add_parser(
        "token",
        help="print the owner token",
        description=("Print the owner token (send it as `Authorization: Bearer <token>`). Keep it secret."),
    )
    add_common(p, client=False)
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("info", help="show the node's identity, URL, data folder, key count and version")
    add_common(p, client=True)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "get",
        help="print a key's value, or a subtree's children",
        description=(
            "Print a key's JSON value on one line (bytes values are written as they are). A KEY ending in"
            " '/' lists the subtree's children, one per line (names ending in '/' are subtrees)."
        ),
    )
    p.add_argument("key", metavar="KEY", help="/~/path, /<pubkey>/path or path (= /~/path)")
    p.add_argument("--range", metavar="R", help="read part of a JSON value, e.g. .a.b or [0]")
    p.add_argument("--show-version", action="store_true", help="print the Version on stderr")
    p.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="if the key has no value yet (404), wait up to SECONDS for one (a followed key arriving)",
    )
    p.add_argument(
        "--download",
        metavar="FILE",
        help="save the value's bytes to FILE ('-': stdout), showing progress on stderr (blobs, large values)",
    )
    add_common(p, client=True)
    p.set_defaults(func=cmd_get)

    p = sub.add_parser(
        "put",
        help="write a JSON value (or bytes)",
        description=(
            "Write VALUE (JSON text; '-' reads it from stdin) to KEY. With --range, replace only that part "
            "of the JSON value. With --content-type, VALUE is stored as bytes of that type. Prints the new "
            "version."
        ),
    )
    p.add_argument("key", metavar="KEY", help="/~/path, /<pubkey>/path or path (= /~/path)")
    p.add_argument("value", metavar="VALUE", help="JSON text, e.g. '{\"a\": 1}' or '\"text\"'; '-' for stdin")
    p.add_argument(
        "--range", metavar="R", help="patch this range of the value (PATCH, Content-Range: json R)"
    )
    p.add_argument("--version", dest="version", metavar="V", help="version id of this write")
    p.add_argument("--parents", metavar="V[,V]", help="versions this write is based on (comma-separated)")
    p.add_argument("--merge-type", dest="merge_type", choices=("lww", "yjs"), help="merge type of the key")
    p.add_argument(
        "--content-type", dest="content_type", metavar="TYPE", help="store VALUE as bytes of this type"
    )
    add_common(p, client=True)
    p.set_defaults(func=cmd_put)

    p = sub.add_parser("delete", help="delete a key")
    p.add_argument("key", metavar="KEY", help="/~/path, /<pubkey>/path or path (= /~/path)")
    add_common(p, client=True)
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser(
        "watch",
        help="print changes to a key or subtree live",
        description=(
            "Follow KEY (or every key under SUBTREE/) over SSE and print one line per change: "
            "`EVENT KEY JSON`. Reconnects by itself and resumes where it left off. Ctrl-C stops."
        ),
    )
    p.add_argument("key", metavar="KEY|SUBTREE/", help="a key, or a subtree ending in '/'")
    p.add_argument("--since", metavar="CURSOR", help="start after this cursor (an event id)")
    p.add_argument("--count", type=int, metavar="N", help="exit after N events")
    p.add_argument("--json", action="store_true", help="print each event as a JSON object")
    add_common(p, client=True)
    p.set_defaults(func=cmd_watch)
    keys_cli.register(sub)
    federation_cli.register(sub)
    apps_cli.register(sub)
    blobs_cli.register(sub)
    invites_cli.register(sub)
    backup_cli.register(sub)
    mirror_cli.register(sub)
    return parser


def fail(message: str) -> NoReturn:
    """Print ``statebus: <message>`` on stderr (one line) and exit with status 1."""
    line = " ".join(message.split()) or "failed"
    sys.stderr.write(f"statebus: error: {line}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``statebus`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    func: Callable[..., int] = args.func
    try:
        settings = _load_settings(args)
        if func in (cmd_info, cmd_get, cmd_put, cmd_delete, cmd_watch):
            client: Client = client_for(settings, args.url)
            with client:
                return func(args, settings, client)
        if func not in (cmd_init, cmd_token) and atrest.encrypted(settings.data_dir):
            atrest.unlock(settings.data_dir, key_file=settings.at_rest_key_file)  # once, for any reader
        return func(args, settings)
    except StatebusError as exc:
        fail(exc.detail or exc.code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_ERROR
    except OSError as exc:
        fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))


__all__ = ["CliError", "InvalidValue", "build_parser", "fail", "main"]
