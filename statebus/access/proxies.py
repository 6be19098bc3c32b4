"""Which address a request comes from when reverse proxies stand in front of the node.

A proxy in ``trusted_proxies`` (addresses or CIDRs, none by default) appends the address it was
reached from to ``X-Forwarded-For``. The client is the right-most address of that list that is not a
trusted proxy: everything left of it was written by the client itself and may be forged. From any
other peer the header is ignored, so a client cannot choose the address it is counted under.

Pure: no I/O. The connection layer (:mod:`statebus.http.connections`) and the ASGI scope rewrite
(:mod:`statebus.http.forwarded`) both ask :meth:`TrustedProxies.client`, so they always agree.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_FORWARDED_CHARS = 4096
"""Longest ``X-Forwarded-For`` read; a longer one is cut on the left (its forgeable end)."""


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address from a forwarded-for entry (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The reverse proxies whose ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self.trusts = functools.lru_cache(maxsize=4096)(self._trusts)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self.networks]})"

    def _trusts(self, peer: str | None) -> bool:
        """Whether the peer address ``peer`` is a trusted proxy."""
        address = parse_ip(peer) if peer else None
        return address is not None and any(address in net for net in self.networks)

    def client(self, peer: str | None, forwarded_for: Iterable[str]) -> str | None:
        """The client's address: ``peer`` itself unless it is a trusted proxy, else the right-most
        untrusted address of the ``X-Forwarded-For`` values (all of them, in order).

        When every listed address is trusted, the left-most is the client (a proxy asking for
        itself); an entry that is not an IP address ends the walk there, and the last trusted hop
        is the client (a garbled header cannot name an address of the client's choosing).
        """
        if not self.networks or not self.trusts(peer):
            return peer
        entries = [e for value in forwarded_for for e in value[-MAX_FORWARDED_CHARS:].split(",")]
        client = peer
        for entry in reversed(entries):
            address = parse_ip(entry)
            if address is None:
                return client
            client = str(address)
            if not self.trusts(client):
                return client
        return client

    def scheme(self, peer: str | None, forwarded_proto: str | None) -> str | None:
        """``http``/``https`` from a trusted proxy's ``X-Forwarded-Proto`` (its last value), else None."""
        if forwarded_proto is None or not self.networks or not self.trusts(peer):
            return None
        proto = forwarded_proto.rpartition(",")[2].strip().lower()
        return proto if proto in ("http", "https") else None
