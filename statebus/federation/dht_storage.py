"""The records one DHT node holds for others: validated, and bounded so no one source can crowd out the rest.

Every write passes :func:`~statebus.federation.dht_record.verify_record` (signature, DHT, key hash,
expiry) and must be newer than the copy held. On top of that the storage is bounded three ways
(:class:`StorageLimits`):

* ``max_records`` in all;
* ``max_per_source``: records whose held copy came from one *source*, the IP address of the STORE
  (an IPv6 /64 counts as one address). A source at its cap gets its new keys refused;
* ``max_per_prefix``: records in one *key prefix*, the keys that share the same number of leading
  bits with this node's id (the routing-table bucket a key falls in). Fresh random keys land half
  in the farthest prefix, a quarter in the next, and so on, so a flood of cheap keys fills only the
  far prefixes; reaching the prefixes this node is responsible for costs a key search per record.

When a bound is reached, a new key from source ``S`` displaces the *least recently used* record
among the sources that hold the most records in that bound, if they hold more than ``S`` already
does; a source that already holds the most can only replace its own least recently used record.
"Used" means stored with a new seq, or served to a lookup (FIND_VALUE), so records that were looked
up recently outlive those nobody asks for, and one source never displaces everyone else's. The
node's own record is never displaced.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kademlia.storage import IStorage

from statebus.config import Settings
from statebus.errors import InvalidValue, QuotaExceeded, StatebusError
from statebus.federation.dht_record import NodeRecord, verify_record

NODE_ID_BYTES = 20
LOCAL = "local"
"""The source of records this node writes itself (its own record, copies it keeps current)."""


@dataclass(frozen=True, slots=True)
class StorageLimits:
    """How many records a node holds for others (see the module docstring)."""

    max_records: int = 10_000
    max_per_source: int = 500
    max_per_prefix: int = 1_000

    def __post_init__(self) -> None:
        if min(self.max_records, self.max_per_source, self.max_per_prefix) < 1:
            raise InvalidValue("DHT storage limits are at least 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> StorageLimits:
        """The limits ``settings.dht_max_records*`` name."""
        return cls(
            settings.dht_max_records, settings.dht_max_records_per_source, settings.dht_max_records_per_prefix
        )


def source_of(addr: Any) -> str:
    """The source a STORE from ``addr`` (an ``(ip, port)`` pair) is counted against.

    One IPv4 address, or one IPv6 /64 (what one host is usually given); the port never counts, since
    a host has 65 535 of them.
    """
    ip = ipaddress.ip_address(addr[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def prefix_of(key: bytes, node_id: bytes) -> int:
    """How many leading bits ``key`` shares with ``node_id`` (0 … 160): its key prefix here."""
    distance = int.from_bytes(key, "big") ^ int.from_bytes(node_id, "big")
    return 8 * NODE_ID_BYTES - distance.bit_length()


@dataclass(slots=True)
class _Held:
    record: NodeRecord
    blob: bytes
    source: str
    prefix: int


class RecordStorage(IStorage):  # type: ignore[misc]
    """Holds only valid records of one DHT, within :class:`StorageLimits`.

    ``storage[key] = blob`` is a local write (source :data:`LOCAL`); a remote STORE calls
    :meth:`store` with the sender's address.

    Raises (from ``store`` and ``__setitem__``): BadSignature, InvalidValue or TooLarge from
    :func:`~statebus.federation.dht_record.verify_record`, InvalidValue for a stale seq, and
    QuotaExceeded when a bound is reached and the record may not displace another one.
    """

    def __init__(
        self,
        dht_name: str,
        *,
        clock: Callable[[], float] = time.time,
        limits: StorageLimits | None = None,
        node_id: bytes = b"\x00" * NODE_ID_BYTES,
        max_records: int | None = None,
    ) -> None:
        limits = limits or StorageLimits()
        if max_records is not None:
            limits = StorageLimits(max_records, limits.max_per_source, limits.max_per_prefix)
        self.dht_name = dht_name
        self.clock = clock
        self.limits = limits
        self.node_id = node_id
        self.pinned: bytes | None = None
        """The key of this node's own record, never displaced."""
        self._held: OrderedDict[bytes, _Held] = OrderedDict()  # least recently used first
        self._per_source: Counter[str] = Counter()
        self._per_prefix: Counter[int] = Counter()
        self._per_prefix_source: Counter[tuple[int, str]] = Counter()
        self.rejected = 0
        """Writes refused because the record is invalid or not newer than the held one."""
        self.refused_full = 0
        """New records refused because their source or key prefix is at its bound."""
        self.evicted = 0
        """Records displaced by newer arrivals (see the module docstring for the order)."""
        self._next_sweep = 0.0

    # ---- writes

    def __setitem__(self, key: Any, value: Any) -> None:
        self.store(key, value, LOCAL)

    def store(self, key: Any, value: Any, source: str) -> None:
        """Hold ``value`` under ``key``, counted against ``source`` (see :func:`source_of`)."""
        try:
            if not isinstance(key, bytes) or len(key) != NODE_ID_BYTES:
                raise InvalidValue("a DHT key is 20 bytes")
            record = verify_record(value, self.clock(), self.dht_name, key=key)
            held = self._current(key)
            if held is not None:
                _check_newer(held, record, value)
        except StatebusError:
            self.rejected += 1
            raise
        if held is not None:
            if held.blob != value:  # a newer seq: it counts against whoever brought it, if they may
                if source != held.source and self._room_for(source):
                    self._forget(key)
                    self._add(key, record, value, source)
                else:
                    held.record, held.blob = record, value
                    self._held.move_to_end(key)
            return
        self._make_room(key, source)
        self._add(key, record, value, source)

    def touch(self, key: bytes) -> None:
        """Mark ``key`` as used now (a lookup asked for it): it is displaced later than unused ones."""
        if key in self._held:
            self._held.move_to_end(key)

    def _room_for(self, source: str) -> bool:
        return source == LOCAL or self._per_source[source] < self.limits.max_per_source

    def _make_room(self, key: bytes, source: str) -> None:
        self.cull()
        if not self._room_for(source):
            self._refuse(f"this node holds {self.limits.max_per_source} DHT records from that address")
        prefix = prefix_of(key, self.node_id)
        if self._per_prefix[prefix] >= self.limits.max_per_prefix:
            counts = {s: n for (p, s), n in self._per_prefix_source.items() if p == prefix}
            self._displace(counts, source, prefix)
        if len(self._held) >= self.limits.max_records:
            self._displace(self._per_source, source, None)

    def _displace(self, counts: dict[str, int] | Counter[str], source: str, prefix: int | None) -> None:
        """Drop the least recently used record of the sources holding the most, if ``source`` holds
        fewer; a source that holds as many as the most replaces its own least recently used one."""
        own = -1 if source == LOCAL else counts.get(source, 0)
        top = max((n for s, n in counts.items() if n > 0), default=0)
        losers = {s for s, n in counts.items() if n == top} if top > own else {source}
        for key, held in self._held.items():
            if key == self.pinned or (prefix is not None and held.prefix != prefix):
                continue
            if held.source in losers:
                self._forget(key)
                self.evicted += 1
                return
        self._refuse("this node's DHT storage is full")

    def _refuse(self, detail: str) -> None:
        self.refused_full += 1
        raise QuotaExceeded(detail)

    def _add(self, key: bytes, record: NodeRecord, blob: bytes, source: str) -> None:
        prefix = prefix_of(key, self.node_id)
        self._held[key] = _Held(record, blob, source, prefix)
        self._per_source[source] += 1
        self._per_prefix[prefix] += 1
        self._per_prefix_source[prefix, source] += 1

    def _forget(self, key: bytes) -> None:
        held = self._held.pop(key)
        _decrement(self._per_source, held.source)
        _decrement(self._per_prefix, held.prefix)
        _decrement(self._per_prefix_source, (held.prefix, held.source))

    # ---- reads

    def cull(self) -> None:
        """Drop the records past their signed expiry (at most once a second)."""
        now = self.clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        for key in [k for k, h in self._held.items() if h.record.expires <= now]:
            self._forget(key)

    def _current(self, key: bytes) -> _Held | None:
        held = self._held.get(key)
        if held is None:
            return None
        if held.record.expires <= self.clock():
            self._forget(key)
            return None
        return held

    def record(self, key: bytes) -> NodeRecord | None:
        """The valid record held under ``key``, if any."""
        held = self._current(key)
        return None if held is None else held.record

    def source(self, key: bytes) -> str | None:
        """The source the record under ``key`` is counted against, if it is held."""
        held = self._current(key)
        return None if held is None else held.source

    def per_source(self, source: str) -> int:
        """How many held records are counted against ``source``."""
        return self._per_source[source]

    @property
    def records(self) -> dict[bytes, NodeRecord]:
        """Key → record of everything held (a copy)."""
        self.cull()
        return {key: held.record for key, held in self._held.items()}

    def get(self, key: Any, default: Any = None) -> Any:
        held = self._current(key) if isinstance(key, bytes) else None
        return default if held is None else held.blob

    def __getitem__(self, key: Any) -> Any:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        self.cull()
        return iter([(key, held.blob) for key, held in self._held.items()])

    def iter_older_than(self, seconds_old: Any) -> list[tuple[bytes, bytes]]:
        return []  # only upstream's holder re-STORE asks, and holders never re-STORE here


def _decrement(counter: Counter[Any], item: Any) -> None:
    counter[item] -= 1
    if counter[item] <= 0:
        del counter[item]


def _check_newer(held: _Held, record: NodeRecord, value: bytes) -> None:
    if record.seq < held.record.seq or (record.seq == held.record.seq and held.blob != value):
        # same seq, other content: keep the first one
        raise InvalidValue(f"stale record: seq {record.seq} is not newer than the held seq {held.record.seq}")
