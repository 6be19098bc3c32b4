"""The Directory acceptance suite, run against both directories: the in-memory one that tests of the
layers above use, and the kademlia one a node runs (a few nodes on 127.0.0.1, port 0)."""

from __future__ import annotations

from collections.abc import Callable

from statebus.federation.dht import KademliaDirectory
from statebus.federation.dht_memory import MemoryDirectory, MemoryDirectoryNetwork
from statebus.testing.directory_suite import DirectorySuite, MakeDirectory

SECRET = b"directory suite secret"


class TestMemoryDirectory(DirectorySuite):
    def make_network(self, dht_name: str, clock: Callable[[], float]) -> MakeDirectory:
        network = MemoryDirectoryNetwork(dht_name, clock=clock)
        return lambda seed: MemoryDirectory(seed, network)


class TestKademliaDirectory(DirectorySuite):
    def make_network(self, dht_name: str, clock: Callable[[], float]) -> MakeDirectory:
        return lambda seed: KademliaDirectory(seed, dht_name, SECRET, ksize=4, wait_timeout=0.5, clock=clock)
