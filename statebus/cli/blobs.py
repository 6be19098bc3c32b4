"""``statebus blob fetch KEY|SHA256 [--out FILE]``: have the running node fetch a blob now, with progress.

The node does the fetch (``POST /.well-known/statebus/blob-fetch``, :mod:`statebus.http.blob_fetch`):
its swarm first (the offer of the node the pointer came from, and the seeders our DHT names), then
HTTP, every byte checked against the owner-signed pointer; it keeps the blob and, with a swarm,
seeds it. This command prints the node's progress on stderr in ``get --download``'s words, then
one line saying how the blob came; ``--out`` then saves the key's bytes as ``get --download`` does.

Rules:

1. Bad input is one line and exit 1, and nothing is fetched: a target that is neither a key nor a
   sha256, a key that does not point to a blob, ``--out`` with a sha256 (the bytes are read through
   a key), a node that is not running.
2. A failed fetch is one line with the node's reason (``bad_blob``, ``not_found`` …), exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any
from urllib.parse import unquote

import httpx

from statebus.cli.client import (
    PROGRESS_EVERY,
    _progress,
    check,
    client_for,
    download,
    key_path,
    transport_error,
)
from statebus.cli.options import add_common
from statebus.config import Settings
from statebus.errors import CliError, InvalidValue, RemoteError

FETCH_PATH = "/.well-known/statebus/blob-fetch"
FETCH_TIMEOUT = 3600.0
VIA = {"local": "already here", "swarm": "over the swarm", "http": "over HTTP"}


def _is_hash(target: str) -> bool:
    return len(target) == 64 and all(c in "0123456789abcdefABCDEF" for c in target)


def cmd_blob_fetch(args: argparse.Namespace, settings: Settings) -> int:
    target = args.target if _is_hash(args.target) else key_path(args.target)  # URL-quoted
    if _is_hash(target) and args.out:
        raise InvalidValue("--out saves a key's bytes: name the key that points to the blob, not its sha256")
    if target.endswith("/"):
        raise InvalidValue("name one key that points to a blob, not a subtree")
    client = client_for(settings, args.url)
    with client:
        last: dict[str, Any] = {}
        shown = time.monotonic()
        try:
            with client.http.stream(
                "POST", FETCH_PATH, params={"target": unquote(target)}, timeout=FETCH_TIMEOUT
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    if r.status_code == 404 and "json" not in r.headers.get("content-type", ""):
                        raise CliError(f"{client.url} cannot fetch blobs (it runs without federation)")
                    check(r)
                for raw in r.iter_lines():
                    line = json.loads(raw) if raw.strip() else {}
                    done, total = line.get("done", 0), line.get("total", 0)
                    if total and done < total and time.monotonic() - shown >= PROGRESS_EVERY:
                        shown = time.monotonic()  # (the whole blob is said once, below)
                        peers = line.get("peers", 0)
                        sys.stderr.write(
                            _progress(done, total) + (f" from {peers} peer(s)\n" if peers else "\n")
                        )
                    last = line
        except httpx.HTTPError as exc:
            raise transport_error(client.url, exc) from None
        if "error" in last:
            raise RemoteError(f"{last['error']}: {last.get('detail', '')}", remote_code=str(last["error"]))
        if "hash" not in last:
            raise CliError("the node ended the fetch without an answer")
        size = int(last["size"])
        sys.stderr.write(f"{_progress(size, size)}\n")
        print(f"fetched {last['hash']} ({size} bytes) {VIA.get(str(last['via']), last['via'])}")
        if args.out:
            return download(client, target, args.out)
    return 0


def register(sub: Any) -> None:
    """Add ``blob fetch`` to the ``statebus`` parser."""
    blob = sub.add_parser(
        "blob", help="fetch blobs", description="Blobs (binary values stored by their sha256)."
    )
    bsub = blob.add_subparsers(dest="blob_command", metavar="SUBCOMMAND", required=True)
    p = bsub.add_parser(
        "fetch",
        help="have the node fetch a blob now (swarm first, HTTP fallback), with progress",
        description="Have the running node fetch the blob that KEY points to (a followed key), or the blob "
        "SHA256 from the seeders the DHT names: over the swarm first, then over HTTP from the node the "
        "pointer came from, checked against the owner-signed pointer. Progress on stderr; the node keeps "
        "the blob.",
    )
    p.add_argument(
        "target", metavar="KEY|SHA256", help="/<pubkey>/path of a blob pointer, or a blob's sha256"
    )
    p.add_argument(
        "--out", metavar="FILE", help="then save the key's bytes to FILE ('-': stdout), as get --download"
    )
    add_common(p, client=True)
    p.set_defaults(func=cmd_blob_fetch)
