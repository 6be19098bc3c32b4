"""Iterative lookups over the DHT, reading every reply defensively.

:class:`NodeCrawl` finds the k nodes closest to a key (upstream ``NodeSpiderCrawl``, with contact
validation). :class:`RecordCrawl` finds a record: unlike upstream ``ValueSpiderCrawl``, which stops
at the first round that returns any value and keeps the *most common* value, it visits the k
closest nodes (holders send their closest contacts along with the record, so the lookup keeps
converging), keeps the valid record with the *highest seq*, and repairs nodes that answered with
nothing or with an older record.

Both run their rounds through ``DirectoryProtocol.probe`` (a round waits a few round-trips for each
peer, not the whole RPC timeout, and goes on without a peer that has not answered) and skip
contacts that failed recently, whoever hands them back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from kademlia.crawling import NodeSpiderCrawl, ValueSpiderCrawl
from kademlia.node import Node

from statebus.errors import StatebusError
from statebus.federation.dht_protocol import DirectoryProtocol, parse_contacts
from statebus.federation.dht_record import NodeRecord, verify_record


async def _probe_round(crawl: Any, rpcmethod: Any) -> Any:
    """One lookup round (upstream ``SpiderCrawl._find``) with probes instead of a gather that waits
        for the slowest peer: ``alpha`` uncontacted peers, or all of them when the round before brought
        nothing closer. A round with no reply in time goes on to the peers not asked yet; with none left
    and no reply at all in this lookup, it waits for the first reply."""
    count = crawl.alpha
    if crawl.nearest.get_ids() == crawl.last_ids_crawled:
        count = len(crawl.nearest)
    crawl.last_ids_crawled = crawl.nearest.get_ids()
    calls = {}
    for peer in crawl.nearest.get_uncontacted()[:count]:
        calls[peer.id] = rpcmethod(peer, crawl.node)
        crawl.nearest.mark_contacted(peer)
    # wait for a first reply only if this lookup has none yet and nobody else is left to ask
    patient = not getattr(crawl, "answered", 0) and not crawl.nearest.get_uncontacted()
    responses = await crawl.protocol.probe(calls, patient=patient, late=getattr(crawl, "late", None))
    crawl.answered = getattr(crawl, "answered", 0) + sum(1 for r in responses.values() if r[0])
    return await crawl._nodes_found(responses)


class NodeCrawl(NodeSpiderCrawl):  # type: ignore[misc]
    """Find the closest nodes to a key; malformed contacts in replies are skipped.

    A node that did not answer stays out of the result. Upstream removes it from the heap, but
    the next reply that names it pushes it back, already marked as contacted, so it was returned
    among "the k closest" (a publish then stored on nodes that had just timed out).
    """

    protocol: DirectoryProtocol

    def __init__(
        self, protocol: DirectoryProtocol, node: Node, peers: list[Node], ksize: int, alpha: int
    ) -> None:
        super().__init__(protocol, node, protocol.live_contacts(peers), ksize, alpha)
        self.failed: set[bytes] = set()

    async def _find(self, rpcmethod: Any) -> Any:
        return await _probe_round(self, rpcmethod)

    async def _nodes_found(self, responses: dict[bytes, Any]) -> list[Node]:
        for peerid, response in responses.items():
            if not response[0]:
                self.failed.add(peerid)
            else:
                contacts = self.protocol.live_contacts(parse_contacts(response[1], self.ksize * 2))
                self.nearest.push([c for c in contacts if c.id not in self.failed])
        self.nearest.remove(list(self.failed))
        if self.nearest.have_contacted_all():
            return list(self.nearest)
        result: list[Node] = await self.find()
        return result


class RecordCrawl(ValueSpiderCrawl):  # type: ignore[misc]
    """Find the newest valid record under a key among the k closest nodes."""

    protocol: DirectoryProtocol

    def __init__(
        self,
        protocol: DirectoryProtocol,
        node: Node,
        peers: list[Node],
        ksize: int,
        alpha: int,
        *,
        dht_name: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(protocol, node, protocol.live_contacts(peers), ksize, alpha)
        self.dht_name = dht_name
        self.clock = clock
        self.found: dict[bytes, tuple[NodeRecord, bytes]] = {}
        self.without_value: list[Node] = []
        self.late: dict[bytes, asyncio.Task[Any]] = {}
        """Requests that missed their round and still run (their own RPC timeout bounds them)."""

    async def _find(self, rpcmethod: Any) -> Any:
        return await _probe_round(self, rpcmethod)

    async def find_record(self) -> tuple[NodeRecord, bytes] | None:
        """Crawl, then return the newest valid (record, wire bytes), or ``None``.

        A crawl that found nothing while some peers' requests still run waits for them before it
        says "not found": the short probe rounds make lookups fast after a crash, and must not turn a
        slow (loaded) machine's late replies into a missing record."""
        await self.find()
        while not self.found and self.late:
            running = list(self.late.items())
            self.late.clear()
            await asyncio.wait([task for _, task in running])
            replies = {
                pid: task.result()
                for pid, task in running
                if not task.cancelled() and task.exception() is None and task.result()[0]
            }
            if replies:
                await self._nodes_found(replies)
        if not self.found:
            return None
        best = max(self.found.values(), key=lambda found: found[0].seq)
        stale = [self.nearest.get_node(pid) for pid, (rec, _) in self.found.items() if rec.seq < best[0].seq]
        closest_empty = sorted(self.without_value, key=self.node.distance_to)[:1]
        for peer in [*closest_empty, *stale]:
            if peer is not None:
                self.protocol.spawn(self.protocol.call_store(peer, self.node.id, best[1]))
        return best

    async def _nodes_found(self, responses: dict[bytes, Any]) -> None:
        toremove = []
        for peerid, response in responses.items():
            ok, payload = response[0], response[1]
            if not ok:
                toremove.append(peerid)
            elif isinstance(payload, dict):
                self._take_value(peerid, payload.get("value"))
                self.nearest.push(
                    self.protocol.live_contacts(parse_contacts(payload.get("nodes"), self.ksize * 2))
                )
            else:
                peer = self.nearest.get_node(peerid)
                if peer is not None:
                    self.without_value.append(peer)
                self.nearest.push(self.protocol.live_contacts(parse_contacts(payload, self.ksize * 2)))
        self.nearest.remove(toremove)
        if not self.nearest.have_contacted_all():
            await self.find()

    def _take_value(self, peerid: bytes, value: Any) -> None:
        try:
            record = verify_record(value, self.clock(), self.dht_name, key=self.node.id)
        except StatebusError:
            return  # a peer that serves garbage is treated as having nothing
        self.found[peerid] = (record, value)
