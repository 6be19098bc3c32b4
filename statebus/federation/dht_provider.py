"""Provider records: "the node ``pk`` seeds blob ``h`` at swarm address ``addr``", held on our own DHT.

The bulk plane's get_peers (issue 14 item 3): a node that seeds a blob announces a provider record to
the k nodes closest to the blob's provider key, and a fetcher asks those nodes for the records. On the
wire a record is::

    signature (64 bytes) || body

``body`` is canonical JSON (sorted keys, no whitespace, ASCII)::

    {"addr": "127.0.0.1:6881", "dht": "alpha", "exp": 1767225600, "h": "<sha256 hex>",
     "ih": "<v1 info-hash hex>", "pk": "<52 base32 chars>", "v": 1}

signed by the seeder's node key over ``SIGNING_DOMAIN + body``, stored under
``sha1("statebus-prov1|" + dht + "|" + h)``.

Rules:

1. :func:`verify_provider` is the one gate every record passes, whoever sent it: signature, DHT name,
   the key it is stored under, ``addr`` a ``host:port``, ``h`` a sha256 and ``ih`` a v1 info-hash in
   lowercase hex, and ``exp`` in the future but at most :data:`MAX_PROVIDER_TTL` away.
2. Nothing in a record is trusted beyond "this key signed it": the info-hash only names the torrent
   to ask the seeder for, its metadata must describe exactly the blob (one file named ``h`` of the
   pointer's size), and the bytes must hash to the owner-signed ``h`` (``statebus.swarm``).
3. A holder takes a record only from the address it names (``addr``'s host is the STORE's source
   address), so no node can send fetchers to a third party's host; the seeder announces it itself.
4. :class:`ProviderStorage` is bounded (:class:`ProviderLimits`): records in all, providers per blob,
   records per publisher key and per source address. A record from a publisher already held for
   that blob replaces the old one (only with a later ``exp``); a full blob list or a publisher or
   source at its cap refuses new records (``QuotaExceeded``); a full store displaces the record that
   expires first. Records past their signed expiry are dropped and never served.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from statebus.errors import BadSignature, InvalidKey, InvalidValue, QuotaExceeded, StatebusError, TooLarge
from statebus.federation.dht_record import check_dht_name, pubkey_of, signing_key_of
from statebus.keys.paths import decode_pubkey
from statebus.types import PubKey

PROVIDER_VERSION = 1
SIGNING_DOMAIN = b"statebus-prov1-record\n"
KEY_DOMAIN = b"statebus-prov1|"
SIGNATURE_BYTES = 64
MAX_PROVIDER_BYTES = 400
"""A signed provider record is at most this long (about 330 bytes in practice)."""
MAX_PROVIDER_TTL = 6 * 3600
"""A record may not claim to live longer than this past the verifier's clock."""
MAX_PROVIDERS_PER_REPLY = 16
"""Records one GET_PROVIDERS reply carries (16 records fit well inside the DHT's 8 KB datagram)."""
LOCAL = "local"

_FIELDS = frozenset({"addr", "dht", "exp", "h", "ih", "pk", "v"})
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_IH_RE = re.compile(r"^[0-9a-f]{40}$")
_ADDR_RE = re.compile(r"^(?P<host>[0-9.]{7,15}|\[[0-9a-fA-F:.]{2,45}\]):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    """One seeder of one blob (see the module docstring for the wire format)."""

    pubkey: PubKey
    hash: str
    infohash: str
    addr: str
    expires: int
    dht: str

    @property
    def key(self) -> bytes:
        return provider_key(self.dht, self.hash)

    @property
    def peer(self) -> tuple[str, int]:
        host, _, port = self.addr.rpartition(":")
        return (host.strip("[]"), int(port))

    def body(self) -> bytes:
        return _dumps(
            {
                "addr": self.addr,
                "dht": self.dht,
                "exp": self.expires,
                "h": self.hash,
                "ih": self.infohash,
                "pk": self.pubkey,
                "v": PROVIDER_VERSION,
            }
        )


def provider_key(dht_name: str, digest: str) -> bytes:
    """The 20-byte DHT key under which the seeders of blob ``digest`` are held."""
    return hashlib.sha1(KEY_DOMAIN + dht_name.encode() + b"|" + digest.encode()).digest()


def make_provider(
    key: SigningKey | bytes, digest: str, infohash: str, addr: str, *, expires: int, dht_name: str
) -> bytes:
    """Sign a provider record of blob ``digest`` at swarm address ``addr``; return the wire bytes.

    Raises:
        InvalidValue: a field is malformed (see rule 1).
    """
    sk = signing_key_of(key)
    record = ProviderRecord(pubkey_of(sk), digest, infohash, addr, expires, check_dht_name(dht_name))
    _check_fields(record.hash, record.infohash, record.addr, record.expires)
    body = record.body()
    return sk.sign(SIGNING_DOMAIN + body).signature + body


def verify_provider(data: Any, now: float, dht_name: str, *, key: bytes | None = None) -> ProviderRecord:
    """Check a provider record received from anyone (rule 1) and return its content.

    Raises:
        TooLarge, BadSignature, InvalidValue: as :func:`statebus.federation.dht_record.verify_record`.
    """
    if not isinstance(data, bytes):
        raise InvalidValue("a provider record is bytes")
    if len(data) > MAX_PROVIDER_BYTES:
        raise TooLarge(f"a provider record is at most {MAX_PROVIDER_BYTES} bytes, got {len(data)}")
    if len(data) <= SIGNATURE_BYTES:
        raise BadSignature("the provider record is not signed")
    signature, body = data[:SIGNATURE_BYTES], data[SIGNATURE_BYTES:]
    try:
        fields = json.loads(body.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidValue("the provider record body is not ASCII JSON") from exc
    if not isinstance(fields, dict) or set(fields) != _FIELDS or fields["v"] != PROVIDER_VERSION:
        raise InvalidValue(f"a provider record has exactly the fields {sorted(_FIELDS)}, version 1")
    if not all(isinstance(fields[f], str) for f in ("addr", "dht", "h", "ih", "pk")):
        raise InvalidValue("addr, dht, h, ih and pk are strings")
    check_dht_name(fields["dht"])
    _check_fields(fields["h"], fields["ih"], fields["addr"], fields["exp"])
    if _dumps(fields) != body:
        raise InvalidValue("the provider record body is not canonical JSON")
    try:
        raw_pk = decode_pubkey(fields["pk"])
    except InvalidKey as exc:
        raise InvalidValue(f"provider public key: {exc}") from exc
    try:
        VerifyKey(raw_pk).verify(SIGNING_DOMAIN + body, signature)
    except (BadSignatureError, ValueError, TypeError) as exc:
        raise BadSignature("the provider record signature does not verify") from exc
    record = ProviderRecord(
        fields["pk"], fields["h"], fields["ih"], fields["addr"], fields["exp"], fields["dht"]
    )
    if record.dht != dht_name:
        raise InvalidValue("the provider record belongs to another DHT")
    if key is not None and key != record.key:
        raise InvalidValue("the provider record is stored under a key that is not its blob's")
    if record.expires <= now:
        raise InvalidValue("the provider record has expired")
    if record.expires > now + MAX_PROVIDER_TTL:
        raise InvalidValue("the provider record claims to live longer than the maximum provider lifetime")
    return record


def _check_fields(digest: Any, infohash: Any, addr: Any, expires: Any) -> None:
    if not isinstance(digest, str) or not _SHA256_RE.match(digest):
        raise InvalidValue("h is a blob's sha256 in lowercase hex")
    if not isinstance(infohash, str) or not _IH_RE.match(infohash):
        raise InvalidValue("ih is a v1 info-hash in lowercase hex")
    m = _ADDR_RE.match(addr) if isinstance(addr, str) else None
    if m is None or not 0 < int(m.group("port")) < 65536:
        raise InvalidValue("addr is ip:port")
    if not isinstance(expires, int) or isinstance(expires, bool) or not 0 <= expires < 2**63:
        raise InvalidValue("exp is an integer in 0..2**63-1")


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


@dataclass(frozen=True, slots=True)
class ProviderLimits:
    """How many provider records one DHT node holds for others (rule 4)."""

    max_records: int = 10_000
    max_per_blob: int = 32
    max_per_publisher: int = 256
    max_per_source: int = 256

    def __post_init__(self) -> None:
        if min(self.max_records, self.max_per_blob, self.max_per_publisher, self.max_per_source) < 1:
            raise InvalidValue("provider storage limits are at least 1")


@dataclass(slots=True)
class _Held:
    record: ProviderRecord
    blob: bytes
    source: str


class ProviderStorage:
    """The provider records one DHT node holds: validated and bounded (rules 1, 3, 4)."""

    def __init__(
        self, dht_name: str, *, clock: Callable[[], float] = time.time, limits: ProviderLimits | None = None
    ) -> None:
        self.dht_name = dht_name
        self.clock = clock
        self.limits = limits or ProviderLimits()
        self._by_key: dict[bytes, dict[PubKey, _Held]] = {}
        self._per_publisher: dict[PubKey, int] = {}
        self._per_source: dict[str, int] = {}
        self._count = 0
        self.rejected = 0
        """Records refused as invalid, from the wrong address, or not newer than the held one."""
        self.refused_full = 0
        """Records refused because a bound was reached."""
        self._next_sweep = 0.0

    def __len__(self) -> int:
        """Records held (those past their expiry are dropped first)."""
        self._next_sweep = 0.0
        self.cull()
        return self._count

    def store(self, key: Any, value: Any, source: str, source_ip: str | None = None) -> ProviderRecord:
        """Hold ``value`` under ``key``, counted against ``source`` (a STORE from ``source_ip``).

        Raises:
            BadSignature, InvalidValue, TooLarge: the record is bad, stale or names another host.
            QuotaExceeded: a bound is reached (rule 4).
        """
        try:
            if not isinstance(key, bytes) or len(key) != 20:
                raise InvalidValue("a DHT key is 20 bytes")
            record = verify_provider(value, self.clock(), self.dht_name, key=key)
            if source_ip is not None and record.peer[0] != source_ip:
                raise InvalidValue("a provider record is taken only from the address it names")
            held = self._by_key.get(key, {}).get(record.pubkey)
            if (
                held is not None
                and held.record.expires > self.clock()
                and record.expires < held.record.expires
            ):
                raise InvalidValue("stale provider record: it expires before the one held")
        except StatebusError:
            self.rejected += 1
            raise
        if held is not None:
            self._forget(key, record.pubkey)
        else:
            self.cull()
            self._make_room(key, record.pubkey, source)
        self._by_key.setdefault(key, {})[record.pubkey] = _Held(record, value, source)
        self._per_publisher[record.pubkey] = self._per_publisher.get(record.pubkey, 0) + 1
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self._count += 1
        return record

    def providers(self, key: bytes, limit: int = MAX_PROVIDERS_PER_REPLY) -> list[bytes]:
        """The wire bytes of the unexpired records under ``key``, latest-expiring first."""
        now = self.clock()
        held = [h for h in self._by_key.get(key, {}).values() if h.record.expires > now]
        held.sort(key=lambda h: -h.record.expires)
        return [h.blob for h in held[:limit]]

    def records(self, key: bytes) -> list[ProviderRecord]:
        now = self.clock()
        return [h.record for h in self._by_key.get(key, {}).values() if h.record.expires > now]

    def cull(self) -> None:
        """Drop every record past its signed expiry (a full sweep at most once a second; reads skip
        expired records on their own)."""
        now = self.clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        for key, held in list(self._by_key.items()):
            for pk in [pk for pk, h in held.items() if h.record.expires <= now]:
                self._forget(key, pk)

    def _make_room(self, key: bytes, pubkey: PubKey, source: str) -> None:
        limits = self.limits
        if len(self._by_key.get(key, {})) >= limits.max_per_blob:
            self._refuse(f"this node holds {limits.max_per_blob} providers of that blob")
        if self._per_publisher.get(pubkey, 0) >= limits.max_per_publisher:
            self._refuse(f"this node holds {limits.max_per_publisher} provider records of that key")
        if source != LOCAL and self._per_source.get(source, 0) >= limits.max_per_source:
            self._refuse(f"this node holds {limits.max_per_source} provider records from that address")
        if self._count >= limits.max_records:
            victim = min(
                ((k, pk, h.record.expires) for k, hs in self._by_key.items() for pk, h in hs.items()),
                key=lambda item: item[2],
            )
            self._forget(victim[0], victim[1])

    def _refuse(self, detail: str) -> None:
        self.refused_full += 1
        raise QuotaExceeded(detail)

    def _forget(self, key: bytes, pubkey: PubKey) -> None:
        held = self._by_key[key].pop(pubkey)
        if not self._by_key[key]:
            del self._by_key[key]
        for tally, name in ((self._per_publisher, pubkey), (self._per_source, held.source)):
            tally[name] -= 1
            if not tally[name]:
                del tally[name]
        self._count -= 1
