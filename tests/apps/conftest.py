"""Fixtures for the hosted-apps tests: the asyncio backend and a node cluster."""

from tests.support.clusters import anyio_backend, cluster

__all__ = ["anyio_backend", "cluster"]
