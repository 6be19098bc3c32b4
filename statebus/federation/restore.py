"""Restore: take this node's own namespace back from nodes that hold a copy of it.

A node that lost its data folder gets its identity back from the recovery phrase
(``statebus init --recover``) and its data back from the nodes that followed or relayed it
(``statebus restore --from URL``). Each source is asked by anti-entropy
(:mod:`statebus.federation.sync`, pull only: nothing of ours is pushed) for the ops under the pattern
(default: the whole namespace) that this node lacks; they go through :class:`Ingest` like any remote
op, verified against this node's own key and its delegation records. A source can withhold ops (ask
several), but it cannot add, alter or replay anything: a forged or tampered op is refused and
reported, and the ops already here are not sent again.

A source serves our namespace to us because a peer may always read its own namespace back
(:class:`~statebus.federation.policy.PeerView`, rule 3).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from statebus.access.op_gate import OpGate
from statebus.errors import InvalidValue, RateLimited, StatebusError
from statebus.federation.client import MAX_SYNC_ROUNDS, PeerClient
from statebus.federation.ingest import Ingest
from statebus.federation.opset import op_set
from statebus.federation.policy import check_pattern
from statebus.federation.sync import SyncRequest, SyncSession
from statebus.keys import namespace_of
from statebus.runtime import Node
from statebus.types import Key, PubKey

T = TypeVar("T")

log = logging.getLogger("statebus.federation")

THROTTLE_RETRIES = 5
"""How many times a source that answers 429 is asked again (after its ``Retry-After``)."""
MAX_WAIT = 60.0


@dataclass
class RestoreReport:
    """What one source gave back."""

    url: str
    server: PubKey | None = None
    """The source node's key (None if it could not be reached)."""
    received: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: list[str] = field(default_factory=list)
    """Why ops were refused (forged, not ours, malformed), the first few."""
    bytes_moved: int = 0
    throttled: int = 0
    """How often the source answered 429 and was asked again after its ``Retry-After``."""
    error: str = ""
    """Why the source failed, if it did (then nothing of it was applied after the failure)."""


def own_pattern(node: Node, pattern: str | None) -> Key:
    """``pattern`` (default ``/~/``) as a subtree of this node's own namespace.

    Raises:
        InvalidValue / InvalidKey: it is not a subtree, or not in our namespace.
    """
    p = check_pattern(pattern or "/~/", node.local)
    if namespace_of(p) != node.local:
        raise InvalidValue("restore takes back this node's own namespace only: /~/… or /<own pubkey>/…")
    return p


async def restore_from(node: Node, client: PeerClient, url: str, pattern: Key) -> RestoreReport:
    """Pull the ops under ``pattern`` that ``node`` lacks from the node at ``url``; apply the valid
    ones (durably). Never raises for what the source does: the report says it."""
    report = RestoreReport(url)
    ingest = Ingest(node, OpGate.for_node(node, 0), own=True)  # own ops: no quota
    try:
        report.server = await _patiently(functools.partial(client.node_info, url), report)
        session = await _pull(client, report, node, pattern)
        report.received = len(session.received)
        report.bytes_moved = session.bytes_sent + session.bytes_received
        result = await ingest.take(session.received, peer=report.server)
    except StatebusError as exc:
        report.error = f"{exc.code}: {exc.detail}"
        log.warning("restore from %s failed: %s", url, report.error)
        return report
    report.applied, report.duplicates, report.rejected = result.applied, result.duplicates, result.rejected
    return report


async def _patiently(call: Callable[[], Awaitable[T]], report: RestoreReport) -> T:
    """``call()``; a throttled source is waited for (its ``Retry-After``, at most :data:`MAX_WAIT`)
    and asked again, up to :data:`THROTTLE_RETRIES` times in a row."""
    waits = 0
    while True:
        try:
            return await call()
        except RateLimited as exc:
            waits += 1
            if waits > THROTTLE_RETRIES:
                raise
            report.throttled += 1
            log.info("restore: %s asks us to wait %.1f s", report.url, exc.retry_after)
            await asyncio.sleep(min(exc.retry_after, MAX_WAIT))


async def _pull(client: PeerClient, report: RestoreReport, node: Node, pattern: Key) -> SyncSession:
    """One anti-entropy exchange, round by round (the rounds are stateless on the server, so a
    throttled round is simply sent again)."""
    session = SyncSession(pattern, op_set(node, pattern).index)
    request: SyncRequest | None = session.start()
    while request is not None:
        if session.settling_rounds >= MAX_SYNC_ROUNDS:
            raise InvalidValue("anti-entropy did not settle (peer misbehaving?)")
        response, size = await _patiently(functools.partial(client.sync_round, report.url, request), report)
        request = session.receive(response, size)
    return session


async def restore(
    node: Node, client: PeerClient, urls: Sequence[str], pattern: str | None = None
) -> list[RestoreReport]:
    """Restore ``pattern`` (default the whole namespace) from each of ``urls`` in turn.

    Raises:
        InvalidValue / InvalidKey: ``pattern`` is not a subtree of our namespace, or no ``urls``.
    """
    if not urls:
        raise InvalidValue("restore needs at least one source URL (--from)")
    p = own_pattern(node, pattern)
    return [await restore_from(node, client, url, p) for url in urls]
