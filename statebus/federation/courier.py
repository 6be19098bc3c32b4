"""The courier: delivers small signed notices from this node's key to another namespace's node.

    courier = NoticeCourier(identity, client, federation.addresses)
    courier.send("/<A>/chirp/inbox/<me>/<id>", {"type": "reply", …})   # queued; returns at once
    courier.stats                       # sent, refused, failed, last_refusal
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
   of time gave no verdict) is retried with backoff, :data:`ATTEMPTS` times, then dropped
   (:attr:`CourierStats.failed`).
4. The queue is in memory and bounded (:data:`MAX_QUEUED`; over it :meth:`send` raises
   ``RateLimited``): notices waiting when the node stops are not sent after it starts again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from statebus.errors import InvalidKey, PeerUnavailable, RateLimited, RemoteError, StatebusError, TooLarge
from statebus.federation.client import PeerClient
from statebus.federation.follow import Backoff
from statebus.identity import Identity
from statebus.identity.signing import sign_op
from statebus.keys import namespace_of
from statebus.oplog import Op, encode_op, mint_version
from statebus.types import JSON, Key, PubKey
from statebus.values import dumps_json

log = logging.getLogger("statebus.federation.courier")

MAX_NOTICE_BYTES = 4096
MAX_QUEUED = 256
ATTEMPTS = 6
CONCURRENCY = 4
RETRIED = frozenset({"app_failed"})
"""Error codes that are no verdict on the notice (the receiver's validator ran out of time): retried."""

Addresses = Callable[[PubKey], Awaitable[list[str]]]
"""Where a namespace's owner can be reached, best first."""


@dataclass
class CourierStats:
    sent: int = 0
    refused: int = 0
    failed: int = 0
    last_refusal: str | None = None
    waiting: int = 0


@dataclass
class NoticeCourier:
    """Signs and delivers notices (see the module rules)."""

    identity: Identity
    client: PeerClient
    addresses: Addresses
    backoff: Backoff = field(default_factory=lambda: Backoff(0.25, 5.0))
    stats: CourierStats = field(default_factory=CourierStats)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONCURRENCY))

    def notice(self, key: Key, value: JSON) -> Op:
        """The signed op of a notice (rule 1). Raises InvalidKey or TooLarge."""
        if namespace_of(key) == self.identity.pubkey:
            raise InvalidKey(f"{key}: a notice goes to another namespace; write your own keys directly")
        size = len(dumps_json(value))
        if size > MAX_NOTICE_BYTES:
            raise TooLarge(f"a notice is at most {MAX_NOTICE_BYTES} bytes of JSON, not {size}")
        op = Op(key, "", (), self.identity.pubkey, 1, "lww", "set", value)
        return sign_op(dataclasses.replace(op, version=mint_version(op)), self.identity)

    def send(self, key: Key, value: JSON) -> None:
        """Queue the notice (on the event loop's thread); raises RateLimited when the queue is full."""
        if self.stats.waiting >= MAX_QUEUED:
            raise RateLimited(f"{MAX_QUEUED} notices are waiting to be delivered; try later", retry_after=5.0)
        op = self.notice(key, value)
        self.stats.waiting += 1
        task = asyncio.get_running_loop().create_task(self._deliver(op, encode_op(op)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, op: Op, encoded: bytes) -> None:
        owner = namespace_of(op.key)
        try:
            async with self._slots:
                for attempt in range(ATTEMPTS):
                    wait = self.backoff.delay(attempt)
                    for url in await self.addresses(owner):
                        try:
                            await self.client.put_op(url, op.key, encoded)
                        except PeerUnavailable:
                            continue
                        except RateLimited as exc:
                            wait = max(wait, exc.retry_after)
                            break
                        except RemoteError as exc:
                            if exc.status_hint >= 500:
                                continue
                            if exc.remote_code in RETRIED:
                                break
                            self.stats.refused += 1
                            self.stats.last_refusal = f"{op.key}: {exc.detail}"
                            log.info("notice %s refused: %s", op.key, exc.detail)
                            return
                        self.stats.sent += 1
                        return
                    await asyncio.sleep(wait)
                self.stats.failed += 1
                log.info("notice %s not delivered: %s unreachable", op.key, owner)
        except StatebusError as exc:  # a lookup that failed in a way the loop did not expect
            self.stats.failed += 1
            log.info("notice %s not delivered: %s", op.key, exc.detail)
        finally:
            self.stats.waiting -= 1

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
