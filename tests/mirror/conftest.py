"""Mirror tests: real nodes (an owner, a mirror, a follower) on loopback ports, in one new DHT."""

from tests.support.clusters import anyio_backend, cluster

__all__ = ["anyio_backend", "cluster"]
