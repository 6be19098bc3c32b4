"""The node identity on disk, in ``<data>/identity/`` (directory mode 0700, every file 0600).

Files::

    <data>/identity/               0700
        node_key.json              0600  {"v": 1, "secret": b64, "chain_code": b64|null,
                                          "path": "m/44'/7433'/0'", "pubkey": "<52 chars>"}
                                         or, in a folder encrypted at rest (:mod:`atrest`),
                                         {"v": 1, "pubkey": …, "sealed": b64}: the same document
                                         sealed under the at-rest key
        owner_token                0600  43 characters: 32 random bytes, urlsafe base64, no padding
        recovery_phrase            0600  only until shown: the phrase of an identity made where no
                                         terminal could show it (see below)

The seed phrase is **not stored** once shown: :func:`init` returns it to be shown once, and it is
needed only by :func:`recover`. The node keeps the namespace root's secret key and chain code, enough
to sign and to derive the node's sub-keys, but not the BIP39 seed, so a stolen data folder cannot
derive keys for other purposes (wallets, other coin types) that share the phrase.

``init(keep_phrase=True)`` (a node's first start) writes the phrase to ``recovery_phrase`` as well,
so that it is never lost when there was nobody to show it to (``statebus serve`` under a supervisor,
its stderr in a log file). :func:`take_phrase` returns it and deletes the file: it is shown once
(``statebus phrase``). While it waits, a copy of the data folder holds the phrase.

Files are created with ``os.open(O_CREAT | O_EXCL, 0o600)`` under a temporary name, fsynced, then
linked into place (``os.link`` fails if the target exists; ``os.replace`` when forced). :func:`load`
refuses a key file that the group or others can read, as ssh does.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from statebus.errors import Forbidden, InvalidValue, NotFound
from statebus.identity import atrest
from statebus.identity.keys import ROOT_PATH, Identity, identity_from_mnemonic, new_mnemonic

IDENTITY_DIR = "identity"
KEY_FILE = "node_key.json"
TOKEN_FILE = "owner_token"
PHRASE_FILE = "recovery_phrase"
FORMAT_VERSION = 1


def identity_dir(data_dir: str | os.PathLike[str]) -> Path:
    """``<data>/identity``."""
    return Path(data_dir) / IDENTITY_DIR


def _ensure_dir(data_dir: str | os.PathLike[str]) -> Path:
    d = identity_dir(data_dir)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    return d


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_secret_file(path: Path, data: bytes, *, force: bool) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically; refuse to replace unless ``force``."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise Forbidden(f"{path} already exists; pass force=True to replace it") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def write_private_file(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write (or replace) ``path`` with ``data``, readable by the user alone (mode 0600) from its
    creation, whatever the umask: for any file holding a token, a login link or a key."""
    target = Path(path)
    _write_secret_file(target, data, force=True)
    return target


def read_private_file(path: Path, *, missing: str = "run init or recover first") -> bytes:
    """The bytes of a secret file, refusing one that is not a regular file or that the group or
    others can read (Forbidden), or that does not exist (NotFound, with the ``missing`` hint)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist; {missing}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise Forbidden(f"{path} is not a regular file")
        if mode & 0o077:
            raise Forbidden(f"{path} is readable by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it")
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _b64e(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _b64d(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidValue(f"identity file: {what} is missing")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidValue(f"identity file: {what} is not base64") from None


def save(
    data_dir: str | os.PathLike[str], identity: Identity, *, force: bool = False, key: bytes | None = None
) -> Path:
    """Write ``identity`` to ``<data>/identity/node_key.json`` (0600), sealed under the at-rest ``key``
    when one is given (a folder encrypted at rest).

    Raises:
        Forbidden: an identity exists already and ``force`` is false.
    """
    if key is None:
        key = atrest.key_for(data_dir)  # a folder encrypted at rest keeps its identity sealed
    d = _ensure_dir(data_dir)
    secret, chain = identity.export_secret()
    doc = {
        "v": FORMAT_VERSION,
        "secret": _b64e(secret),
        "chain_code": _b64e(chain) if chain is not None else None,
        "path": identity.path,
        "pubkey": identity.pubkey,
    }
    path = d / KEY_FILE
    body = json.dumps(doc, sort_keys=True).encode()
    if key is not None:
        sealed = atrest.seal(key, "identity", body)
        body = json.dumps({"v": FORMAT_VERSION, "pubkey": identity.pubkey, "sealed": _b64e(sealed)}).encode()
    _write_secret_file(path, body, force=force)
    return path


def load(data_dir: str | os.PathLike[str]) -> Identity:
    """Read the node identity.

    Raises:
        NotFound: there is none yet.
        Forbidden: the file is readable by others.
        InvalidValue: the file is corrupt (the detail never contains the secret).
        StoreLocked: the folder is encrypted at rest and this process has not unlocked it
            (:func:`statebus.identity.atrest.unlock`).
    """
    raw = read_private_file(identity_dir(data_dir) / KEY_FILE)
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict) and "sealed" in doc:
            key = atrest.key_for(data_dir)
            if key is None:
                raise InvalidValue("identity file is sealed, but the data folder is not encrypted at rest")
            doc = json.loads(atrest.unseal(key, "identity", _b64d(doc["sealed"], "sealed")))
    except (ValueError, UnicodeDecodeError):
        raise InvalidValue("identity file is not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION:
        raise InvalidValue(f"identity file has an unknown format (expected v={FORMAT_VERSION})")
    chain_text = doc.get("chain_code")
    chain = None if chain_text is None else _b64d(chain_text, "chain_code")
    path = doc.get("path")
    identity = Identity(
        _b64d(doc.get("secret"), "secret"),
        chain_code=chain,
        path=path if isinstance(path, str) else None,
    )
    if doc.get("pubkey") != identity.pubkey:
        raise InvalidValue("identity file is inconsistent: its public key does not match its secret key")
    return identity


def exists(data_dir: str | os.PathLike[str]) -> bool:
    """Whether a node identity has been saved."""
    return (identity_dir(data_dir) / KEY_FILE).exists()


def new_owner_token(data_dir: str | os.PathLike[str], *, force: bool = True) -> str:
    """Create (or, by default, replace) the owner token: 32 random bytes, urlsafe base64."""
    d = _ensure_dir(data_dir)
    token = secrets.token_urlsafe(32)
    _write_secret_file(d / TOKEN_FILE, token.encode("ascii"), force=force)
    return token


def load_owner_token(data_dir: str | os.PathLike[str]) -> str:
    """The owner token. Raises :class:`NotFound` or :class:`Forbidden` like :func:`load`."""
    return read_private_file(identity_dir(data_dir) / TOKEN_FILE).decode("ascii").strip()


def check_owner_token(data_dir: str | os.PathLike[str], presented: str) -> bool:
    """Constant-time comparison of a presented token with the stored one."""
    try:
        expected = load_owner_token(data_dir)
    except NotFound:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "replace"))


def phrase_file(data_dir: str | os.PathLike[str]) -> Path:
    """``<data>/identity/recovery_phrase``: the phrase of a new identity, until it is shown."""
    return identity_dir(data_dir) / PHRASE_FILE


def phrase_pending(data_dir: str | os.PathLike[str]) -> bool:
    """Whether a recovery phrase waits to be shown (see :func:`take_phrase`)."""
    return phrase_file(data_dir).exists()


def take_phrase(data_dir: str | os.PathLike[str]) -> str:
    """The recovery phrase kept by ``init(keep_phrase=True)``, deleted as it is returned: once.

    Raises:
        NotFound: there is none (it was shown already, or the identity was made by ``statebus init``).
        Forbidden: the file is readable by others.
    """
    path = phrase_file(data_dir)
    phrase = read_private_file(path, missing="it was shown already (it is shown once)").decode().strip()
    discard_phrase(data_dir)
    return phrase


def discard_phrase(data_dir: str | os.PathLike[str]) -> None:
    """Delete the kept recovery phrase, if any (it was shown, or it belongs to a replaced identity)."""
    path = phrase_file(data_dir)
    try:
        path.unlink()
    except FileNotFoundError:
        return
    _fsync_dir(path.parent)


def init(
    data_dir: str | os.PathLike[str], *, force: bool = False, passphrase: str = "", keep_phrase: bool = False
) -> tuple[Identity, str]:
    """Create a new identity from a fresh 24-word phrase, and a new owner token.

    Args:
        keep_phrase: also write the phrase to ``recovery_phrase`` (0600) until :func:`take_phrase`
            or :func:`discard_phrase`: for a caller that may have nobody to show it to.

    Returns:
        ``(identity, phrase)``: show the phrase to the user once.

    Raises:
        Forbidden: an identity exists already and ``force`` is false.
    """
    if exists(data_dir) and not force:
        raise Forbidden(f"{identity_dir(data_dir) / KEY_FILE} already exists; pass force=True to replace it")
    phrase = new_mnemonic()
    identity = identity_from_mnemonic(phrase, passphrase)
    if keep_phrase:  # first, so that an identity never exists without a way to its phrase
        _ensure_dir(data_dir)
        _write_secret_file(phrase_file(data_dir), (phrase + "\n").encode(), force=True)
    else:
        discard_phrase(data_dir)
    save(data_dir, identity, force=force)
    new_owner_token(data_dir, force=True)
    return identity, phrase


def init_encrypted(
    data_dir: str | os.PathLike[str], phrase: str | None = None
) -> tuple[Identity, str, bytes]:
    """Create a data folder encrypted at rest (:mod:`atrest`): a new identity (or the one ``phrase``
    gives back), the marker, the identity file sealed under the at-rest key, and a new owner token.
    The key is kept for this process; the caller stores it where the node will find it (a key file,
    the keyring) or relies on the phrase.

    Returns:
        ``(identity, phrase, key)``.

    Raises:
        Forbidden: the folder has an identity or a store already (encrypt a new folder).
    """
    data = Path(data_dir)
    if exists(data) or (data / "store.sqlite3").exists() or atrest.encrypted(data):
        raise Forbidden(
            f"{data} holds a node already: encryption at rest starts with a new, empty data folder"
        )
    phrase = new_mnemonic() if phrase is None else phrase
    identity = identity_from_mnemonic(phrase)
    key = atrest.derive_key(identity)
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    _ensure_dir(data)
    atrest.write_marker(data, identity, key)
    atrest.remember(data, key)
    save(data, identity, key=key)
    new_owner_token(data, force=True)
    return identity, phrase, key


def recover(
    data_dir: str | os.PathLike[str], phrase: str, *, passphrase: str = "", force: bool = False
) -> Identity:
    """Rebuild the identity from its phrase (same phrase, same pubkey) and issue a new owner token.

    Raises:
        InvalidValue: the phrase is malformed.
        Forbidden: an identity exists already and ``force`` is false (an identical one is accepted).
    """
    identity = identity_from_mnemonic(phrase, passphrase)
    if exists(data_dir) and not force:
        current = load(data_dir)
        if current.pubkey != identity.pubkey:
            raise Forbidden("a different identity exists in this data folder; pass force=True to replace it")
        discard_phrase(data_dir)  # whoever recovers has the phrase
        return current
    save(data_dir, identity, force=force)
    new_owner_token(data_dir, force=True)
    discard_phrase(data_dir)  # a kept phrase belonged to the identity just replaced
    return identity


__all__ = [
    "ROOT_PATH",
    "check_owner_token",
    "discard_phrase",
    "exists",
    "identity_dir",
    "init",
    "init_encrypted",
    "load",
    "load_owner_token",
    "new_owner_token",
    "phrase_file",
    "phrase_pending",
    "recover",
    "save",
    "take_phrase",
    "write_private_file",
]
