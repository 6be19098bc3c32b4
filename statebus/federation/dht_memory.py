"""An in-memory :class:`~statebus.federation.dht.Directory` for tests of the layers above the DHT.

Every :class:`MemoryDirectory` on one :class:`MemoryDirectoryNetwork` sees the same records, which
pass the same validation as on the real DHT (signature, DHT name, key hash, expiry, newer seq)::

    net = MemoryDirectoryNetwork("test")
    alice, bob = MemoryDirectory(seed_a, net), MemoryDirectory(seed_b, net)
    await alice.publish(["http://127.0.0.1:8000"])
    assert (await bob.resolve(alice.pubkey)).addrs == ("http://127.0.0.1:8000",)

No sockets, no timers: republishing is the caller's business (call ``publish`` again). It passes
the Directory acceptance suite (:mod:`statebus.testing.directory_suite`) as the kademlia one does.
"""

from __future__ import annotations

import ipaddress
import itertools
import time
from collections.abc import Callable, Sequence

from nacl.signing import SigningKey

from statebus.errors import InvalidValue
from statebus.federation.dht_record import (
    NodeRecord,
    check_addrs,
    check_dht_name,
    dht_key,
    make_record,
    pubkey_of,
    signing_key_of,
    verify_record,
)
from statebus.federation.dht_storage import RecordStorage
from statebus.keys.paths import decode_pubkey
from statebus.types import PubKey


class MemoryDirectoryNetwork:
    """The shared record store of a set of :class:`MemoryDirectory` nodes (one DHT)."""

    def __init__(self, dht_name: str = "memory", *, clock: Callable[[], float] = time.time) -> None:
        self.dht_name = check_dht_name(dht_name)
        self.clock = clock
        self.storage = RecordStorage(self.dht_name, clock=clock)
        self._ports = itertools.count(1)

    def next_port(self) -> int:
        return next(self._ports)


class MemoryDirectory:
    """A :class:`~statebus.federation.dht.Directory` whose DHT is a shared dict."""

    def __init__(
        self, signing_key: SigningKey | bytes, network: MemoryDirectoryNetwork, *, record_ttl: int = 3600
    ) -> None:
        self._key = signing_key_of(signing_key)
        self.pubkey: PubKey = pubkey_of(self._key)
        self.network = network
        self.record_ttl = record_ttl
        self.record: NodeRecord | None = None
        self._port = 0
        self._seq = 0

    @property
    def port(self) -> int:
        return self._port

    async def start(self, bootstrap: list[tuple[str, int]]) -> None:
        """Join the network (``bootstrap`` is checked as the real DHT checks it, then unused).

        Raises:
            InvalidValue: a bootstrap address is not an ``(ip, port)`` pair, or already started.
        """
        for host, port in bootstrap:
            try:
                ipaddress.ip_address(host)
            except ValueError as exc:
                raise InvalidValue("a bootstrap address is an (ip, port) pair") from exc
            if not isinstance(port, int) or not 0 < port < 65536:
                raise InvalidValue("a bootstrap port is 1-65535")
        if self._port:
            raise InvalidValue("the directory is already started")
        self._port = self.network.next_port()

    async def publish(self, addrs: Sequence[str]) -> NodeRecord:
        """Sign a record of ``addrs`` with a higher seq (than any record of this key the network
        holds, as after a restart with a clock that went back) and store it in the shared network."""
        addrs = check_addrs(addrs)
        self._check_started()
        now = self.network.clock()
        if self._seq == 0:
            held = self.network.storage.record(dht_key(self.network.dht_name, self.pubkey))
            self._seq = held.seq if held is not None else 0
        self._seq = max(self._seq + 1, int(now * 1000))
        blob = make_record(
            self._key, addrs, seq=self._seq, expires=int(now) + self.record_ttl,
            dht_name=self.network.dht_name,
        )  # fmt: skip
        record = verify_record(blob, now, self.network.dht_name)
        self.network.storage[record.key] = blob
        self.record = record
        return record

    async def resolve(self, pubkey: PubKey) -> NodeRecord | None:
        """The newest valid record of ``pubkey``, or ``None``."""
        decode_pubkey(pubkey)
        self._check_started()
        return self.network.storage.record(dht_key(self.network.dht_name, pubkey))

    def cached(self, pubkey: PubKey) -> NodeRecord | None:
        """The record of ``pubkey`` the shared store holds (it is its own cache), until it expires."""
        return self.network.storage.record(dht_key(self.network.dht_name, pubkey))

    async def stop(self) -> None:
        self._port = 0

    def _check_started(self) -> None:
        if not self._port:
            raise InvalidValue("the directory is not started")
