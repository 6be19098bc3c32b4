"""App bundles: a deterministic archive of an app's folder, its id (sha256) and its signature.

    data = pack(folder, max_bytes)                  the same bytes on every machine
    sig = sign(data, identity, delegation=None)     a Signature: author (or delegated app key) signs the id
    bundle = open_bundle(data, sig, max_bytes)      checked: a Bundle (manifest, files), or InvalidBundle

The archive is a POSIX ustar file (``tar tvf`` reads it) with only regular files, sorted by path
(bytewise), each with mode 0644, uid/gid 0, no user or group names and mtime 0, ending with the
standard zero blocks and padding. ``sha256(archive)`` is the bundle id (``hash``).

Rules:
    1. :func:`open_bundle` is the only way to a :class:`Bundle`, and it checks everything before it
       returns: size, hash, signature (the manifest's author, or a key it delegated ``/<author>/.apps/``
       to, with that delegation record carried in the signature), every entry's type (regular files
       only: no symlinks, hardlinks, devices, folders), every path (:func:`check_path`: no ``..``,
       no absolute path), duplicates, the manifest, the files it names, and that the archive is
       canonical (re-packing its files gives the same bytes). So a refused bundle installs nothing.
    2. The archive is parsed in memory and never extracted; web files are served from memory.
    3. Packing refuses what opening would refuse (symlinks, bad names), so a packed bundle opens.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statebus.apps.manifest import MANIFEST_FILE, Manifest, check_path
from statebus.apps.patterns import Grants
from statebus.apps.spec import AppSpec
from statebus.errors import InvalidBundle, InvalidValue, StatebusError, TooLarge
from statebus.identity import Identity, Keyring, parse_record, record_key, verify_signature
from statebus.keys import is_pubkey
from statebus.types import JSON, PubKey

SIGNATURE_DOMAIN = b"statebus-bundle-v1\n"
SIGNATURE_TYPE = "statebus/bundle-signature"
MAX_FILES = 2000
BUNDLE_SUFFIX = ".sbx"
SIGNATURE_SUFFIX = ".sig"


def bundle_hash(data: bytes) -> str:
    """The bundle id: lowercase hex sha256 of the archive."""
    return hashlib.sha256(data).hexdigest()


def _archive(files: Mapping[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(files, key=lambda p: p.encode()):
            info = tarfile.TarInfo(path)
            info.size = len(files[path])
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            tar.addfile(info, io.BytesIO(files[path]))
    return out.getvalue()


def collect(folder: str | os.PathLike[str], max_bytes: int) -> dict[str, bytes]:
    """The files of an app folder, by bundle path. Names starting with ``.`` (``.git``) are left out;
    a symlink, a device or a bad name is refused (rule 3)."""
    root = Path(folder)
    if not (root / MANIFEST_FILE).is_file():
        raise InvalidBundle(f"{root} holds no {MANIFEST_FILE}: it is not an app folder")
    files: dict[str, bytes] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for d in list(dirnames):
            if d.startswith("."):
                dirnames.remove(d)
            elif (here / d).is_symlink():
                raise InvalidBundle(
                    f"{(here / d).relative_to(root)} is a symlink: a bundle holds regular files only"
                )
        for name in filenames:
            if name.startswith("."):
                continue
            full = here / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink() or not full.is_file():
                raise InvalidBundle(f"{rel} is a symlink or special file: a bundle holds regular files only")
            check_path(rel, "file")
            data = full.read_bytes()
            total += len(data)
            if total > max_bytes or len(files) >= MAX_FILES:
                raise TooLarge(f"{root} holds more than {max_bytes} bytes or {MAX_FILES} files")
            files[rel] = data
    return files


def pack(folder: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The deterministic archive of an app folder, after checking it opens (its manifest, its files).

    Raises:
        InvalidBundle: the manifest or a file is refused (the detail says which and why).
        TooLarge: the archive would be over ``max_bytes``.
    """
    files = collect(folder, max_bytes)
    data = _archive(files)
    if len(data) > max_bytes:
        raise TooLarge(
            f"the bundle is {len(data)} bytes, over the limit of {max_bytes} (app_bundle_max_bytes)"
        )
    _check_contents(files)
    return data


@dataclass(frozen=True, slots=True)
class Signature:
    """Who vouches for a bundle: ``signer`` signed ``SIGNATURE_DOMAIN + canonical JSON`` of
    {type, v, hash, name, version, signer}. When the signer is not the author, ``delegation`` is the
    author's delegation record for it (covering ``/<author>/.apps/<name>``)."""

    hash: str
    name: str
    version: str
    signer: PubKey
    sig: bytes
    delegation: Mapping[str, Any] | None = None

    def body(self) -> dict[str, JSON]:
        return {
            "type": SIGNATURE_TYPE,
            "v": 1,
            "hash": self.hash,
            "name": self.name,
            "version": self.version,
            "signer": self.signer,
        }

    def signing_bytes(self) -> bytes:
        return SIGNATURE_DOMAIN + json.dumps(self.body(), sort_keys=True, separators=(",", ":")).encode()

    def to_json(self) -> dict[str, JSON]:
        out = self.body()
        out["sig"] = base64.b64encode(self.sig).decode()
        if self.delegation is not None:
            out["delegation"] = dict(self.delegation)
        return out

    @classmethod
    def from_json(cls, value: Any) -> Signature:
        if not isinstance(value, dict) or value.get("type") != SIGNATURE_TYPE or value.get("v") != 1:
            raise InvalidBundle(f"the signature is not a {SIGNATURE_TYPE} v1 object")
        extra = set(value) - {"type", "v", "hash", "name", "version", "signer", "sig", "delegation"}
        if extra:
            raise InvalidBundle(f"the signature has unknown fields {sorted(extra)}")
        h, name, version, signer = (value.get(k) for k in ("hash", "name", "version", "signer"))
        if not isinstance(h, str) or len(h) != 64 or not all(c in "0123456789abcdef" for c in h):
            raise InvalidBundle("the signature's hash is 64 lowercase hex characters")
        if not isinstance(name, str) or not isinstance(version, str):
            raise InvalidBundle("the signature names the app and its version")
        if not isinstance(signer, str) or not is_pubkey(signer):
            raise InvalidBundle("the signature's signer is a public key")
        try:
            sig = base64.b64decode(value.get("sig", ""), validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidBundle("the signature's sig is not base64") from None
        delegation = value.get("delegation")
        if delegation is not None and not isinstance(delegation, dict):
            raise InvalidBundle("the signature's delegation is a delegation record")
        return cls(h, name, version, signer, sig, delegation)

    @classmethod
    def parse(cls, raw: bytes | str) -> Signature:
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise InvalidBundle("the signature file is not JSON") from None
        return cls.from_json(value)


def sign(data: bytes, signer: Identity, delegation: Mapping[str, Any] | None = None) -> Signature:
    """Sign a packed bundle with the author's key, or with an app key the author delegated
    ``/<author>/.apps/`` to (pass that record as ``delegation``). The manifest is read from ``data``."""
    manifest = _manifest_of(_entries(data, len(data)))
    unsigned = Signature(bundle_hash(data), manifest.name, manifest.version, signer.pubkey, b"", delegation)
    signed = Signature(
        unsigned.hash,
        unsigned.name,
        unsigned.version,
        signer.pubkey,
        signer.sign(unsigned.signing_bytes()),
        delegation,
    )
    check_signer(signed, manifest)
    return signed


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle that passed every check (rule 1): its bytes, id, manifest, files and signature."""

    data: bytes
    hash: str
    manifest: Manifest
    files: Mapping[str, bytes]
    signature: Signature

    @property
    def size(self) -> int:
        return len(self.data)

    def spec(self, grants: Grants) -> AppSpec:
        """What the node runs for this bundle with ``grants`` (:func:`app_spec`)."""
        return app_spec(self.manifest, self.files, self.hash, grants)

    def text(self, path: str) -> str:
        return self.files[path].decode("utf-8")


def check_signer(
    signature: Signature, manifest: Manifest, now: float | None = None, *, stored: Any = None
) -> None:
    """The signer is the manifest's author, or holds a live delegation from it covering
    ``/<author>/.apps/<name>`` (the record travels in the signature), and the signature verifies.
    ``stored``: the author's record for the signer as this node holds it (``/<author>/.keys/<signer>``,
    replicated with the author's data): a newer one wins, so a revoked release key is refused."""
    if signature.name != manifest.name or signature.version != manifest.version:
        raise InvalidBundle(
            f"the signature is for {signature.name} {signature.version}, the bundle is {manifest.name} "
            f"{manifest.version}"
        )
    author = manifest.author
    if signature.signer != author:
        if signature.delegation is None:
            raise InvalidBundle(
                f"the bundle is signed by {signature.signer}, not by its author {author}, and carries no "
                "delegation from the author"
            )
        ring = Keyring()
        try:
            ring.add(parse_record(signature.delegation, record_key(author, signature.signer)))
        except StatebusError as exc:
            raise InvalidBundle(f"the signature's delegation is refused: {exc.detail}") from None
        if stored is not None:
            with contextlib.suppress(StatebusError):  # a broken stored record adds nothing
                ring.add_stored(record_key(author, signature.signer), stored)
        why = ring.why_not(
            signature.signer, f"/{author}/.apps/{manifest.name}", time.time() if now is None else now
        )
        if why is not None:
            raise InvalidBundle(f"the bundle's signer may not sign for {author}: {why}")
    if not verify_signature(signature.signer, signature.signing_bytes(), signature.sig):
        raise InvalidBundle(f"the bundle's signature does not verify (signer {signature.signer})")


def _entries(data: bytes, max_bytes: int) -> dict[str, bytes]:
    if len(data) > max_bytes:
        raise TooLarge(
            f"the bundle is {len(data)} bytes, over the limit of {max_bytes} (app_bundle_max_bytes)"
        )
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                kind = (
                    "a symlink"
                    if info.issym()
                    else "a hardlink"
                    if info.islnk()
                    else "a device"
                    if info.isdev()
                    else "a folder"
                    if info.isdir()
                    else None
                    if info.isreg()
                    else "a special entry"
                )
                if kind is not None:
                    raise InvalidBundle(
                        f"entry {info.name[:80]!r} is {kind}: a bundle holds regular files only"
                    )
                check_path(info.name, "entry")
                if info.name in files:
                    raise InvalidBundle(f"entry {info.name!r} appears twice")
                if len(files) >= MAX_FILES:
                    raise InvalidBundle(f"a bundle holds at most {MAX_FILES} files")
                f = tar.extractfile(info)
                if f is None:  # pragma: no cover - regular files always have a body
                    raise InvalidBundle(f"entry {info.name!r} has no body")
                files[info.name] = f.read()
    except (tarfile.TarError, EOFError, UnicodeError) as exc:
        raise InvalidBundle(f"the bundle is not a readable archive ({type(exc).__name__})") from None
    return files


def _manifest_of(files: Mapping[str, bytes]) -> Manifest:
    if MANIFEST_FILE not in files:
        raise InvalidBundle(f"the bundle holds no {MANIFEST_FILE}")
    return Manifest.parse(files[MANIFEST_FILE])


def _check_contents(files: Mapping[str, bytes]) -> Manifest:
    manifest = _manifest_of(files)
    for path in manifest.files():
        if path not in files:
            raise InvalidBundle(f"the manifest names {path}, which is not in the bundle")
    for pattern, path in manifest.schemas.items():
        try:
            schema = json.loads(files[path])
        except (ValueError, UnicodeDecodeError):
            raise InvalidBundle(f"schema {path} (for {pattern}) is not JSON") from None
        if not isinstance(schema, (dict, bool)):
            raise InvalidBundle(f"schema {path} (for {pattern}) is not a JSON Schema (an object)")
    if manifest.handlers is not None:
        try:
            files[manifest.handlers.source].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidBundle(f"handlers source {manifest.handlers.source} is not UTF-8 text") from None
    if manifest.web is not None and f"{manifest.web}index.html" not in files:
        raise InvalidBundle(
            f"the manifest serves {manifest.web} but the bundle has no {manifest.web}index.html"
        )
    app_spec(
        manifest, files, "0" * 64, manifest.permissions
    )  # handler/schema patterns inside the write grant
    return manifest


def app_spec(manifest: Manifest, files: Mapping[str, bytes], hash_: str, grants: Grants) -> AppSpec:
    """The :class:`AppSpec` the node runs: the manifest's handlers and parsed schemas, with ``grants``
    (what the owner granted, which may differ from what the manifest asks)."""
    handlers = manifest.handlers
    try:
        return AppSpec(
            name=manifest.name,
            version=manifest.version,
            bundle_hash=hash_,
            author=manifest.author,
            grants=grants,
            handler_source=files[handlers.source].decode("utf-8") if handlers is not None else None,
            validate=dict(handlers.validate) if handlers is not None else {},
            derive=dict(handlers.derive) if handlers is not None else {},
            on_write=dict(handlers.on_write) if handlers is not None else {},
            schemas={pattern: json.loads(files[path]) for pattern, path in manifest.schemas.items()},
        )
    except InvalidValue as exc:
        raise InvalidBundle(f"{MANIFEST_FILE}: {exc.detail}") from None


def open_bundle(
    data: bytes, signature: Signature, max_bytes: int, *, expect_hash: str | None = None
) -> Bundle:
    """Check a bundle (rule 1) and return it; ``expect_hash``: the id a pointer or a URL promised.

    Raises:
        TooLarge: over ``max_bytes``.
        InvalidBundle: anything else; the detail says what. Nothing is installed.
    """
    if len(data) > max_bytes:
        raise TooLarge(
            f"the bundle is {len(data)} bytes, over the limit of {max_bytes} (app_bundle_max_bytes)"
        )
    h = bundle_hash(data)
    if expect_hash is not None and h != expect_hash:
        raise InvalidBundle(
            f"the bundle's sha256 is {h}, not the {expect_hash} it was published as (tampered?)"
        )
    if signature.hash != h:
        raise InvalidBundle(
            f"the bundle's sha256 is {h}, not the {signature.hash} its signature covers (tampered?)"
        )
    files = _entries(data, max_bytes)
    manifest = _check_contents(files)
    check_signer(signature, manifest)
    if _archive(files) != data:
        raise InvalidBundle(
            "the archive is not canonical (sorted, fixed modes and times): repack it with `statebus app pack`"
        )
    return Bundle(data, h, manifest, dict(files), signature)


__all__ = [
    "BUNDLE_SUFFIX",
    "SIGNATURE_SUFFIX",
    "Bundle",
    "Signature",
    "app_spec",
    "bundle_hash",
    "check_signer",
    "collect",
    "open_bundle",
    "pack",
    "sign",
]
