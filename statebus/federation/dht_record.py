"""Signed node records: what the DHT maps a public key to. Pure functions, no I/O.

A record says "the node whose Ed25519 public key is ``pubkey`` can be reached at ``addrs``, in the
DHT named ``dht``, from version ``seq`` on, until ``expires``". On the wire it is::

    signature (64 bytes) || body

``body`` is canonical JSON (sorted keys, no whitespace, ASCII)::

    {"addrs": ["http://127.0.0.1:8000", ...], "dht": "alpha", "exp": 1767225600,
     "pk": "<52 base32 chars>", "seq": 1767222000123, "v": 1}

and the signature covers ``SIGNING_DOMAIN + body``, so it can never be mistaken for the signature
of an op or of an HTTP request. The DHT key of a record is
``sha1("statebus-kdns1|" + dht + "|" + pk)``: 160 bits, the size of a kademlia node id.

:func:`verify_record` is the one gate every record passes, whoever sent it. Nothing in the record
is trusted before the signature checks out.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from statebus.errors import BadSignature, InvalidKey, InvalidValue, TooLarge
from statebus.keys.paths import decode_pubkey, encode_pubkey
from statebus.types import PubKey

RECORD_VERSION = 1
SIGNING_DOMAIN = b"statebus-kdns1-record\n"
KEY_DOMAIN = b"statebus-kdns1|"
SIGNATURE_BYTES = 64
MAX_RECORD_BYTES = 1024
"""A signed record is at most this long (the DHT itself caps a datagram at 8 KB)."""
MAX_ADDRS = 8
MAX_ADDR_CHARS = 200
MAX_RECORD_TTL = 7 * 24 * 3600
"""A record may not claim to live longer than a week past the verifier's clock."""
MAX_SEQ = 2**63 - 1

_DHT_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HOST_PORT_RE = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})$")
_FIELDS = frozenset({"addrs", "dht", "exp", "pk", "seq", "v"})


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """The content of a signed node record (see the module docstring for the wire format).

    Attributes:
        pubkey: the node's Ed25519 public key, 52 base32 characters.
        addrs: where the node listens: ``http(s)://host:port`` URLs or ``host:port``.
        seq: a version number; a higher one replaces a lower one.
        expires: unix seconds after which nobody accepts or serves the record.
        dht: the name of the DHT the record belongs to.
    """

    pubkey: PubKey
    addrs: tuple[str, ...]
    seq: int
    expires: int
    dht: str

    @property
    def key(self) -> bytes:
        """The 20-byte DHT key this record is stored under."""
        return dht_key(self.dht, self.pubkey)

    def body(self) -> bytes:
        """The canonical JSON body (what the signature covers, after the domain tag)."""
        return _dumps(
            {
                "addrs": list(self.addrs),
                "dht": self.dht,
                "exp": self.expires,
                "pk": self.pubkey,
                "seq": self.seq,
                "v": RECORD_VERSION,
            }
        )


def check_dht_name(name: str) -> str:
    """Return ``name`` if it is a valid DHT name (1–64 of ``A-Z a-z 0-9 . _ -``).

    Raises:
        InvalidValue: otherwise.
    """
    if not isinstance(name, str) or not _DHT_NAME_RE.match(name):
        raise InvalidValue("a DHT name is 1-64 characters of A-Z a-z 0-9 . _ -")
    return name


def check_addrs(addrs: Sequence[str]) -> tuple[str, ...]:
    """Validate a list of node addresses and return it as a tuple.

    An address is ``http://host:port`` or ``https://host[:port][/path]``, or a bare ``host:port``.

    Raises:
        InvalidValue: on a malformed address, too many addresses, or a bare string.
    """
    if isinstance(addrs, str | bytes) or not isinstance(addrs, Sequence):
        raise InvalidValue("addrs is a list of addresses")
    if len(addrs) > MAX_ADDRS:
        raise InvalidValue(f"a record has at most {MAX_ADDRS} addresses")
    for addr in addrs:
        if not isinstance(addr, str) or not addr or len(addr) > MAX_ADDR_CHARS or not addr.isprintable():
            raise InvalidValue(f"an address is 1-{MAX_ADDR_CHARS} printable characters")
        if " " in addr:
            raise InvalidValue("an address may not contain spaces")
        if addr.startswith(("http://", "https://")):
            try:
                url = urllib.parse.urlsplit(addr)
                port = url.port
            except ValueError as exc:
                raise InvalidValue(f"malformed address URL: {exc}") from exc
            if not url.hostname or url.query or url.fragment or url.username or url.password:
                raise InvalidValue("an address URL is scheme://host[:port][/path]")
            if port == 0:
                raise InvalidValue("an address port is 1-65535")
        else:
            m = _HOST_PORT_RE.match(addr)
            if m is None or not 0 < int(m.group("port")) < 65536:
                raise InvalidValue("an address is an http(s) URL or host:port")
    return tuple(addrs)


def dht_key(dht_name: str, pubkey: PubKey) -> bytes:
    """The 20-byte DHT key of ``pubkey``'s record in the DHT ``dht_name``."""
    return hashlib.sha1(KEY_DOMAIN + dht_name.encode() + b"|" + pubkey.encode()).digest()


def signing_key_of(key: SigningKey | bytes) -> SigningKey:
    """Accept a nacl ``SigningKey`` or its 32-byte seed.

    Raises:
        InvalidKey: if ``key`` is neither.
    """
    if isinstance(key, SigningKey):
        return key
    if isinstance(key, bytes) and len(key) == 32:
        return SigningKey(key)
    raise InvalidKey("a signing key is a nacl SigningKey or a 32-byte seed")


def pubkey_of(key: SigningKey | bytes) -> PubKey:
    """The 52-character public key of a signing key (or seed)."""
    return encode_pubkey(bytes(signing_key_of(key).verify_key))


def sign_record(key: SigningKey | bytes, record: NodeRecord) -> bytes:
    """Sign ``record`` and return the wire bytes (signature || body).

    Raises:
        InvalidKey: if ``key`` is not the record's key.
        InvalidValue / TooLarge: if the record would not pass :func:`verify_record`.
    """
    sk = signing_key_of(key)
    if encode_pubkey(bytes(sk.verify_key)) != record.pubkey:
        raise InvalidKey("the signing key does not match the record's public key")
    check_dht_name(record.dht)
    check_addrs(record.addrs)
    _check_ints(record.seq, record.expires)
    body = record.body()
    signature = sk.sign(SIGNING_DOMAIN + body).signature
    data = signature + body
    if len(data) > MAX_RECORD_BYTES:
        raise TooLarge(f"a signed record is at most {MAX_RECORD_BYTES} bytes, this one is {len(data)}")
    return data


def make_record(
    key: SigningKey | bytes, addrs: Sequence[str], *, seq: int, expires: int, dht_name: str
) -> bytes:
    """Build and sign a record for ``key``'s public key; return the wire bytes."""
    record = NodeRecord(pubkey_of(key), check_addrs(addrs), seq, expires, check_dht_name(dht_name))
    return sign_record(key, record)


def verify_record(
    data: Any,
    now: float,
    dht_name: str,
    expected_pubkey: PubKey | None = None,
    *,
    key: bytes | None = None,
) -> NodeRecord:
    """Check a signed record received from anyone, and return its content.

    Args:
        data: the wire bytes (signature || body).
        now: the verifier's clock, unix seconds.
        dht_name: the DHT the record must belong to.
        expected_pubkey: if given, the record must be this key's.
        key: if given, the DHT key the record was stored or found under.

    Raises:
        TooLarge: over :data:`MAX_RECORD_BYTES`.
        BadSignature: unsigned, or the signature does not verify.
        InvalidValue: malformed, non-canonical, expired, for another DHT or public key, or under a
            DHT key that is not its own.
    """
    if not isinstance(data, bytes):
        raise InvalidValue("a record is bytes")
    if len(data) > MAX_RECORD_BYTES:
        raise TooLarge(f"a signed record is at most {MAX_RECORD_BYTES} bytes, got {len(data)}")
    if len(data) <= SIGNATURE_BYTES or _is_bare_json(data):
        raise BadSignature("the record is not signed")
    signature, body = data[:SIGNATURE_BYTES], data[SIGNATURE_BYTES:]
    fields = _parse_body(body)
    pubkey: str = fields["pk"]
    try:
        raw_pk = decode_pubkey(pubkey)
    except InvalidKey as exc:
        raise InvalidValue(f"record public key: {exc}") from exc
    try:
        VerifyKey(raw_pk).verify(SIGNING_DOMAIN + body, signature)
    except (BadSignatureError, ValueError, TypeError) as exc:
        raise BadSignature("the record signature does not verify") from exc
    record = NodeRecord(pubkey, check_addrs(fields["addrs"]), fields["seq"], fields["exp"], fields["dht"])
    if record.dht != dht_name:
        raise InvalidValue("the record belongs to another DHT")
    if expected_pubkey is not None and record.pubkey != expected_pubkey:
        raise InvalidValue("the record is for another public key")
    if key is not None and key != record.key:
        raise InvalidValue("the record is stored under a key that is not its own")
    if record.expires <= now:
        raise InvalidValue("the record has expired")
    if record.expires > now + MAX_RECORD_TTL:
        raise InvalidValue("the record claims to live longer than the maximum record lifetime")
    return record


def _is_bare_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return False
    return True


def _parse_body(body: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(body.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidValue("the record body is not ASCII JSON") from exc
    if not isinstance(fields, dict) or set(fields) != _FIELDS:
        raise InvalidValue(f"a record body has exactly the fields {sorted(_FIELDS)}")
    if fields["v"] != RECORD_VERSION or isinstance(fields["v"], bool):
        raise InvalidValue(f"unknown record version {fields['v']!r}")
    if not isinstance(fields["pk"], str) or not isinstance(fields["dht"], str):
        raise InvalidValue("pk and dht are strings")
    check_dht_name(fields["dht"])
    _check_ints(fields["seq"], fields["exp"])
    if _dumps(fields) != body:
        raise InvalidValue("the record body is not canonical JSON")
    return fields


def _check_ints(seq: Any, expires: Any) -> None:
    for name, v in (("seq", seq), ("exp", expires)):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_SEQ:
            raise InvalidValue(f"{name} is an integer in 0..2**63-1")


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
