"""Publishing an app: the author's pointer ``/<author>/.apps/<name>`` and the bundle bytes it names.

    writes = publish_writes(bundle, current=node_value_or_None)   what to store, in order
    pointer = parse_pointer(value)                                 a follower reads it back

The author's node stores, in its own namespace:

    /<author>/.apps/.bundles/<sha256>   a blob pointer {hash, size, type: application/vnd.statebus.bundle}
    /<author>/.apps/<name>              {"version", "hash", "size", "signature", "published": true}
    /<author>/.shares/apps              {"pattern": "/<author>/.apps/"}: peers may read and follow it

The bundle bytes are a blob (:mod:`statebus.blobs`): the author's node stores them in its blob store
and the ``.bundles/<sha256>`` key holds the signed pointer, so a bundle is bounded by
``app_bundle_max_bytes`` (8 MiB), not ``max_value_bytes``. A follower takes the pointer op like any
other and fetches the bytes apart, keeping them only if their sha256 is the pointer's
(:mod:`statebus.federation.blobs`); it then checks the bundle itself (hash, signature, contents)
before installing it (:mod:`statebus.apps.install`).

Rules:
    1. The bundle bytes are in the blob store, and their pointer written, before the pointer that
       names the bundle, so a follower that sees ``/<author>/.apps/<name>`` can find the bytes (ops of
       one node arrive in order). :class:`Write` ``blob`` carries the bytes to store first.
    2. Publishing never changes what this node runs: when the node has the app installed (the same
       key holds its install record, :mod:`statebus.apps.registry` rule 4), publishing another
       version is refused until the node upgrades to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from statebus.apps.bundle import Bundle, Signature
from statebus.apps.registry import APPS
from statebus.blobs import BLOB_TYPE, BlobPointer
from statebus.errors import InvalidBundle, InvalidValue
from statebus.types import JSON, PubKey

BUNDLE_TYPE = "application/vnd.statebus.bundle"
BUNDLES = ".bundles"
SHARE_ID = "apps"


def pointer_key(author: PubKey | str, name: str) -> str:
    return f"/{author}/{APPS}/{name}"


def bundle_key(author: PubKey | str, hash_: str) -> str:
    """The key holding the blob pointer of a published bundle's bytes."""
    return f"/{author}/{APPS}/{BUNDLES}/{hash_}"


def share_key(author: PubKey | str) -> str:
    return f"/{author}/.shares/{SHARE_ID}"


@dataclass(frozen=True, slots=True)
class Pointer:
    version: str
    hash: str
    size: int
    signature: Signature


def parse_pointer(value: Any) -> Pointer:
    """A published pointer (the signature is parsed, not yet checked: :func:`open_bundle` does)."""
    if not isinstance(value, dict) or "signature" not in value:
        raise InvalidBundle("a published app is {version, hash, size, signature}")
    sig = Signature.from_json(value.get("signature"))
    version, hash_, size = value.get("version"), value.get("hash"), value.get("size")
    if hash_ != sig.hash or version != sig.version:
        raise InvalidBundle("the pointer's hash or version is not the one its signature covers")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidBundle("the pointer's size is a byte count")
    return Pointer(sig.version, sig.hash, size, sig)


def bundle_pointer(bundle: Bundle) -> BlobPointer:
    """The blob pointer of a bundle's bytes (its sha256 is the bundle id)."""
    return BlobPointer(bundle.hash, bundle.size, BUNDLE_TYPE)


@dataclass(frozen=True, slots=True)
class Write:
    key: str
    """Relative to this node: ``/~/…``."""
    value: JSON | bytes
    content_type: str | None = None
    blob: bytes | None = None
    """Bytes to put in the blob store before the write (its value is their pointer)."""


def publish_writes(bundle: Bundle, node: PubKey, current: Mapping[str, Any] | None) -> list[Write]:
    """The writes that publish ``bundle`` from its author's node ``node`` (rules 1 and 2). ``current``
    is the value now at ``/~/.apps/<name>`` (the install record or an older pointer), or None."""
    name = bundle.manifest.name
    if bundle.manifest.author != node:
        raise InvalidValue(
            f"{name} is by {bundle.manifest.author}; this node is {node}: an app is published from its "
            "author's node (in the author's namespace)"
        )
    installed = current is not None and "granted" in current
    if installed and current is not None and current.get("hash") != bundle.hash:
        raise InvalidValue(
            f"this node runs {name} {current.get('version')}: upgrade it to {bundle.manifest.version} first "
            "(`statebus app upgrade`), then publish"
        )
    pointer: dict[str, Any] = dict(current) if installed and current is not None else {}
    pointer.update(
        {
            "version": bundle.manifest.version,
            "hash": bundle.hash,
            "size": bundle.size,
            "signature": bundle.signature.to_json(),
            "published": True,
        }
    )
    return [
        Write(bundle_key("~", bundle.hash), bundle_pointer(bundle).encode(), BLOB_TYPE, bundle.data),
        Write(pointer_key("~", name), pointer),
        Write(share_key("~"), {"pattern": f"/{node}/{APPS}/"}),
    ]


__all__ = [
    "BUNDLE_TYPE",
    "Pointer",
    "Write",
    "bundle_key",
    "bundle_pointer",
    "parse_pointer",
    "pointer_key",
    "publish_writes",
    "share_key",
]
