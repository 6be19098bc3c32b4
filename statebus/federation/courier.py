"""The courier: delivers small signed notices from this node's key to another namespace's node.

    courier = NoticeCourier(identity, client, federation.addresses, node)
    await courier.start()               # resumes the notices stored by an earlier run
    courier.send("/<A>/chirp/inbox/<me>/<id>", {"type": "reply", …}, source="/<me>/chirp/posts/<id>")
    courier.retract("/<me>/chirp/posts/<id>")   # takes back every notice that record sent
    courier.stats                       # sent, refused, failed, expired, retracted, waiting
    await courier.aclose()

A hosted app with a ``send`` grant hands notices here (``host.put`` of a key in another namespace,
from an ``on_write`` handler: :mod:`statebus.apps.handlers` rule 6). chirp uses it so a reply, like,
repost, quote, mention or follow reaches the author even when the author does not follow the writer.

Rules:

1. A notice is one op: ``set`` of a JSON value at a key in *another* namespace, authored and signed
   by this node's key, with no parents and clock 1, so sending the same notice twice is the same op
   (the receiver answers "already stored"). At most :data:`MAX_NOTICE_BYTES` of JSON.
2. It is delivered as a signed client's write (``PUT`` with ``application/vnd.statebus.op+json``,
   the request signed by this node's key) to the namespace owner's node, found like a follow finds
   it: the DHT record first, then addresses this node knows (invites, follows' ``via``).
3. The receiver decides: its rules (the owner opens an inbox with ``{"write": "signed"}``), its
   guest rates and quota (:mod:`statebus.access.guests`) and its apps' validators. A refusal (4xx
   other than 429 and ``app_failed``) is final: counted in :attr:`CourierStats.refused` and logged,
   never retried. An unreachable node, a 5xx, a 429 or an ``app_failed`` (a validator that ran out
   of time gave no verdict) is retried with backoff (up to ``notice_retry_max`` seconds apart)
   until the notice is ``notice_expiry`` seconds old; then it is dropped and logged
   (:attr:`CourierStats.expired`).
4. The queue is durable: each waiting op is a record ``/~/.courier/queue/<id>`` in the node's own
   store (private: names starting with ``.`` are outside every app's grant and every share), saved
   before the first attempt, rewritten with its attempt count and next time after each failed one,
   deleted when the op is delivered, refused or expired. :meth:`start` resumes them, keeping their
   schedule. A notice whose ``send`` came less than one commit before the node was killed is lost
   (the write that caused it is not: it is in this node's namespace).
5. A queue holds at most ``notice_queue_max`` ops and ``notice_queue_bytes`` bytes per destination
   namespace; over either, :meth:`send` raises ``RateLimited`` and the notice is not queued.
6. Retraction: a delivered notice is remembered under the record that sent it (``source``) in
   ``/~/.courier/sent/<id>``. :meth:`retract` of that record sends, for each, a signed ``delete``
   of the notice key whose parent is the notice's version (clock 2), through the same durable
   queue; a notice not yet delivered is dropped from the queue instead. Only the sender's key may
   sign that delete; whether the receiver lets it is its rules' and validators' business (chirp:
   the key names its sender).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from statebus.errors import InvalidKey, PeerUnavailable, RateLimited, RemoteError, StatebusError, TooLarge
from statebus.federation.client import PeerClient
from statebus.federation.follow import Backoff
from statebus.identity import Identity
from statebus.identity.signing import sign_op
from statebus.keys import namespace_of
from statebus.oplog import Op, decode_op, encode_op, mint_version
from statebus.runtime import Node
from statebus.types import JSON, Key, PubKey
from statebus.values import dumps_json

log = logging.getLogger("statebus.federation.courier")

MAX_NOTICE_BYTES = 4096
CONCURRENCY = 4
RETRIED = frozenset({"app_failed"})
"""Error codes that are no verdict on the notice (the receiver's validator ran out of time): retried."""
COURIER = ".courier"
QUEUE = f"/~/{COURIER}/queue/"
SENT = f"/~/{COURIER}/sent/"
MAX_SENT_PER_SOURCE = 64
"""Notices remembered per source record (chirp sends at most a few per post)."""

Addresses = Callable[[PubKey], Awaitable[list[str]]]
"""Where a namespace's owner can be reached, best first."""


@dataclass
class CourierStats:
    sent: int = 0
    refused: int = 0
    failed: int = 0
    expired: int = 0
    retracted: int = 0
    last_refusal: str | None = None
    waiting: int = 0
    resumed: int = 0


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """Per destination namespace (rule 5), and how long and how far apart a notice is tried (rule 3)."""

    max_count: int = 256
    max_bytes: int = 256 * 1024
    expiry: float = 7 * 86400.0
    retry_max: float = 300.0


def _record_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class _Queued:
    op: Op
    encoded: bytes
    record: dict[str, Any]
    task: asyncio.Task[None] | None = None
    state: str = "waiting"
    """waiting (in the queue or between attempts), sending (an attempt is on the wire), sent"""


@dataclass
class NoticeCourier:
    """Signs and delivers notices, durably (see the module rules)."""

    identity: Identity
    client: PeerClient
    addresses: Addresses
    node: Node
    limits: QueueLimits = field(default_factory=QueueLimits)
    backoff_base: float = 0.25
    stats: CourierStats = field(default_factory=CourierStats)
    clock: Callable[[], float] = time.time
    _queued: dict[str, _Queued] = field(default_factory=dict)
    _per_dest: dict[PubKey, tuple[int, int]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONCURRENCY))
    _ledger_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _closed: bool = False

    def notice(self, key: Key, value: JSON) -> Op:
        """The signed op of a notice (rule 1). Raises InvalidKey or TooLarge."""
        if namespace_of(key) == self.identity.pubkey:
            raise InvalidKey(f"{key}: a notice goes to another namespace; write your own keys directly")
        size = len(dumps_json(value))
        if size > MAX_NOTICE_BYTES:
            raise TooLarge(f"a notice is at most {MAX_NOTICE_BYTES} bytes of JSON, not {size}")
        op = Op(key, "", (), self.identity.pubkey, 1, "lww", "set", value)
        return sign_op(dataclasses.replace(op, version=mint_version(op)), self.identity)

    def retraction(self, key: Key, version: str) -> Op:
        """The signed delete of the notice ``version`` at ``key`` (rule 6)."""
        op = Op(key, "", (version,), self.identity.pubkey, 2, "lww", "delete", None)
        return sign_op(dataclasses.replace(op, version=mint_version(op)), self.identity)

    # ------------------------------------------------------------------ queue

    def send(self, key: Key, value: JSON, source: Key | None = None) -> None:
        """Queue the notice (on the event loop's thread); raises RateLimited over the queue's caps."""
        self._enqueue(self.notice(key, value), source)

    def _enqueue(self, op: Op, source: Key | None) -> None:
        encoded = encode_op(op)
        owner = namespace_of(op.key)
        count, size = self._per_dest.get(owner, (0, 0))
        if count + 1 > self.limits.max_count or size + len(encoded) > self.limits.max_bytes:
            log.warning(
                "notice %s not queued: the queue to %s is full (%d notices, %d bytes)",
                op.key,
                owner,
                count,
                size,
            )
            raise RateLimited(
                f"{count} notices ({size} bytes) are waiting for {owner}'s node; try later", retry_after=5.0
            )
        now = self.clock()
        record: dict[str, Any] = {
            "op": encoded.decode(),
            "to": owner,
            "source": source,
            "attempts": 0,
            "next": now,
            "expires": now + self.limits.expiry,
        }
        self._start(_record_id(op.version), op, encoded, record, fresh=True)

    def _start(self, rid: str, op: Op, encoded: bytes, record: dict[str, Any], *, fresh: bool) -> None:
        if rid in self._queued or self._closed:
            return
        owner = namespace_of(op.key)
        count, size = self._per_dest.get(owner, (0, 0))
        self._per_dest[owner] = (count + 1, size + len(encoded))
        item = _Queued(op, encoded, record)
        self._queued[rid] = item
        self.stats.waiting += 1
        item.task = asyncio.get_running_loop().create_task(self._run(rid, item, fresh))
        self._tasks.add(item.task)
        item.task.add_done_callback(self._tasks.discard)

    def _forget(self, rid: str) -> None:
        item = self._queued.pop(rid, None)
        if item is None:
            return
        self.stats.waiting -= 1
        owner = namespace_of(item.op.key)
        count, size = self._per_dest.get(owner, (1, len(item.encoded)))
        if count <= 1:
            self._per_dest.pop(owner, None)
        else:
            self._per_dest[owner] = (count - 1, size - len(item.encoded))

    async def start(self) -> None:
        """Resume the queue an earlier run left (rule 4), each op on its stored schedule."""
        after = ""
        while True:
            names = self.node.children(QUEUE, after, 200)
            for name in names:
                change = self.node.fetch_or_none(QUEUE + name, durable=True)
                if change is None or not change.exists or not isinstance(change.value, dict):
                    continue
                try:
                    op = decode_op(change.value["op"])
                except (StatebusError, KeyError, TypeError, ValueError) as exc:
                    log.warning("courier: dropping an unreadable queue record %s: %s", name, exc)
                    await self.node.delete(QUEUE + name)
                    continue
                self.stats.resumed += 1
                self._start(name, op, encode_op(op), dict(change.value), fresh=False)
            if len(names) < 200:
                return
            after = names[-1]

    async def _run(self, rid: str, item: _Queued, fresh: bool) -> None:
        op, record = item.op, item.record
        outcome = "failed"
        try:
            if fresh:
                await self.node.save(QUEUE + rid, record)
            while True:
                now = self.clock()
                if now >= record["expires"]:
                    outcome = "expired"
                    break
                await asyncio.sleep(max(0.0, min(record["next"], record["expires"]) - now))
                if self.clock() >= record["expires"]:
                    outcome = "expired"
                    break
                item.state = "sending"
                try:
                    wait, outcome = await self._attempt(op, item.encoded)
                finally:
                    item.state = "sent" if outcome == "sent" else "waiting"
                if outcome != "retry":
                    break
                record["attempts"] += 1
                delay = Backoff(self.backoff_base, self.limits.retry_max).delay(record["attempts"] - 1)
                record["next"] = self.clock() + max(wait, delay)
                await self.node.save(QUEUE + rid, record)
            if outcome == "sent":
                self.stats.sent += 1
                if op.kind == "set" and record.get("source"):
                    await self._remember(record["source"], op)
            elif outcome == "expired":
                self.stats.expired += 1
                log.warning(
                    "notice %s dropped: %s was not reached in %d attempts before it expired",
                    op.key,
                    record["to"],
                    record["attempts"],
                )
            await self.node.delete(QUEUE + rid)
        except StatebusError as exc:  # this node's store refused (full, failed): the op waits for a restart
            self.stats.failed += 1
            log.warning("notice %s not delivered: %s", op.key, exc.detail)
        finally:
            self._forget(rid)

    async def _attempt(self, op: Op, encoded: bytes) -> tuple[float, str]:
        """One try at every address: (retry-after, "sent" | "refused" | "retry")."""
        owner = namespace_of(op.key)
        async with self._slots:
            try:
                urls = await self.addresses(owner)
            except StatebusError as exc:
                log.info("notice %s: no address for %s: %s", op.key, owner, exc.detail)
                return 0.0, "retry"
            for url in urls:
                try:
                    await self.client.put_op(url, op.key, encoded)
                except PeerUnavailable:
                    continue
                except RateLimited as exc:
                    return exc.retry_after, "retry"
                except RemoteError as exc:
                    if exc.status_hint >= 500:
                        continue
                    if exc.remote_code in RETRIED:
                        return 0.0, "retry"
                    self.stats.refused += 1
                    self.stats.last_refusal = f"{op.key}: {exc.detail}"
                    log.info("notice %s (%s) refused: %s", op.key, op.kind, exc.detail)
                    return 0.0, "refused"
                return 0.0, "sent"
        return 0.0, "retry"

    # ------------------------------------------------------------------ retraction (rule 6)

    async def _remember(self, source: Key, op: Op) -> None:
        key = SENT + _record_id(source)
        async with self._ledger_lock:
            change = self.node.fetch_or_none(key, durable=True)
            sent = (
                change.value.get("notices", [])
                if change is not None and isinstance(change.value, dict)
                else []
            )
            sent = [n for n in sent if n.get("key") != op.key][-(MAX_SENT_PER_SOURCE - 1) :]
            sent.append({"key": op.key, "version": op.version})
            await self.node.save(key, {"source": source, "notices": sent})

    def retract(self, source: Key) -> None:
        """Take back every notice ``source`` sent (on the event loop's thread; rule 6)."""
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._retract(source))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retract(self, source: Key) -> None:
        for rid, item in list(self._queued.items()):
            if item.op.kind != "set" or item.record.get("source") != source or item.task is None:
                continue
            while item.state == "sending":
                await asyncio.sleep(0.02)
            if item.state == "sent":  # delivered: remembered once its task ends, retracted below
                await asyncio.gather(item.task, return_exceptions=True)
                continue
            item.task.cancel()  # not delivered yet: dropped, nothing to take back
            await asyncio.gather(item.task, return_exceptions=True)
            await self.node.delete(QUEUE + rid)
            self.stats.retracted += 1
        key = SENT + _record_id(source)
        async with self._ledger_lock:
            change = self.node.fetch_or_none(key, durable=True)
            if change is None or not change.exists or not isinstance(change.value, dict):
                return
            for n in change.value.get("notices", []):
                try:
                    self._enqueue(self.retraction(n["key"], n["version"]), None)
                    self.stats.retracted += 1
                except StatebusError as exc:
                    log.warning("notice %s not retracted: %s", n.get("key"), exc.detail)
            await self.node.delete(key)

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
