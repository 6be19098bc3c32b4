"""The at-rest key of a data folder encrypted on the owner's own node: where it comes from, how it is checked.

An encrypted data folder (``statebus init --encrypt``) has ``<data>/at-rest.json`` (the marker: the
node's pubkey, the ciphers, and a check value of the key) and keeps everything else sealed under the
at-rest key: the store (SQLCipher, :mod:`statebus.storage.cipher`), the blobs (sealed chunks,
:mod:`statebus.blobs.sealed`) and the identity file (``node_key.json``, sealed by :mod:`keystore`).

Rules:

1. The at-rest key is the SLIP-0010 child ``at-rest`` of the namespace root
   (``m/44'/7433'/0'/<label at-rest>'``): hardened, so nothing public leads to it, and the phrase gives
   it back anywhere. It is never the mirror key (another label), and the mirror never sees it.
2. The key opens a folder only if ``BLAKE2b(key, person="sb-atrest-check")`` equals the marker's
   ``check``: a wrong key is refused (:class:`StoreLocked`) before any file is opened or changed.
3. Where the key comes from, in order (:func:`unlock`): this process unlocked the folder already; the
   key file ``at_rest_key_file`` (64 hex characters, mode 0600, outside the data folder); the OS
   keyring (the ``keyring`` package, when it is installed and has a real backend), entry
   ``statebus-at-rest`` / the pubkey; the recovery phrase typed on a terminal. Otherwise the folder
   stays locked and whatever needed it refuses with one line saying how to unlock it.
4. The key is never logged, never put in an error's detail, never written inside the data folder.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Any

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError

from statebus.blobs.sealed import BlobSealer
from statebus.errors import InvalidValue, NotFound, StatebusError, StoreLocked
from statebus.identity.keys import Identity, derive, identity_from_mnemonic

AT_REST_PATH = "at-rest"
"""The SLIP-0010 label of the at-rest key under the namespace root."""
MARKER_FILE = "at-rest.json"
KEYRING_SERVICE = "statebus-at-rest"
FORMAT_VERSION = 1
STORE_CIPHER = "sqlcipher4"
BLOB_CIPHER = "xchacha20poly1305-64k"
NONCE = 24

HOW_TO_UNLOCK = (
    "give its key file (at_rest_key_file, STATEBUS_AT_REST_KEY_FILE or --at-rest-key-file), keep the key "
    "in the OS keyring (`statebus init --encrypt --keyring`), or run on a terminal to type the recovery "
    "phrase (docs/storage.md, 'Encryption at rest')"
)

_unlocked: dict[Path, bytes] = {}
"""Folders this process unlocked (resolved path → key): each is unlocked once, then read from here."""


def derive_key(root: Identity) -> bytes:
    """The at-rest key of ``root``'s namespace (rule 1)."""
    if not root.can_derive:
        raise InvalidValue("the at-rest key derives from the namespace root (init from a phrase)")
    return derive(root, AT_REST_PATH).export_secret()[0]


def subkey(key: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose (``blob-seal``, ``blob-name``, ``identity``) from the at-rest key."""
    return hashlib.blake2b(purpose.encode(), key=key, person=b"sb-atrest-sub", digest_size=32).digest()


def blob_sealer(key: bytes | None) -> BlobSealer | None:
    """The blob store's keys for a folder unlocked with ``key`` (None: a plain folder)."""
    return None if key is None else BlobSealer(subkey(key, "blob-seal"), subkey(key, "blob-name"))


def _check_value(key: bytes) -> str:
    return hashlib.blake2b(b"check", key=key, person=b"sb-atrest-check", digest_size=16).hexdigest()


def marker_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / MARKER_FILE


def encrypted(data_dir: str | os.PathLike[str]) -> bool:
    """Whether the data folder is encrypted at rest (it has a marker)."""
    return marker_path(data_dir).is_file()


def _marker(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        doc = json.loads(marker_path(data_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"{data_dir} is not encrypted at rest") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidValue(f"{marker_path(data_dir)} is not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != FORMAT_VERSION or not isinstance(doc.get("check"), str):
        raise InvalidValue(f"{marker_path(data_dir)} has an unknown format (expected v={FORMAT_VERSION})")
    return doc


def marker_pubkey(data_dir: str | os.PathLike[str]) -> str:
    """The pubkey of the node whose folder this is (public: it is in every key name)."""
    return str(_marker(data_dir).get("pubkey", ""))


def write_marker(data_dir: str | os.PathLike[str], root: Identity, key: bytes) -> Path:
    """Mark ``data_dir`` encrypted under ``key`` (atomically; refuses to replace a marker)."""
    doc = {
        "v": FORMAT_VERSION,
        "pubkey": root.pubkey,
        "store": STORE_CIPHER,
        "blobs": BLOB_CIPHER,
        "check": _check_value(key),
    }
    path = marker_path(data_dir)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (json.dumps(doc, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise InvalidValue(f"{path} exists already: the folder is encrypted") from None
    finally:
        tmp.unlink()
    return path


def verify(data_dir: str | os.PathLike[str], key: bytes) -> None:
    """Raise :class:`StoreLocked` unless ``key`` opens ``data_dir`` (rule 2)."""
    if len(key) != 32 or not hmac.compare_digest(_check_value(key), str(_marker(data_dir)["check"])):
        raise StoreLocked(
            f"the key given does not open the encrypted data folder {data_dir}; nothing was changed"
        )


def remember(data_dir: str | os.PathLike[str], key: bytes) -> bytes:
    """Check ``key`` against the folder and keep it for this process (rule 3's first source)."""
    verify(data_dir, key)
    _unlocked[Path(data_dir).resolve()] = key
    return key


def forget(data_dir: str | os.PathLike[str]) -> None:
    """Drop this process's key of ``data_dir`` (tests; a node that stopped)."""
    _unlocked.pop(Path(data_dir).resolve(), None)


def key_for(data_dir: str | os.PathLike[str]) -> bytes | None:
    """The key this process unlocked ``data_dir`` with; None for a plain folder.

    Raises:
        StoreLocked: the folder is encrypted and was not unlocked (:func:`unlock`).
    """
    if not encrypted(data_dir):
        return None
    key = _unlocked.get(Path(data_dir).resolve())
    if key is None:
        raise StoreLocked(f"the data folder {data_dir} is encrypted at rest and locked: {HOW_TO_UNLOCK}")
    return key


# ---------------------------------------------------------------------- the sources (rule 3)


def read_key_file(path: Path, data_dir: str | os.PathLike[str]) -> bytes:
    """The key in ``path`` (64 hex characters, mode 0600). A key file inside the data folder is
    refused: a copy of the folder would carry its own key."""
    if Path(data_dir).resolve() in Path(path).resolve().parents:
        raise StoreLocked(f"the key file {path} is inside the data folder it opens; keep it elsewhere")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise StoreLocked(f"the key file {path} does not exist") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode) or mode & 0o077:
            raise StoreLocked(
                f"the key file {path} is not a regular file readable by its owner alone (chmod 600)"
            )
        text = os.read(fd, 256).decode("ascii", "replace")
    finally:
        os.close(fd)
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise StoreLocked(f"the key file {path} does not hold a key (64 hex characters)")
    return key


def write_key_file(path: Path, key: bytes, data_dir: str | os.PathLike[str]) -> Path:
    """Write ``key`` to ``path`` (mode 0600, refused inside the data folder or over another file)."""
    if Path(data_dir).resolve() in Path(path).resolve().parents:
        raise InvalidValue(f"the key file {path} would be inside the data folder it opens; keep it elsewhere")
    Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InvalidValue(f"{path} exists: a key file is never overwritten") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (key.hex() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return Path(path)


def _keyring() -> Any | None:
    """The ``keyring`` module when it is installed and has a real backend (not the fail/null ones)."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:  # a broken backend configuration is "no keyring"
        return None
    try:
        usable = not isinstance(backend, fail.Keyring) and float(backend.priority) > 0
    except Exception:  # a backend whose priority cannot be read is not one to trust with the key
        usable = False
    if not usable:
        return None
    return keyring


def keyring_available() -> bool:
    return _keyring() is not None


def keyring_store(pubkey: str, key: bytes) -> None:
    """Keep ``key`` in the OS keyring under the node's pubkey. Raises InvalidValue if there is none."""
    kr = _keyring()
    if kr is None:
        raise InvalidValue(
            "no OS keyring is available here (install `keyring` and a backend, or use a key file)"
        )
    kr.set_password(KEYRING_SERVICE, pubkey, key.hex())


def _keyring_key(pubkey: str) -> bytes | None:
    kr = _keyring()
    if kr is None or not pubkey:
        return None
    try:
        text = kr.get_password(KEYRING_SERVICE, pubkey)
    except Exception:  # a locked or broken keyring: try the next source
        return None
    try:
        return bytes.fromhex(text) if isinstance(text, str) else None
    except ValueError:
        return None


def unlock(
    data_dir: str | os.PathLike[str], *, key_file: Path | None = None, interactive: bool | None = None
) -> bytes | None:
    """The at-rest key of ``data_dir`` from the first source that has it (rule 3), checked and kept
    for this process; None for a plain folder.

    Args:
        key_file: the ``at_rest_key_file`` setting.
        interactive: may ask for the recovery phrase (default: when stdin and stderr are terminals).

    Raises:
        StoreLocked: no source has the key, or the one that has one has a wrong one.
    """
    if not encrypted(data_dir):
        return None
    cached = _unlocked.get(Path(data_dir).resolve())
    if cached is not None:
        return cached
    if key_file is not None:
        return remember(data_dir, read_key_file(key_file, data_dir))
    pubkey = marker_pubkey(data_dir)
    from_keyring = _keyring_key(pubkey)
    if from_keyring is not None:
        return remember(data_dir, from_keyring)
    if interactive is None:
        interactive = sys.stdin.isatty() and sys.stderr.isatty()
    if interactive:
        text = getpass.getpass(f"The data folder {data_dir} is encrypted. Recovery phrase (not shown): ")
        try:
            root = identity_from_mnemonic(" ".join(text.split()))
        except StatebusError:
            raise StoreLocked("that is not a valid recovery phrase; nothing was opened") from None
        if root.pubkey != pubkey:
            raise StoreLocked("that phrase belongs to another identity; nothing was opened")
        return remember(data_dir, derive_key(root))
    raise StoreLocked(f"the data folder {data_dir} is encrypted at rest and locked: {HOW_TO_UNLOCK}")


# ---------------------------------------------------------------------- small sealed files


def seal(key: bytes, label: str, data: bytes) -> bytes:
    """``nonce | XChaCha20-Poly1305(data)`` under ``subkey(key, label)``, the label as associated data."""
    nonce = secrets.token_bytes(NONCE)
    ad = f"statebus-at-rest-v1\n{label}".encode()
    return nonce + crypto_aead_xchacha20poly1305_ietf_encrypt(data, ad, nonce, subkey(key, label))


def unseal(key: bytes, label: str, sealed: bytes) -> bytes:
    """The data :func:`seal` sealed; :class:`StoreLocked` if it does not authenticate under ``key``."""
    ad = f"statebus-at-rest-v1\n{label}".encode()
    try:
        return crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed[NONCE:], ad, sealed[:NONCE], subkey(key, label)
        )
    except (CryptoError, ValueError):
        raise StoreLocked(f"the sealed {label} does not open with this key (wrong key, or altered)") from None
