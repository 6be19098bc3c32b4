"""Open connections: how many in total, how many per client address, and the owner's reserve.

The node accepts at most ``total`` connections, a number kept below its open-file limit
(:func:`connection_caps`). The last ``reserve`` of them are the owner's: when the ordinary slots
are full, or the client's address already holds ``per_ip`` connections, a new connection is let in
on a reserve slot, and each of its requests must carry the owner token (the connection layer checks
it once the headers are in, and answers anyone else 503 or 429 and closes). When the reserve is
full too, the oldest reserve connection that has not yet shown the token makes room; so anonymous
clients parking idle connections can delay the owner by a round trip, not lock them out.

A connection from a trusted reverse proxy carries many clients: it counts in the total at once and
against a client address only while it carries that client's request (:meth:`ConnectionTable.attribute`).

Pure: no I/O, no clocks. A connection is any hashable token (the server uses its transport).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass

FD_HEADROOM = 128
"""Open files kept for everything but client connections: the store and its WAL, logs, the DHT
socket, outgoing connections to peers."""


@dataclass(frozen=True, slots=True)
class ConnectionCaps:
    """How many connections the node holds open: in all, per client address, and kept for the owner."""

    total: int
    per_ip: int
    reserve: int

    @property
    def ordinary(self) -> int:
        """Slots anyone may use: the total minus the owner's reserve."""
        return self.total - self.reserve


def connection_caps(max_connections: int, per_ip: int, reserve: int, open_files: int) -> ConnectionCaps:
    """The caps for a process that may hold ``open_files`` descriptors (``RLIMIT_NOFILE``'s soft limit).

    The total stays :data:`FD_HEADROOM` below the open-file limit, so accepting one more connection
    never makes the store fail to open a file. The reserve is at most half the total, and one slot
    at least stays ordinary.

    >>> connection_caps(10_000, 256, 16, 1024)
    ConnectionCaps(total=896, per_ip=256, reserve=16)
    """
    total = max(2, min(max_connections, open_files - FD_HEADROOM))
    reserve = max(1, min(reserve, total // 2))
    return ConnectionCaps(total=total, per_ip=max(1, per_ip), reserve=reserve)


class Admission(enum.Enum):
    """What :meth:`ConnectionTable.open` decided for a new connection."""

    ORDINARY = "ordinary"
    """Let in; anyone may use it."""
    RESERVE = "reserve"
    """Let in on an owner's slot: every request on it must carry the owner token."""
    REFUSED = "refused"
    """No slot at all: close it."""


@dataclass(slots=True)
class _Conn:
    address: str | None
    reserve: bool
    proxied: bool
    counted: str | None = None
    """The address this connection counts against (its peer's, or its proxied client's)."""
    proven: bool = False
    """A reserve connection that has shown the owner token."""
    over_ip: bool = False
    """A reserve connection let in because its address held its share (not because all were taken)."""


class ConnectionTable:
    """The open connections of a node, counted against :class:`ConnectionCaps`."""

    def __init__(self, caps: ConnectionCaps) -> None:
        self.caps = caps
        self._conns: dict[Hashable, _Conn] = {}
        self._per_ip: dict[str, int] = {}
        self._ordinary = 0
        self._reserve = 0

    def __len__(self) -> int:
        return len(self._conns)

    @property
    def reserve_in_use(self) -> int:
        return self._reserve

    def count(self, address: str | None) -> int:
        """Connections counted against ``address``."""
        return self._per_ip.get(address, 0) if address is not None else 0

    def open(
        self, conn: Hashable, address: str | None, *, proxied: bool = False
    ) -> tuple[Admission, Hashable | None]:
        """Admit a new connection from ``address`` (``proxied``: a trusted proxy's, not counted per
        address until it carries a request).

        Returns the decision and, when a reserve slot was freed for it, the connection to close.
        """
        if conn in self._conns:
            raise ValueError("this connection is open already")
        over_ip = not proxied and self.count(address) >= self.caps.per_ip
        if self._ordinary < self.caps.ordinary and not over_ip:
            entry = _Conn(address, reserve=False, proxied=proxied)
            self._ordinary += 1
            self._conns[conn] = entry
            if not proxied:
                self._count(entry, address)
            return Admission.ORDINARY, None
        victim: Hashable | None = None
        if self._reserve >= self.caps.reserve:
            victim = next((c for c, e in self._conns.items() if e.reserve and not e.proven), None)
            if victim is None:
                return Admission.REFUSED, None
            self.close(victim)
        self._reserve += 1
        self._conns[conn] = _Conn(address, reserve=True, proxied=proxied, over_ip=over_ip)
        return Admission.RESERVE, victim

    def is_reserve(self, conn: Hashable) -> bool:
        entry = self._conns.get(conn)
        return entry is not None and entry.reserve

    def over_ip(self, conn: Hashable) -> bool:
        """Whether a reserve connection is there because its address held its share."""
        entry = self._conns.get(conn)
        return entry is not None and entry.over_ip

    def prove(self, conn: Hashable) -> None:
        """Mark a reserve connection as the owner's (it showed the token): it is never displaced."""
        entry = self._conns.get(conn)
        if entry is not None:
            entry.proven = True

    def attribute(self, conn: Hashable, client: str | None) -> bool:
        """Count a proxied connection against ``client`` while it carries that client's request.

        Returns False (and counts nothing) when ``client`` already holds its share of connections.
        A reserve or unproxied connection is left as it is (True).
        """
        entry = self._conns.get(conn)
        if entry is None or entry.reserve or not entry.proxied:
            return True
        if entry.counted == client:
            return True
        self._uncount(entry)
        if client is not None and self.count(client) >= self.caps.per_ip:
            return False
        self._count(entry, client)
        return True

    def detach(self, conn: Hashable) -> None:
        """A proxied connection finished its request: it counts against no client until the next."""
        entry = self._conns.get(conn)
        if entry is not None and entry.proxied:
            self._uncount(entry)

    def close(self, conn: Hashable) -> None:
        """Forget a closed connection (closing one twice is harmless)."""
        entry = self._conns.pop(conn, None)
        if entry is None:
            return
        self._uncount(entry)
        if entry.reserve:
            self._reserve -= 1
        else:
            self._ordinary -= 1

    def _count(self, entry: _Conn, address: str | None) -> None:
        entry.counted = address
        if address is not None:
            self._per_ip[address] = self._per_ip.get(address, 0) + 1

    def _uncount(self, entry: _Conn) -> None:
        address, entry.counted = entry.counted, None
        if address is None:
            return
        left = self._per_ip[address] - 1
        if left:
            self._per_ip[address] = left
        else:
            del self._per_ip[address]
