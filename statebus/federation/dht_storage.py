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
from collections import OrderedDict
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
    used: int


class _Tally:
    """How many records each source holds in one scope (all, or one key prefix); the top is cheap."""

    __slots__ = ("_by_count", "counts", "total")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._by_count: dict[int, set[str]] = {}
        self.total = 0

    def add(self, source: str, delta: int) -> None:
        old = self.counts.get(source, 0)
        new = old + delta
        if old:
            self._by_count[old].discard(source)
            if not self._by_count[old]:
                del self._by_count[old]
        if new:
            self.counts[source] = new
            self._by_count.setdefault(new, set()).add(source)
        else:
            self.counts.pop(source, None)
        self.total += delta

    def top(self) -> tuple[int, set[str]]:
        """The most records one source holds here, and the sources that hold that many."""
        if not self._by_count:
            return 0, set()
        most = max(self._by_count)  # distinct counts are few: they sum to at most ``total``
        return most, self._by_count[most]


_FEW = 16
"""Up to this many tied sources, the victim is found from each one's own LRU order."""


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
        self._all = _Tally()
        self._prefixes: dict[int, _Tally] = {}
        self._lru: dict[tuple[int | None, str | None], OrderedDict[bytes, None]] = {}
        # LRU orders: (None, source) per source, (prefix, source), and (prefix, None) per key prefix
        self._ticks = 0
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
        except StatebusError:
            self.rejected += 1
            raise
        if key not in self._held and not self._room_for(source):  # before the costly signature check
            self._refuse(f"this node holds {self.limits.max_per_source} DHT records from that address")
        try:
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
                    self.touch(key)
            return
        self._make_room(key, source)
        self._add(key, record, value, source)

    def touch(self, key: bytes) -> None:
        """Mark ``key`` as used now (a lookup asked for it): it is displaced later than unused ones."""
        held = self._held.get(key)
        if held is None:
            return
        self._ticks += 1
        held.used = self._ticks
        self._held.move_to_end(key)
        for scope in _scopes(held):
            self._lru[scope].move_to_end(key)

    def _room_for(self, source: str) -> bool:
        return source == LOCAL or self._all.counts.get(source, 0) < self.limits.max_per_source

    def _make_room(self, key: bytes, source: str) -> None:
        self.cull()
        if not self._room_for(source):
            self._refuse(f"this node holds {self.limits.max_per_source} DHT records from that address")
        prefix = prefix_of(key, self.node_id)
        tally = self._prefixes.get(prefix)
        if tally is not None and tally.total >= self.limits.max_per_prefix:
            self._displace(tally, source, prefix)
        if len(self._held) >= self.limits.max_records:
            self._displace(self._all, source, None)

    def _displace(self, tally: _Tally, source: str, prefix: int | None) -> None:
        """Drop the least recently used record of the sources holding the most, if ``source`` holds
        fewer; a source that holds as many as the most replaces its own least recently used one."""
        own = -1 if source == LOCAL else tally.counts.get(source, 0)
        top, biggest = tally.top()
        losers = biggest if top > own else {source}
        victim = self._oldest_of(losers, prefix)
        if victim is None:
            self._refuse("this node's DHT storage is full")
        else:
            self._forget(victim)
            self.evicted += 1

    def _oldest_of(self, sources: set[str], prefix: int | None) -> bytes | None:
        if len(sources) <= _FEW:
            heads = (self._head(self._lru.get((prefix, s))) for s in sources)
            found = [key for key in heads if key is not None]
            return min(found, key=lambda k: self._held[k].used, default=None)
        order = self._held if prefix is None else self._lru[prefix, None]
        for key in order:  # many tied sources: one of them is near the front
            if key != self.pinned and self._held[key].source in sources:
                return key
        return None

    def _head(self, order: OrderedDict[bytes, None] | None) -> bytes | None:
        for key in order or ():
            if key != self.pinned:
                return key
        return None

    def _refuse(self, detail: str) -> None:
        self.refused_full += 1
        raise QuotaExceeded(detail)

    def _add(self, key: bytes, record: NodeRecord, blob: bytes, source: str) -> None:
        prefix = prefix_of(key, self.node_id)
        self._ticks += 1
        self._held[key] = _Held(record, blob, source, prefix, self._ticks)
        self._all.add(source, 1)
        self._prefixes.setdefault(prefix, _Tally()).add(source, 1)
        for scope in _scopes(self._held[key]):
            self._lru.setdefault(scope, OrderedDict())[key] = None

    def _forget(self, key: bytes) -> None:
        held = self._held.pop(key)
        self._all.add(held.source, -1)
        tally = self._prefixes[held.prefix]
        tally.add(held.source, -1)
        if not tally.total:
            del self._prefixes[held.prefix]
        for scope in _scopes(held):
            order = self._lru[scope]
            del order[key]
            if not order:
                del self._lru[scope]

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
        return self._all.counts.get(source, 0)

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


def _scopes(held: _Held) -> tuple[tuple[int | None, str | None], ...]:
    return (None, held.source), (held.prefix, held.source), (held.prefix, None)


def _check_newer(held: _Held, record: NodeRecord, value: bytes) -> None:
    if record.seq < held.record.seq or (record.seq == held.record.seq and held.blob != value):
        # same seq, other content: keep the first one
        raise InvalidValue(f"stale record: seq {record.seq} is not newer than the held seq {held.record.seq}")
