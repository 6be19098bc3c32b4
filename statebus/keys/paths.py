"""Key paths.

A key is ``/<namespace>/<segment>/…``. The namespace is the owner's Ed25519 public key as 52
lowercase base32 characters (RFC 4648, no padding); ``~`` names the local node's own namespace
and is resolved by :func:`parse_key`. A key ending in ``/`` names a subtree (every key below it).

Rules (checked by :func:`parse_key`; a bad key raises :class:`InvalidKey` and nothing happens):

1. UTF-8 text, at most ``MAX_KEY_BYTES`` bytes, at most ``MAX_DEPTH`` segments.
2. No empty segment (``//``), no ``.`` or ``..`` segment, no control characters, no backslash.
3. A segment is at most ``MAX_SEGMENT_BYTES`` bytes.
4. The first segment is a valid public key (or ``~`` when a local namespace is given).
"""

from __future__ import annotations

import base64
import binascii
import re

from statebus.errors import CLIENT_DOCS, InvalidKey
from statebus.types import Key, PubKey

MAX_KEY_BYTES = 1024
MAX_DEPTH = 32
MAX_SEGMENT_BYTES = 255
PUBKEY_CHARS = 52
KEY_HINT = (
    "This node's own keys begin with /~/ (e.g. /~/notes/1), another node's with its pubkey;"
    f" see {CLIENT_DOCS}"
)

_PUBKEY_RE = re.compile(r"^[a-z2-7]{52}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


def encode_pubkey(raw: bytes) -> PubKey:
    """Encode a 32-byte Ed25519 public key as a 52-character namespace.

    >>> encode_pubkey(bytes(32))
    'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'
    """
    if len(raw) != 32:
        raise InvalidKey(f"a public key is 32 bytes, not {len(raw)}")
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def decode_pubkey(text: str) -> bytes:
    """Decode a 52-character namespace back to the 32 raw bytes of the public key."""
    if not is_pubkey(text):
        raise InvalidKey("a namespace is 52 lowercase base32 characters (a-z, 2-7)")
    try:
        raw = base64.b32decode(text.upper() + "====")
    except binascii.Error as exc:  # pragma: no cover - the regex already rules this out
        raise InvalidKey("namespace is not base32") from exc
    if encode_pubkey(raw) != text:
        raise InvalidKey("namespace is not canonical base32 (trailing bits set)")
    return raw


def is_pubkey(text: str) -> bool:
    if not _PUBKEY_RE.match(text):
        return False
    # 256 bits = 51 full characters + 1 bit: the last character is 0b00000 or 0b10000
    return text[-1] in "aq"


def parse_key(path: object, local: PubKey | None = None, *, allow_subtree: bool = True) -> Key:
    """Validate ``path`` and return the normalised key.

    ``/~/…`` is rewritten to the local namespace ``local``. Percent-decoding is the transport's
    job: this function sees the decoded text.

    >>> parse_key("/~/app/x", local="a" * 52)[-6:]
    '/app/x'
    """
    if not isinstance(path, str):
        raise InvalidKey("a key is a string")
    if not path.startswith("/"):
        raise InvalidKey("a key starts with '/'")
    if _CONTROL_RE.search(path):
        raise InvalidKey("a key may not contain control characters or backslashes")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKey("a key must be valid UTF-8") from exc
    subtree = path.endswith("/") and len(path) > 1
    body = path[1:-1] if subtree else path[1:]
    if not body:
        raise InvalidKey(f"a key names a namespace: /<pubkey>/… {KEY_HINT}")
    parts = body.split("/")
    if parts[0] == "~":
        if local is None:
            raise InvalidKey("'~' names the local namespace, and there is none here")
        parts[0] = local
        encoded = ("/" + "/".join(parts) + ("/" if subtree else "")).encode("utf-8")
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidKey(f"a key is at most {MAX_KEY_BYTES} bytes")
    if len(parts) > MAX_DEPTH:
        raise InvalidKey(f"a key has at most {MAX_DEPTH} segments")
    for part in parts:
        if part == "":
            raise InvalidKey("a key may not contain an empty segment ('//')")
        if part in (".", ".."):
            raise InvalidKey("a key may not contain '.' or '..' segments")
        if len(part.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidKey(f"a key segment is at most {MAX_SEGMENT_BYTES} bytes")
    if not is_pubkey(parts[0]):
        raise InvalidKey(
            f"the first segment of a key is the owner's public key (52 base32 chars) or '~'. {KEY_HINT}"
        )
    if subtree and not allow_subtree:
        raise InvalidKey("this operation needs a key, not a subtree (no trailing '/')")
    return "/" + "/".join(parts) + ("/" if subtree else "")


def is_subtree(key: Key) -> bool:
    return key.endswith("/")


def namespace_of(key: Key) -> PubKey:
    """The owner's public key of a (validated) key."""
    return key[1 : 1 + PUBKEY_CHARS]


def segments(key: Key) -> list[str]:
    return key.strip("/").split("/")


def join(prefix: Key, *parts: str) -> Key:
    base = prefix.rstrip("/")
    return base + "/" + "/".join(parts)


def parent_of(key: Key) -> Key:
    """The subtree that directly contains ``key`` (``/ns/a/b`` → ``/ns/a/``)."""
    base = key.rstrip("/")
    return base[: base.rfind("/") + 1]


def key_matches(pattern: str, key: Key) -> bool:
    """Does ``key`` fall under ``pattern``?

    A pattern is an exact key, a subtree ``/ns/a/`` (every key strictly below it), or a
    statebus-style prefix ending in ``*`` (``/ns/posts/*`` matches ``/ns/posts/1`` and ``/ns/posts/1/x``).
    """
    if pattern.endswith("*"):
        return key.startswith(pattern[:-1])
    if pattern.endswith("/"):
        return key.startswith(pattern) and key != pattern
    return key == pattern
