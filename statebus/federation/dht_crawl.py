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

A record lookup does not end while a node it asked is still to answer (BEP 44's get): replies that
come after their round's probe timeout are still taken, until ``LATE_SHARE`` of the RPC timeout
after the lookup began (with no record found yet, until each request's own timeout). On a loaded
machine the closest holder, the one with the newest record, is often the late one.
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

LATE_SHARE = 0.4
"""A lookup that has found a record takes late replies until this share of the RPC timeout after it
began: a dead contact among the closest costs at most that, once (then it is suspected, then failed,
and skipped)."""


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
        self.asked: dict[bytes, Node] = {}
        """Every node this lookup asked (a late one is no longer in ``nearest``, yet may need a repair)."""

    async def _find(self, rpcmethod: Any) -> Any:
        def ask(peer: Node, node: Node) -> Any:
            self.asked[peer.id] = peer
            return rpcmethod(peer, node)

        return await _probe_round(self, ask)

    async def find_record(self) -> tuple[NodeRecord, bytes] | None:
        """Crawl, then return the newest valid (record, wire bytes), or ``None``.

        The lookup does not end while a node it asked is still to answer: a late reply may hold a
        newer record (on a loaded machine the closest holder's often comes after the probe timeout).
        Once a record is found, late replies are taken until ``LATE_SHARE`` of the RPC timeout after
        the lookup began; with none found, until each request's own timeout (the short probe rounds
        must not turn a slow machine's late replies into a missing record)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LATE_SHARE * self.protocol.wait_timeout
        await self.find()
        while self.late:
            timeout = max(0.0, deadline - loop.time()) if self.found else None
            if timeout == 0.0:
                break  # the requests still running go on in the background, and evict a dead contact
            running = dict(self.late)
            await asyncio.wait(running.values(), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            replies = {}
            for pid, task in running.items():
                if task.done():
                    del self.late[pid]
                    if not task.cancelled() and task.exception() is None and task.result()[0]:
                        replies[pid] = task.result()
            if replies:
                await self._nodes_found(replies)
        if not self.found:
            return None
        best = max(self.found.values(), key=lambda found: found[0].seq)
        stale = [self.asked.get(pid) for pid, (rec, _) in self.found.items() if rec.seq < best[0].seq]
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
                peer = self.asked.get(peerid)
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
