"""Backup commands of the ``statebus`` CLI (the archive format is :mod:`statebus.server.archive`).

    statebus export [--subtree P] FILE    write a self-verifying archive (works while the node serves)
    statebus import FILE                  check an archive whole, then apply it (the node stopped)
    statebus encrypt --to NEW             copy this (stopped) node into a new folder encrypted at rest

``statebus.cli`` adds them with ``register(sub)``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from statebus.cli.options import add_common
from statebus.config import Settings
from statebus.errors import CliError
from statebus.identity import keystore


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from statebus.server.archive import export_archive  # the node stack: not loaded by other commands

    report = export_archive(settings.data_dir, args.file, args.subtree)
    what = report.subtree or "every key"
    print(
        f"exported {report.ops} ops ({report.op_bytes} bytes) and {report.blobs} blobs "
        f"({report.blob_bytes} bytes) of {what} at seq {report.seq} to {report.path}"
    )
    if report.blobs_missing:
        print(
            f"note: {len(report.blobs_missing)} blobs the ops point to are not on this node (still being "
            "fetched, or damaged): the archive lists them as blobs_missing; their keys will answer "
            "blob_pending after an import until a peer serves them"
        )
    if report.compacted:
        print(
            f"note: {len(report.compacted)} keys had ops folded by compaction (history_keep_ops): "
            "their folded history is not in the archive, only the ops after it"
        )
    return 0


async def _import(settings: Settings, archive: Any) -> Any:
    from statebus.runtime import highwater
    from statebus.server.archive import import_archive
    from statebus.server.assembly import build_node

    node = build_node(settings)  # refused (StoreInUse) while a node runs on this data folder
    try:
        report = await import_archive(node, archive, settings.quota_bytes_per_remote_namespace)
        if report.applied:
            highwater.accept(node, settings.data_dir)  # the owner put the data here: writes allowed
        return report
    finally:
        await node.aclose()


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from statebus.server.archive import read_archive

    archive = read_archive(args.file)  # every check first: a bad archive changes nothing
    if not keystore.exists(settings.data_dir):
        raise CliError(
            f"no node identity in {settings.data_dir}: create one with `statebus init` (or take the "
            "archive's node back with `statebus init --recover`) first"
        )
    report = asyncio.run(_import(settings, archive))
    print(
        f"imported {report.applied} ops of node {report.node} ({report.duplicates} already here, "
        f"{report.rejected} refused) and {report.blobs} blobs from {args.file}"
    )
    for reason in report.reasons:
        print(f"  refused: {' '.join(reason.split())}")
    if report.compacted:
        print(
            f"note: the archive lists {report.compacted} keys whose history before compaction "
            "it does not hold"
        )
    return 1 if report.rejected else 0


def cmd_encrypt(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from statebus.identity import atrest
    from statebus.server.encrypt import encrypt_folder  # the node stack: not loaded by other commands

    key_file = settings.at_rest_key_file
    target = Path(args.to)
    if key_file is not None and args.keyring:
        raise CliError("give --at-rest-key-file or --keyring, not both")
    if key_file is None and not args.keyring:
        raise CliError("say where the at-rest key goes: --at-rest-key-file FILE or --keyring")
    if args.keyring and not atrest.keyring_available():
        raise CliError(
            "no OS keyring is available here (install `keyring` and a backend), use --at-rest-key-file"
        )
    if key_file is not None and Path(key_file).exists():
        raise CliError(f"{key_file} exists: choose a new key file (an existing one is never overwritten)")
    for folder in (Path(settings.data_dir), target):
        if key_file is not None and folder.resolve() in Path(key_file).resolve().parents:
            raise CliError(f"the key file {key_file} would be inside {folder}; keep it elsewhere")
    report, key = encrypt_folder(Path(settings.data_dir), target)
    if key_file is not None:
        atrest.write_key_file(Path(key_file), key, target)
        where = f"its at-rest key is in {key_file}"
    else:
        atrest.keyring_store(report.pubkey, key)
        where = "its at-rest key is in the OS keyring"
    print(
        f"encrypted a copy of node {report.pubkey} into {target}: {report.ops} ops, {report.snapshots} "
        f"snapshots, {report.blobs} blobs, up to seq {report.seq}; {where}"
    )
    print(
        f"{settings.data_dir} is unchanged and still plaintext: serve from {target} from now on, then "
        "destroy the old folder (deleting a file does not wipe its blocks: docs/storage.md)"
    )
    return 0


def register(sub: Any) -> None:
    """Add ``export`` and ``import`` to the ``statebus`` subparsers."""
    p = sub.add_parser(
        "export",
        help="write a self-verifying backup archive of the node's signed ops",
        description=(
            "Write the node's signed ops (all, or a subtree's) with a manifest of hashes, signed by the "
            "node key, to FILE (a tar file; it must not exist). Reads one consistent snapshot of the store, "
            "so it works while the node serves. Format: docs/operations.md, 'Back up and restore'."
        ),
    )
    p.add_argument("file", metavar="FILE", help="the archive to write (e.g. statebus-2026-12-06.tar)")
    p.add_argument("--subtree", metavar="P", help="only the keys under this subtree, e.g. /~/notes/")
    add_common(p, client=False)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "import",
        help="check a backup archive, then apply its ops to this node (stopped)",
        description=(
            "Check FILE whole (members, hashes, the manifest's signature, every op's signature) and refuse "
            "it, changing nothing, if any check fails; then apply its ops to the node in the data folder "
            "(stop the node first), verified again like ops from a peer. Ops already here are skipped, so "
            "it merges into an existing node and can be repeated."
        ),
    )
    p.add_argument("file", metavar="FILE", help="an archive written by `statebus export`")
    add_common(p, client=False)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "encrypt",
        help="copy this node (stopped) into a new data folder encrypted at rest",
        description=(
            "Copy the node in the data folder (stop it first) into NEW, a new folder encrypted at rest: the "
            "store page by page (compacted history included), the blobs resealed, the identity sealed. The "
            "data folder is left as it is. The at-rest key derives from the node's identity (the same phrase "
            "opens it) and is written to --at-rest-key-file or kept in the OS keyring (--keyring)."
        ),
    )
    p.add_argument("--to", metavar="NEW", required=True, help="the new folder (absent or empty)")
    p.add_argument("--keyring", action="store_true", help="keep the at-rest key in the OS keyring")
    add_common(p, client=False)
    p.set_defaults(func=cmd_encrypt)
