"""Backup commands of the ``statebus`` CLI (the archive format is :mod:`statebus.server.archive`).

    statebus export [--subtree P] FILE    write a self-verifying archive (works while the node serves)
    statebus import FILE                  check an archive whole, then apply it (the node stopped)

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
