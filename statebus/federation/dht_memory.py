"""An in-memory :class:`~statebus.federation.dht.Directory` for tests of the layers above the DHT.

Every :class:`MemoryDirectory` on one :class:`MemoryDirectoryNetwork` sees the same records, which
pass the same validation as on the real DHT (signature, DHT name, key hash, expiry, newer seq)::

    net = MemoryDirectoryNetwork("test")
    alice, bob = MemoryDirectory(seed_a, net), MemoryDirectory(seed_b, net)
    await alice.publish(["http://127.0.0.1:8000"])
    assert (await bob.resolve(alice.pubkey)).addrs == ("http://127.0.0.1:8000",)

No sockets, no timers: republishing is the caller's business (call ``publish`` again).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

from nacl.signing import SigningKey

from statebus.errors import PeerUnavailable
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
        self._port = self.network.next_port()

    async def publish(self, addrs: Sequence[str]) -> NodeRecord:
        """Sign a record of ``addrs`` with a higher seq and store it in the shared network."""
        if not self._port:
            raise PeerUnavailable("the directory is not started")
        now = self.network.clock()
        self._seq = max(self._seq + 1, int(now * 1000))
        blob = make_record(
            self._key, check_addrs(addrs), seq=self._seq, expires=int(now) + self.record_ttl,
            dht_name=self.network.dht_name,
        )  # fmt: skip
        record = verify_record(blob, now, self.network.dht_name)
        self.network.storage[record.key] = blob
        self.record = record
        return record

    async def resolve(self, pubkey: PubKey) -> NodeRecord | None:
        """The newest valid record of ``pubkey``, or ``None``."""
        decode_pubkey(pubkey)
        if not self._port:
            raise PeerUnavailable("the directory is not started")
        return self.network.storage.record(dht_key(self.network.dht_name, pubkey))

    async def stop(self) -> None:
        self._port = 0
