"""The kademlia wire layer, hardened: network tag, validating storage, safe RPC handling.

Built on ``kademlia`` 2.2.3 / ``rpcudp`` 5.0.1 by subclassing (see docs/federation-dht.md for the
list of faults this fixes):

* :class:`TaggedTransport` appends ``HMAC-SHA256(tag_key, datagram)[:16]`` to every datagram sent;
  :meth:`DirectoryProtocol.datagram_received` drops any datagram whose tag is wrong *before*
  msgpack decoding, so nodes outside the DHT (other name, or no invite secret) are not heard.
* :class:`~statebus.federation.dht_storage.RecordStorage` validates every record on write
  (signature, DHT, key hash, expiry, seq newer than the stored one), which covers every write path
  of the library, bounds what each source address and each key prefix may hold, and drops records
  whose signed expiry has passed. A STORE is counted against its sender's address.
* :class:`DirectoryProtocol` parses requests itself, checks argument types, answers ``False`` to a
  STORE the storage refused, never sends to a malformed address, and keeps its tasks referenced.
* :class:`ClosestRoutingTable` answers "the k closest contacts" by scanning every bucket. Upstream
  walks the buckets outwards from the key's bucket and stops at the first empty bucket on the
  right, so with an empty bucket there it returned *no* contacts at all (a publish then stored
  the record nowhere), and it kept the first k met rather than the k closest.
* :func:`parse_contacts` turns a FIND_NODE reply into nodes, skipping malformed contacts (upstream,
  one ``(id, None, None)`` contact closed the node's socket for good).
* Healing after a crash (issue 19): a contact whose request timed out is evicted from the routing
  table *and* remembered as failed for ``FAILED_CONTACT_TTL`` seconds, so lookups skip it when other
  nodes hand it back in their replies (they keep dead contacts until they contact them themselves;
  upstream, every lookup waited for them again). A lookup round waits for each peer only
  :meth:`DirectoryProtocol.probe_timeout` (a few smoothed round-trips, at least ``PROBE_FLOOR``) and
  goes on without the slow ones; their requests run on to ``wait_timeout`` in the background and
  evict the contact if they fail; meanwhile later lookups skip them too. A reply clears a contact.
  A record lookup that found nothing waits for its own late requests before it says "not found"
  (``RecordCrawl.find_record``).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import heapq
import hmac
import ipaddress
import logging
import time
from collections.abc import Coroutine
from typing import Any

import umsgpack
from kademlia.node import Node
from kademlia.protocol import KademliaProtocol
from kademlia.routing import RoutingTable

from statebus.errors import StatebusError
from statebus.federation.dht_provider import MAX_PROVIDERS_PER_REPLY, ProviderStorage
from statebus.federation.dht_storage import RecordStorage, source_of

log = logging.getLogger(__name__)

TAG_BYTES = 16
NODE_ID_BYTES = 20
MAX_CONTACTS = 64
HANDOVER_KEYS_PER_SECOND = 2000
"""Held records checked per second when handing records over to new contacts (each check is a
k-closest search, about 50 µs); past it a new contact gets no hand-over (owners republish)."""
FAILED_CONTACT_TTL = 600.0
"""Seconds a contact whose request timed out is skipped by lookups (unless it is heard from)."""
MAX_FAILED_CONTACTS = 4096
PROBE_FLOOR = 0.01
"""The shortest a lookup round waits for a peer, in seconds (loopback round-trips are ~1 ms)."""
PROBE_RTTS = 4.0
"""A lookup round waits this many smoothed round-trips for each peer before going on without it."""
_RPC_ARITY = {"ping": 1, "store": 3, "find_node": 2, "find_value": 2, "add_provider": 3, "get_providers": 2}


def network_tag_key(dht_name: str, invite_secret: bytes) -> bytes:
    """The HMAC key that tags this DHT's datagrams (derived from its name and invite secret)."""
    return hashlib.sha256(b"statebus-kdns1-net|" + dht_name.encode() + b"|" + invite_secret).digest()


def tag_datagram(tag_key: bytes, data: bytes) -> bytes:
    """Return ``data`` with its network tag appended."""
    return data + hmac.new(tag_key, data, "sha256").digest()[:TAG_BYTES]


def untag_datagram(tag_key: bytes, data: bytes) -> bytes | None:
    """Return the datagram without its tag, or ``None`` if the tag is missing or wrong."""
    if len(data) <= TAG_BYTES:
        return None
    body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
    if not hmac.compare_digest(tag, hmac.new(tag_key, body, "sha256").digest()[:TAG_BYTES]):
        return None
    return body


def valid_address(addr: Any) -> bool:
    """True if ``addr`` is an ``(ip, port)`` pair we may send a datagram to."""
    if not isinstance(addr, tuple | list) or len(addr) != 2:
        return False
    ip, port = addr
    if not isinstance(ip, str) or not isinstance(port, int) or isinstance(port, bool):
        return False
    if not 0 < port < 65536:
        return False
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return False
    return True


def parse_contacts(payload: Any, limit: int = MAX_CONTACTS) -> list[Node]:
    """The well-formed contacts of a FIND_NODE reply: ``[(id20, ip, port), ...]``; the rest is skipped."""
    if not isinstance(payload, list | tuple):
        return []
    nodes = []
    for item in payload[:limit]:
        if not isinstance(item, list | tuple) or len(item) != 3:
            continue
        node_id, ip, port = item
        if isinstance(node_id, bytes) and len(node_id) == NODE_ID_BYTES and valid_address((ip, port)):
            nodes.append(Node(node_id, ip, port))
    return nodes


class TaggedTransport:
    """Wraps the UDP transport: tags every datagram and refuses malformed destinations."""

    def __init__(self, transport: asyncio.DatagramTransport, tag_key: bytes) -> None:
        self._transport = transport
        self._tag_key = tag_key

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if not valid_address(addr) or self._transport.is_closing():
            log.debug("not sending a datagram to a malformed address")
            return
        try:
            self._transport.sendto(tag_datagram(self._tag_key, data), tuple(addr))
        except (OSError, TypeError, ValueError) as exc:  # never let one send close the socket
            log.debug("sendto failed: %s", exc)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._transport.close()


class ClosestRoutingTable(RoutingTable):  # type: ignore[misc]
    """The routing table, with a ``find_neighbors`` that really returns the k closest contacts."""

    def find_neighbors(self, node: Node, k: int | None = None, exclude: Node | None = None) -> list[Node]:
        """The ``k`` (default ksize) contacts closest to ``node`` by XOR distance, bar ``exclude``.

        A table holds at most 160 × k contacts, so scanning them all is cheap and always right.
        """
        self.buckets[self.get_bucket_for(node)].touch_last_updated()  # as upstream: marks the range as used
        candidates = [
            contact
            for bucket in self.buckets
            for contact in bucket.get_nodes()
            if contact.id != node.id and (exclude is None or not contact.same_home_as(exclude))
        ]
        return heapq.nsmallest(k or self.ksize, candidates, key=node.distance_to)


class DirectoryProtocol(KademliaProtocol):  # type: ignore[misc]
    """KademliaProtocol with the network tag, validated RPCs and no unbounded fire-and-forget tasks."""

    storage: RecordStorage

    def __init__(
        self,
        source_node: Node,
        storage: RecordStorage,
        ksize: int,
        *,
        tag_key: bytes,
        wait_timeout: float,
        providers: ProviderStorage | None = None,
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self.providers = (
            providers if providers is not None else ProviderStorage(storage.dht_name, clock=storage.clock)
        )
        """The provider records this node holds (``statebus.federation.dht_provider``)."""
        self.router = ClosestRoutingTable(self, ksize, source_node)
        self._wait_timeout = wait_timeout
        self._tag_key = tag_key
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dropped = 0
        """Datagrams dropped: wrong network tag, or not a well-formed rpcudp message."""
        self.handovers_skipped = 0
        """New contacts that got no hand-over because the hand-over budget was spent."""
        self._handover_budget = float(HANDOVER_KEYS_PER_SECOND)
        self._handover_at = time.monotonic()
        self.failed: dict[bytes, float] = {}
        """Contacts whose last request timed out: node id -> monotonic time it failed."""
        self.suspects: set[bytes] = set()
        """Contacts that missed a lookup round and whose request is still waiting: skipped meanwhile."""
        self.srtt: float | None = None
        """Smoothed round-trip time of answered requests, in seconds (None before the first)."""
        self.evicted = 0
        """Contacts evicted because a request to them timed out."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(TaggedTransport(transport, self._tag_key))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in a task the protocol keeps a reference to (and cancels on close)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("DHT task failed: %r", task.exception())

    def close(self) -> None:
        """Cancel pending tasks and fail outstanding requests (the caller closes the transport)."""
        for task in list(self._tasks):
            task.cancel()
        for future, timer in list(self._outstanding.values()):
            timer.cancel()
            if not future.done():
                future.set_result((False, None))
        self._outstanding.clear()

    def _timeout(self, msg_id: bytes) -> None:
        """A request got no reply in time. Upstream sets the result unconditionally, which raises
        InvalidStateError in the timer callback when the waiting lookup was cancelled meanwhile."""
        entry = self._outstanding.pop(msg_id, None)
        if entry is not None and not entry[0].done():
            log.debug("no reply to a DHT request within %.1fs", self._wait_timeout)
            entry[0].set_result((False, None))

    def _accept_response(self, msg_id: bytes, data: Any, address: Any) -> None:
        """A reply to one of our requests. Upstream sets the result unconditionally, which raises
        InvalidStateError in the socket's read callback when a late reply arrives for a lookup that was
        cancelled meanwhile (a resolve under a deadline, a stopped follower)."""
        entry = self._outstanding.pop(msg_id, None)
        if entry is None:
            log.debug("a DHT reply to no outstanding request from %s", address)
            return
        future, timer = entry
        timer.cancel()
        if not future.done():
            future.set_result((True, data))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        body = untag_datagram(self._tag_key, data)
        if body is None or len(body) < 22 or not valid_address(addr):
            self.dropped += 1
            return
        kind, msg_id = body[:1], body[1:21]
        try:
            message = umsgpack.unpackb(body[21:])
        except Exception:  # untrusted bytes: umsgpack raises many types
            self.dropped += 1
            return
        if kind == b"\x01":
            self._accept_response(msg_id, message, addr)
        elif kind == b"\x00" and self._valid_request(message):
            self.spawn(self._accept_request(msg_id, message, tuple(addr)))
        else:
            self.dropped += 1

    def _valid_request(self, message: Any) -> bool:
        if not isinstance(message, list) or len(message) != 2:
            return False
        name, args = message
        if not isinstance(name, str) or not isinstance(args, list | tuple):
            return False
        if _RPC_ARITY.get(name) != len(args):
            return False
        if not all(isinstance(a, bytes) and len(a) == NODE_ID_BYTES for a in args[:2]):
            return False
        return bool(args[0] != self.source_node.id)  # a peer claiming our own id is lying

    def _node_ok(self, node: Node) -> bool:
        return isinstance(node.id, bytes) and len(node.id) == NODE_ID_BYTES and node.id != self.source_node.id

    def rpc_store(self, sender: Any, nodeid: bytes, key: bytes, value: Any) -> bool:
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        try:
            self.storage.store(key, value, source_of(sender))
        except StatebusError as exc:
            log.debug("refused a STORE from %s:%s: %s", sender[0], sender[1], exc)
            return False
        return True

    def rpc_add_provider(self, sender: Any, nodeid: bytes, key: bytes, value: Any) -> bool:
        """Hold a provider record, only from the address it names (``dht_provider``, rule 3)."""
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        try:
            self.providers.store(key, value, source_of(sender), sender[0])
        except StatebusError as exc:
            log.debug("refused a provider record from %s:%s: %s", sender[0], sender[1], exc)
            return False
        return True

    def rpc_get_providers(self, sender: Any, nodeid: bytes, key: bytes) -> Any:
        """The provider records held under ``key`` (at most ``MAX_PROVIDERS_PER_REPLY``)."""
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return self.providers.providers(key, MAX_PROVIDERS_PER_REPLY)

    def rpc_find_value(self, sender: Any, nodeid: bytes, key: bytes) -> Any:
        """The record under ``key`` *and* the closest contacts (upstream sends only the record).

        With the contacts, a lookup keeps converging on the k closest nodes after it meets a holder,
        so a holder with an old record cannot hide a closer holder with a newer one.
        """
        neighbors = self.rpc_find_node(sender, nodeid, key)
        value = self.storage.get(key, None)
        if value is None:
            return neighbors
        self.storage.touch(key)  # looked up: kept longer than records nobody asks for
        return {"value": value, "nodes": neighbors}

    def welcome_if_new(self, node: Node) -> None:
        """Add a new contact and hand it the records it should hold (kademlia paper §2.5).

        Upstream hashes the already-hashed storage key again here; this uses the key itself. It
        also checked every held record for every new contact: with 5 000 records held that took
        300 ms, so each fresh node id a member made up cost the node 300 ms of CPU. Here the
        checks share a budget of ``HANDOVER_KEYS_PER_SECOND`` (one big scan may overdraw it, and the
        next waits until it is paid off); meanwhile new contacts are added without a hand-over.
        """
        if not self._node_ok(node) or not self.router.is_new_node(node):
            return
        if self._spend_handover(len(self.storage)):
            self._hand_over(node)
        else:
            self.handovers_skipped += 1
        self.router.add_contact(node)

    def _spend_handover(self, cost: int) -> bool:
        now = time.monotonic()
        rate = HANDOVER_KEYS_PER_SECOND
        self._handover_budget = min(float(rate), self._handover_budget + (now - self._handover_at) * rate)
        self._handover_at = now
        if self._handover_budget <= 0:
            return False
        self._handover_budget -= cost  # may go below zero: a big scan is paid off before the next one
        return True

    def _hand_over(self, node: Node) -> None:
        for key, value in self.storage:
            keynode = Node(key)
            neighbors = self.router.find_neighbors(keynode)
            if neighbors:
                new_node_close = node.distance_to(keynode) < neighbors[-1].distance_to(keynode)
                this_closest = self.source_node.distance_to(keynode) < neighbors[0].distance_to(keynode)
            if not neighbors or (new_node_close and this_closest):
                self.spawn(self.call_store(node, key, value))

    def handle_call_response(self, result: Any, node: Node) -> Any:
        if not result[0]:
            self.router.remove_contact(node)
            self._mark_failed(node.id)
            return result
        self.failed.pop(node.id, None)
        self.welcome_if_new(node)
        return result

    def _mark_failed(self, node_id: bytes) -> None:
        if node_id not in self.failed:
            self.evicted += 1
        self.failed.pop(node_id, None)
        self.failed[node_id] = time.monotonic()
        while len(self.failed) > MAX_FAILED_CONTACTS:
            del self.failed[next(iter(self.failed))]

    def is_failed(self, node_id: bytes) -> bool:
        """True if a request to ``node_id`` timed out within ``FAILED_CONTACT_TTL`` (and it was not
        heard from since)."""
        at = self.failed.get(node_id)
        if at is None:
            return False
        if time.monotonic() - at > FAILED_CONTACT_TTL:
            del self.failed[node_id]
            return False
        return True

    def live_contacts(self, nodes: list[Node]) -> list[Node]:
        """``nodes`` without the contacts that failed recently or are suspected (missed a round)."""
        if not self.failed and not self.suspects:
            return nodes
        return [n for n in nodes if n.id not in self.suspects and not self.is_failed(n.id)]

    @property
    def wait_timeout(self) -> float:
        """Seconds one request waits for its reply before it is given up (and the contact evicted)."""
        return float(self._wait_timeout)

    def probe_timeout(self) -> float:
        """How long a lookup round waits for one peer: ``PROBE_RTTS`` smoothed round-trips, at least
        ``PROBE_FLOOR``, at most ``wait_timeout`` (the whole timeout before any reply was timed)."""
        if self.srtt is None:
            return float(self._wait_timeout)
        return float(min(self._wait_timeout, max(PROBE_FLOOR, PROBE_RTTS * self.srtt)))

    async def probe(
        self,
        calls: dict[bytes, Coroutine[Any, Any, Any]],
        *,
        patient: bool = False,
        late: dict[bytes, asyncio.Task[Any]] | None = None,
    ) -> dict[bytes, Any]:
        """Run ``calls`` (node id -> request) at once; return the replies that came within
        :meth:`probe_timeout` and ``(False, None)`` for the others, whose requests go on in the
        background (a timeout there evicts the contact; until then they are :attr:`suspects`).
        ``patient`` (a lookup that has no reply at all yet): if none came in time, wait for the
        first one, so a slow network never makes a lookup give up with nothing. ``late`` collects
        the requests still running, for a lookup that must not end empty-handed while they run."""
        tasks = {node_id: asyncio.ensure_future(call) for node_id, call in calls.items()}
        if not tasks:
            return {}
        done, pending = await asyncio.wait(tasks.values(), timeout=self.probe_timeout())
        if not done and patient:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        out: dict[bytes, Any] = {}
        for node_id, task in tasks.items():
            if task.done():
                out[node_id] = task.result()
            else:
                self._tasks.add(task)
                self.suspects.add(node_id)
                if late is not None:
                    late[node_id] = task
                task.add_done_callback(self._task_done)
                task.add_done_callback(functools.partial(self._cleared, node_id))
                out[node_id] = (False, None)
        return out

    def _cleared(self, node_id: bytes, _: asyncio.Task[Any]) -> None:
        self.suspects.discard(node_id)

    async def _call(self, name: str, node: Node, *args: Any) -> Any:
        if not self._node_ok(node) or not valid_address((node.ip, node.port)):
            return (False, None)
        started = time.monotonic()
        result = await getattr(self, name)((node.ip, node.port), self.source_node.id, *args)
        if result[0]:
            self.observe_rtt(time.monotonic() - started)
        return self.handle_call_response(result, node)

    def observe_rtt(self, rtt: float) -> None:
        """Fold one answered request's round-trip time into :attr:`srtt`."""
        self.srtt = rtt if self.srtt is None else 0.875 * self.srtt + 0.125 * rtt

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> Any:
        return await self._call("find_node", node_to_ask, node_to_find.id)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> Any:
        return await self._call("find_value", node_to_ask, node_to_find.id)

    async def call_ping(self, node_to_ask: Node) -> Any:
        return await self._call("ping", node_to_ask)

    async def call_store(self, node_to_ask: Node, key: bytes, value: bytes) -> Any:
        return await self._call("store", node_to_ask, key, value)

    async def call_add_provider(self, node_to_ask: Node, key: bytes, value: bytes) -> Any:
        return await self._call("add_provider", node_to_ask, key, value)

    async def call_get_providers(self, node_to_ask: Node, key: bytes) -> Any:
        return await self._call("get_providers", node_to_ask, key)
