"""Identities: Ed25519 signing keys, BIP39 seed phrases and SLIP-0010 sub-keys.

The hierarchy (all derivation steps hardened, as SLIP-0010 requires for ed25519)::

    24-word BIP39 phrase (+ optional passphrase)
      └─ BIP39 seed (64 bytes, PBKDF2-HMAC-SHA512)
          └─ SLIP-0010 ed25519 master  m
              └─ namespace root       m/44'/7433'/0'          ← the node's identity, its /<pubkey>/ namespace
                  └─ sub-keys         m/44'/7433'/0'/<i>'/…   ← devices, apps, personas

``7433`` is statebus's own coin-type number; it is not registered in SLIP-0044, and is used so that
the same phrase never yields the same key as a wallet would. A sub-key is named by a relative path of
hardened indices (``"0'/5'"``) or by a label (``"device/laptop"``): each label segment becomes the
hardened index ``0x80000000 | (first 4 bytes of sha256("statebus-label\\n" + segment) & 0x7fffffff)``.
A label is 1–64 characters of ``[A-Za-z0-9._~-]``, not all digits, and not ``m`` (which starts an
absolute path).

Secrets never appear in ``repr``/``str`` or in error messages (not even a misspelt phrase word).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from functools import lru_cache

import nacl.exceptions
import nacl.signing
from mnemonic import Mnemonic
from slip10 import SLIP10

from statebus.errors import InvalidValue
from statebus.keys import decode_pubkey, encode_pubkey
from statebus.types import PubKey

HARDENED = 0x8000_0000
COIN_TYPE = 7433
ROOT_PATH = f"m/44'/{COIN_TYPE}'/0'"
"""The SLIP-0010 path of a node's namespace key below the BIP39 seed."""
PHRASE_WORDS = (12, 15, 18, 21, 24)
_LABEL_DOMAIN = b"statebus-label\n"
_INDEX_RE = re.compile(r"^(\d{1,10})['hH]$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
_mnemo = Mnemonic("english")
_words = frozenset(_mnemo.wordlist)


class Identity:
    """An Ed25519 key pair that signs for one namespace (or for a delegated device or app).

    Args:
        secret: the 32-byte Ed25519 seed (the secret key).
        chain_code: the SLIP-0010 chain code when the key was derived; needed to derive sub-keys.
        path: the derivation path, for display (public information).
    """

    __slots__ = ("_chain_code", "_signing_key", "path", "pubkey", "public_bytes")

    def __init__(self, secret: bytes, *, chain_code: bytes | None = None, path: str | None = None) -> None:
        if not isinstance(secret, bytes) or len(secret) != 32:
            raise InvalidValue("an Ed25519 secret key is 32 bytes")
        if chain_code is not None and (not isinstance(chain_code, bytes) or len(chain_code) != 32):
            raise InvalidValue("a SLIP-0010 chain code is 32 bytes")
        self._signing_key = nacl.signing.SigningKey(secret)
        self._chain_code = chain_code
        self.public_bytes: bytes = bytes(self._signing_key.verify_key)
        self.pubkey: PubKey = encode_pubkey(self.public_bytes)
        self.path = path

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity, with no seed phrase and no sub-keys."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._signing_key.sign(data).signature

    @property
    def can_derive(self) -> bool:
        """Whether this identity carries a chain code, so :func:`derive` can make sub-keys of it."""
        return self._chain_code is not None

    def export_secret(self) -> tuple[bytes, bytes | None]:
        """The secret key and chain code, for the keystore only. Handle with care."""
        return bytes(self._signing_key), self._chain_code

    def __repr__(self) -> str:
        path = f", path={self.path!r}" if self.path else ""
        return f"Identity(pubkey={self.pubkey!r}{path})"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("an Identity is never pickled; use statebus.identity.keystore")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and hmac.compare_digest(self.public_bytes, other.public_bytes)

    def __hash__(self) -> int:
        return hash(self.public_bytes)


@lru_cache(maxsize=4096)
def _verify_key(pubkey: PubKey) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(decode_pubkey(pubkey))


def verify_signature(pubkey: PubKey, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``data`` by ``pubkey``.

    Raises:
        InvalidKey: ``pubkey`` is not a 52-character namespace.
    """
    if len(signature) != 64:
        return False
    try:
        _verify_key(pubkey).verify(data, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


def new_mnemonic() -> str:
    """A fresh 24-word BIP39 English phrase (256 bits of entropy)."""
    return str(_mnemo.generate(256))


def normalize_phrase(phrase: str) -> str:
    """Check a BIP39 phrase and return it normalised (NFKD, lower case, single spaces).

    Raises:
        InvalidValue: wrong word count, a word not in the English list (by position only, the word
            itself is never echoed), or a checksum mismatch.
    """
    if not isinstance(phrase, str):
        raise InvalidValue("a seed phrase is text")
    words = unicodedata.normalize("NFKD", phrase).lower().split()
    if len(words) not in PHRASE_WORDS:
        raise InvalidValue(f"a seed phrase has 12, 15, 18, 21 or 24 words, not {len(words)}")
    for i, word in enumerate(words, 1):
        if word not in _words:
            raise InvalidValue(f"seed phrase word {i} is not in the BIP39 English word list")
    text = " ".join(words)
    if not _mnemo.check(text):
        raise InvalidValue("seed phrase checksum does not match: a word is wrong or out of order")
    return text


def seed_from_mnemonic(phrase: str, passphrase: str = "") -> bytes:
    """The 64-byte BIP39 seed of a checked phrase."""
    return bytes(Mnemonic.to_seed(normalize_phrase(phrase), passphrase))


def identity_from_mnemonic(phrase: str, passphrase: str = "") -> Identity:
    """The namespace identity (at :data:`ROOT_PATH`) of a BIP39 phrase.

    Raises:
        InvalidValue: the phrase is malformed (see :func:`normalize_phrase`).
    """
    return derive(seed_from_mnemonic(phrase, passphrase), ROOT_PATH)


def parse_path(path: str) -> tuple[bool, list[int]]:
    """Parse ``m/44'/7433'/0'`` (absolute) or ``0'/device/laptop`` (relative) into hardened indices.

    Returns:
        ``(absolute, indices)``.

    Raises:
        InvalidValue: a segment is neither a hardened index nor a label, or an index is not hardened.
    """
    if not isinstance(path, str) or not path:
        raise InvalidValue("a derivation path is non-empty text")
    parts = path.split("/")
    absolute = parts[0] == "m"
    if absolute:
        parts = parts[1:]
    indices: list[int] = []
    for part in parts:
        m = _INDEX_RE.match(part)
        if m:
            n = int(m.group(1))
            if n >= HARDENED:
                raise InvalidValue(f"a path index is below 2^31, not {n}")
            indices.append(HARDENED | n)
        elif part == "m":
            raise InvalidValue("'m' starts an absolute path and is not a label")
        elif part.isdigit():
            raise InvalidValue(f"ed25519 derivation is hardened only: write {part}' not {part}")
        elif _LABEL_RE.match(part):
            digest = hashlib.sha256(_LABEL_DOMAIN + part.encode()).digest()
            indices.append(HARDENED | (int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF))
        else:
            raise InvalidValue("a path segment is a hardened index (5') or a label of [A-Za-z0-9._~-]")
    return absolute, indices


def _format(indices: list[int]) -> str:
    return "/".join(f"{i & 0x7FFF_FFFF}'" for i in indices)


def derive(source: Identity | bytes, path: str) -> Identity:
    """Derive a deterministic sub-key with SLIP-0010 (ed25519, hardened).

    Args:
        source: a BIP39 seed (16–64 bytes) or an :class:`Identity` that carries a chain code.
        path: from a seed, an absolute path ``m/…`` or a path relative to :data:`ROOT_PATH`; from an
            identity, a path relative to it. Segments are hardened indices or labels.

    Raises:
        InvalidValue: a bad path, a seed of the wrong size, or an identity without a chain code.
    """
    absolute, indices = parse_path(path)
    if isinstance(source, Identity):
        if absolute:
            raise InvalidValue("an absolute path (m/…) derives from the seed, not from an identity")
        secret, chain = source.export_secret()
        if chain is None:
            raise InvalidValue("this identity has no chain code (it was not derived), so it has no sub-keys")
        node = SLIP10(chain, secret, curve_name="ed25519")
        base = source.path or "?"
    elif isinstance(source, bytes):
        if not 16 <= len(source) <= 64:
            raise InvalidValue("a seed is 16 to 64 bytes")
        node = SLIP10.from_seed(source, curve_name="ed25519")
        if not absolute:
            indices = parse_path(ROOT_PATH)[1] + indices
        base = "m"
    else:
        raise InvalidValue("derive from a seed (bytes) or an Identity")
    child = node.get_child_from_path(indices)
    full = base + ("/" + _format(indices) if indices else "")
    return Identity(bytes(child.privkey), chain_code=bytes(child.chaincode), path=full)
