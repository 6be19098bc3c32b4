"""Writing as a key that is not the node owner: key files, signed ops and RFC 9421-signed requests.

A delegated key (a device, an app, a persona) writes by sending an op it signed itself, in a request it
signed too (see docs/trust-model.md). This module holds the pieces the ``--as KEYFILE`` option of
``statebus put``/``delete`` uses, and that tests and scripts can use directly::

    me = load_key_file("laptop.key")
    with httpx.Client(base_url=url) as http:
        version = write_as(http, me, "/<node>/chirp/1", "hello")

Key files have the keystore's format (``{"v": 1, "secret", "chain_code", "path", "pubkey"}``), mode
0600; they are created with ``O_EXCL`` (never overwritten) and refused when others can read them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx

from statebus.cli.client import check
from statebus.errors import Forbidden, InvalidValue, PeerUnavailable
from statebus.identity import Identity, keystore, sign_op, sign_request
from statebus.oplog import Op, Patch, encode_op, mint_version
from statebus.types import Key, Version

OP_MEDIA_TYPE = "application/vnd.statebus.op+json"
KEY_FILE_VERSION = 1
_MINTED = re.compile(r'^"?(\d{1,16})-')


# ---------------------------------------------------------------------- key files


def write_key_file(path: str | os.PathLike[str], identity: Identity) -> Path:
    """Write ``identity``'s secret key to a new file (mode 0600, keystore format).

    Raises:
        Forbidden: the file exists already (it is never overwritten).
    """
    target = Path(path)
    secret, chain = identity.export_secret()
    doc = {
        "v": KEY_FILE_VERSION,
        "secret": base64.b64encode(secret).decode("ascii"),
        "chain_code": base64.b64encode(chain).decode("ascii") if chain is not None else None,
        "path": identity.path,
        "pubkey": identity.pubkey,
    }
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise Forbidden(f"{target} already exists; it is not overwritten (choose another --out)") from None
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(json.dumps(doc, sort_keys=True).encode())
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return target


def load_key_file(path: str | os.PathLike[str]) -> Identity:
    """Read a key file written by :func:`write_key_file` (or a keystore ``node_key.json``).

    Raises:
        NotFound: no such file.
        Forbidden: the group or others can read it, or it is not a regular file.
        InvalidValue: it is not a key file (the detail never contains the secret).
    """
    target = Path(path)
    raw = keystore.read_private_file(target, missing="give the file `statebus keys derive --out` wrote")
    try:
        doc = json.loads(raw)
        secret = base64.b64decode(doc["secret"], validate=True)
        chain_text = doc.get("chain_code")
        chain = None if chain_text is None else base64.b64decode(chain_text, validate=True)
        stored_path = doc.get("path")
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, binascii.Error):
        raise InvalidValue(f"{target} is not a statebus key file") from None
    if doc.get("v") != KEY_FILE_VERSION:
        raise InvalidValue(f"{target} has an unknown key file format (expected v={KEY_FILE_VERSION})")
    identity = Identity(secret, chain_code=chain, path=stored_path if isinstance(stored_path, str) else None)
    if doc.get("pubkey") != identity.pubkey:
        raise InvalidValue(f"{target} is inconsistent: its public key does not match its secret key")
    return identity


# ---------------------------------------------------------------------- ops


def parse_versions(header: str | None) -> tuple[Version, ...]:
    """The versions of a ``Version`` header (``"1-abc", "2-def"``)."""
    if not header:
        return ()
    try:
        parsed = json.loads(f"[{header}]")
    except ValueError:
        raise InvalidValue(f"the node sent an unreadable Version header: {header[:80]!r}") from None
    return tuple(str(v) for v in parsed if isinstance(v, str))


def next_clock(parents: tuple[Version, ...], now: float | None = None) -> int:
    """A Lamport clock above every parent's: minted versions start with their clock (``<clock>-…``).

    A parent with a named version (no clock in it) makes the clock the Unix time in seconds, which is
    above any key's history in practice and within the 2^32 a node lets an op jump.
    """
    clocks = []
    for v in parents:
        m = _MINTED.match(v)
        if m is None:
            clocks.append(int(time.time() if now is None else now))
        else:
            clocks.append(int(m.group(1)))
    return max(clocks, default=0) + 1


def make_op(
    identity: Identity,
    key: Key,
    kind: str,
    body: Any = None,
    *,
    parents: tuple[Version, ...] = (),
    content_type: str | None = None,
    version: Version | None = None,
    merge: str = "lww",
    clock: int | None = None,
) -> Op:
    """An op on ``key`` by ``identity``, based on ``parents``, with a minted (or given) version, signed.

    ``kind`` is ``set`` (``body`` a JSON value, or bytes with ``content_type``), ``patch`` (``body`` a
    sequence of :class:`~statebus.oplog.Patch`) or ``delete``. ``clock`` defaults to
    :func:`next_clock` of ``parents``.
    """
    clock = next_clock(parents) if clock is None else clock
    op = Op(key, "", parents, identity.pubkey, clock, merge, kind, body, content_type)
    return sign_op(dataclasses.replace(op, version=version or mint_version(op)), identity)


def signed_request(
    http: httpx.Client, identity: Identity, method: str, path: str, **kw: Any
) -> httpx.Response:
    """Send a request signed with ``identity`` (RFC 9421); transport failures become StatebusError."""
    request = http.build_request(method, path, **kw)
    request.headers.update(
        sign_request(request.method, str(request.url), request.headers, request.content, identity)
    )
    try:
        return http.send(request)
    except httpx.HTTPError as exc:
        raise PeerUnavailable(
            f"request to {http.base_url} failed: {type(exc).__name__}", status_hint=503
        ) from None


def current_versions(http: httpx.Client, identity: Identity, path: str) -> tuple[Version, ...] | None:
    """The current versions of the key at URL ``path``, read with a signed GET.

    Returns ``()`` when the key does not exist and ``None`` when the key may not read it (a
    write-only grant, or no rights at all: the write itself then says why).
    """
    response = signed_request(http, identity, "GET", path)
    if response.status_code == 404:
        return ()
    if response.status_code in (401, 403):
        return None
    check(response)
    return parse_versions(response.headers.get("version"))


def write_as(
    http: httpx.Client,
    identity: Identity,
    key: Key,
    value: Any = None,
    *,
    path: str | None = None,
    kind: str = "set",
    content_type: str | None = None,
    patch_range: str | None = None,
    version: Version | None = None,
    parents: tuple[Version, ...] | None = None,
) -> Version:
    """Write ``key`` as ``identity``: read its current version, send a signed op, return the new version.

    Args:
        http: a client whose ``base_url`` is the node.
        identity: the writing key (a delegate of the namespace, or a key an ACL rule lets write).
        key: the full key, ``/<pubkey>/…``.
        value: the JSON value (or bytes with ``content_type``; the content of ``patch_range``).
        path: the URL path to send to (default: ``key``).
        kind: ``set`` or ``delete``; ``patch_range`` makes it a patch.
        version: the version to give the write (default: minted from the op).
        parents: the versions it is based on (default: the key's current ones).

    Raises:
        StatebusError: the node refused the op (its reason, one line) or could not be reached.
    """
    url_path = path or key
    clock: int | None = None
    if parents is None:
        parents = current_versions(http, identity, url_path)
        if parents is None:  # the key may not read it: write on top of whatever is there, by time
            parents, clock = (), int(time.time())
    body: Any = value
    if patch_range is not None:
        kind, body = "patch", (Patch(patch_range, value),)
    op = make_op(
        identity,
        key,
        kind,
        body if kind != "delete" else None,
        parents=parents,
        content_type=content_type,
        version=version,
        clock=clock,
    )
    response = signed_request(
        http, identity, "PUT", url_path, content=encode_op(op), headers={"Content-Type": OP_MEDIA_TYPE}
    )
    check(response)
    return op.version


__all__ = [
    "OP_MEDIA_TYPE",
    "current_versions",
    "load_key_file",
    "make_op",
    "next_clock",
    "parse_versions",
    "signed_request",
    "write_as",
    "write_key_file",
]
