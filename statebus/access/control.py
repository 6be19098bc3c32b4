"""Access control for a whole node: one policy per namespace, enforced on reads, writes and streams.

:class:`AccessControl` is what the transports call. Clients are public keys (``None`` = anonymous);
the node owner (owner token, or a request signed with the node key) is the local namespace's key.

* ``why_not`` / ``require`` decide reads (``read`` for a key, ``list`` for a subtree) and writes
  with the namespace's :class:`AccessPolicy`. The node owner may also read (not write) the remote
  namespaces stored on its node.
* :meth:`children` filters a listing down to the names the client may see.
* :meth:`events` opens a stream that only delivers keys the client may read, counts against the
  client's subscription limit, and is cut off (``Forbidden``) the moment a rule, list or delegation
  change takes its read access away.
* :meth:`apply_op` stores an op written by a non-owner key: it must be that key's signed op (see
  docs/trust-model.md), passes the node's one gate for remote ops (:attr:`AccessControl.op_gate`,
  shared with federation: one quota counter) before anything happens, and is refused with a clear
  error (401 bad signature, 403 not allowed, 413 quota) changing nothing.

A node has one: the composition root (:mod:`statebus.server`) makes it with the node and hands it to
every transport, so all of them share one rate table and one quota counter.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp

from statebus.access.acl import acl_prefix, check_acl_value
from statebus.access.capabilities import CapabilityStore
from statebus.access.gate import SignatureGate
from statebus.access.guests import GuestLimits
from statebus.access.limits import RateLimiter, SubscriptionCounter
from statebus.access.op_gate import OpGate
from statebus.access.policy import AccessPolicy
from statebus.access.signatures import RequestVerifier
from statebus.bus import Change
from statebus.config import Settings
from statebus.errors import SIGN_IN_HINT, Forbidden, InvalidOp, StatebusError, TooLarge, Unauthorized
from statebus.identity.delegation import Keyring, keys_prefix, parse_record
from statebus.identity.signing import check_signature
from statebus.keys import is_pubkey, is_subtree, namespace_of
from statebus.oplog import Op
from statebus.runtime import Node
from statebus.runtime.streams import EventStream, OpenEvents
from statebus.types import Key, PubKey
from statebus.values import dumps_json

log = logging.getLogger("statebus.access")

OP_MEDIA_TYPE = "application/vnd.statebus.op+json"
MAX_LIST_SCAN = 20_000
"""Most names one filtered listing looks at (a client that may see few of many names gets a short,
possibly incomplete page rather than making the node scan without bound)."""
MAX_POLICIES = 4096
"""Namespaces whose policy is held in memory at once (the local one is never dropped)."""


@dataclass(eq=False)
class _Watch:
    client: PubKey | None
    patterns: tuple[Key, ...]
    stream: EventStream


class AccessControl:
    """The access layer of one node.

    Args:
        node: the node (its bus holds the rules).
        settings: rate limits, subscription limit, quota, signature settings.
    """

    def __init__(self, node: Node, settings: Settings) -> None:
        self.node = node
        self.local: PubKey = node.local
        self.settings = settings
        self.rates = RateLimiter(settings.rate_limit_per_client, settings.rate_limit_per_ip)
        self.subscriptions = SubscriptionCounter(settings.max_subscriptions_per_client)
        self.op_gate = OpGate.for_node(self.node, settings.quota_bytes_per_remote_namespace)
        """The node's one gate for remote ops and its one quota counter (federation shares it)."""
        if node.blobs is not None and node.blobs.quota is None:
            node.blobs.quota = self.op_gate.quota  # blobs of remote namespaces count on the same quota
        self.signatures = RequestVerifier(
            settings.signature_max_age,
            settings.signature_max_nonces,
            settings.public_addresses,
            max_skew=settings.max_clock_skew,
        )
        self.capabilities = CapabilityStore(self.local)
        """The installed apps' scoped capabilities (:mod:`statebus.access.capabilities`)."""
        self.capabilities.watch(node)
        self._policies: dict[PubKey, AccessPolicy] = {}
        self._watches: list[_Watch] = []
        self.node.handle(acl_prefix(self.local), to_save=_check_acl_op)
        self.node.handle(keys_prefix(self.local), to_save=_check_keys_op)
        self.local_policy = self.policy(self.local)
        self.guests = GuestLimits(node, settings)
        """Rates and quota of other keys' writes into this node's namespace (an inbox)."""

    def __repr__(self) -> str:
        return f"AccessControl({self.local!r}, namespaces={len(self._policies)})"

    # ------------------------------------------------------------------ policies

    def policy(self, namespace: PubKey) -> AccessPolicy:
        """The live policy of ``namespace`` (created on first use, following the bus)."""
        policy = self._policies.get(namespace)
        if policy is None:
            if len(self._policies) >= MAX_POLICIES:
                watched = {namespace_of(p) for w in self._watches if not w.stream.closed for p in w.patterns}
                keep = watched | {self.local}
                for ns in [n for n in self._policies if n not in keep][: MAX_POLICIES // 4]:
                    self._policies.pop(ns).close()
            policy = AccessPolicy(self.node, namespace, Keyring(leeway=self.settings.max_clock_skew))
            policy.listen(self._policy_changed)
            self._policies[namespace] = policy
        return policy

    def why_not(self, action: str, client: PubKey | None, key: Key) -> str | None:
        """None when ``client`` may ``action`` (read, write, list) ``key``; otherwise the reason."""
        namespace = namespace_of(key)
        if client == self.local and action != "write":
            return None  # the node owner reads whatever its node stores
        reason = self.policy(namespace).why_not(action, client, key)
        if reason is None and action == "read":
            reason = self._why_not_inputs(client, key)
        return reason

    def _why_not_inputs(self, client: PubKey | None, key: Key) -> str | None:
        """A derived key carries the read rules of its inputs: None when ``client`` may read every key
        its function read (through derived inputs too), else the reason (naming no input)."""
        todo, seen = [key], {key}
        while todo:
            inputs = self.node.derived_inputs(todo.pop())
            for k in sorted(inputs or ()):
                if k in seen:
                    continue
                seen.add(k)
                if self.policy(namespace_of(k)).why_not("read", client, k) is not None:
                    return f"{key} is derived from keys this client may not read"
                todo.append(k)
        return None

    def action_of(self, key: Key) -> str:
        """``list`` for a subtree, ``read`` for a key."""
        return "list" if is_subtree(key) else "read"

    def may_read(self, client: PubKey | None, key: Key) -> bool:
        return self.why_not(self.action_of(key), client, key) is None

    def may_write(self, client: PubKey | None, key: Key) -> bool:
        return self.why_not("write", client, key) is None

    def may_read_rules(self, client: PubKey | None, namespace: PubKey) -> bool:
        """Whether ``client`` may receive the rules of ``namespace`` (``/<namespace>/.acl/…``) from
        this node: what a relay needs to serve that namespace as its owner would."""
        return client == self.local or self.policy(namespace).may_read_rules(client)

    def denied(self, client: PubKey | None, namespace: PubKey | None = None) -> bool:
        """Whether the deny-list of ``namespace`` (default: the local owner's; another owner's as
        replicated here) refuses ``client`` everything (grants such as shares never reach past it)."""
        policy = self.local_policy if namespace is None else self.policy(namespace)
        rules = policy.rules
        owner = policy.owner
        return client not in (self.local, owner) and (
            rules.deny_all or (client is not None and client in rules.deny)
        )

    def require(self, action: str, client: PubKey | None, key: Key) -> None:
        """Raise :class:`Forbidden` (403) with the reason; for an anonymous client
        :class:`Unauthorized` (401), whose reason ends with how to sign in."""
        reason = self.why_not(action, client, key)
        if reason is not None:
            if client is None:
                raise Unauthorized(f"{reason}. {SIGN_IN_HINT}")
            raise Forbidden(reason)

    def hit(self, client: PubKey | None, address: str | None) -> None:
        """Count a request against the rate limits (the node owner is exempt). Raises RateLimited."""
        if client != self.local:
            self.rates.hit(client, address)

    def count_address(self, address: str | None) -> None:
        """Count a request against its address's rate only (the signature gate, before verifying)."""
        self.rates.hit(None, address)

    def gate(self, app: ASGIApp) -> SignatureGate:
        """``app`` behind the request-signature gate of this node (verify, then count the key)."""
        return SignatureGate(app, self.signatures, self.settings.max_body_bytes, self.count_address)

    # ------------------------------------------------------------------ listings

    def children(self, client: PubKey | None, prefix: Key, after: str, limit: int) -> list[str]:
        """The names under ``prefix`` that ``client`` may see (readable keys, listable subtrees),
        at most ``limit``, after ``after`` (paging as ``Node.children``)."""
        out: list[str] = []
        base = prefix if is_subtree(prefix) else prefix + "/"
        scanned = 0
        while len(out) < limit and scanned < MAX_LIST_SCAN:
            names = self.node.children(base, after, max(limit, 100))
            if not names:
                break
            scanned += len(names)
            out.extend(n for n in names if self.may_read(client, base + n))
            after = names[-1]
        return out[:limit]

    # ------------------------------------------------------------------ streams

    def events(
        self, client: PubKey | None, counted_as: str | None, patterns: str | Sequence[str], **kw: Any
    ) -> EventStream:
        """``node.events(patterns, **kw)`` for ``client``: each pattern checked, only readable keys
        delivered, cut off with ``Forbidden`` when read access is withdrawn. ``counted_as`` names the
        client for the subscription limit (None: not counted, e.g. the node owner).

        Raises:
            Forbidden: a pattern the client may not read.
            RateLimited: the client holds ``max_subscriptions_per_client`` open streams.
        """
        self._watches = [w for w in self._watches if not w.stream.closed]
        pats = tuple(self.node.parse(p) for p in ([patterns] if isinstance(patterns, str) else patterns))
        for p in pats:
            self.require(self.action_of(p), client, p)
        if counted_as is not None:
            self.subscriptions.check(counted_as)
        guarded = client != self.local

        def readable(change: Change) -> bool:
            if change.kind == "derived":  # its inputs may have changed: check them each time
                return self.why_not("read", client, change.key) is None
            return change.key in pats or self.why_not("read", client, change.key) is None

        stream = self.node.events(list(pats), filter=readable if guarded else None, **kw)
        if counted_as is not None:
            self.subscriptions.add(counted_as, stream)
        if guarded:
            self._watches.append(_Watch(client, pats, stream))
        return stream

    def opener(self, client: PubKey | None, counted_as: str | None) -> OpenEvents:
        """How ``client``'s streams are opened: :meth:`events` with ``client`` and ``counted_as`` bound
        (what the transports' stream code takes in place of ``Node.events``)."""
        return functools.partial(self.events, client, counted_as)

    def _policy_changed(self, policy: AccessPolicy) -> None:
        """A rule, list or delegation changed: cut the streams that lost read access."""
        alive: list[_Watch] = []
        for watch in self._watches:
            if watch.stream.closed:
                continue
            for p in watch.patterns:
                if namespace_of(p) != policy.owner:
                    continue
                reason = self.why_not(self.action_of(p), watch.client, p)
                if reason is not None:
                    watch.stream.cut(Forbidden(f"read access to {p} was withdrawn: {reason}"))
                    break
            if not watch.stream.closed:
                alive.append(watch)
        self._watches = alive

    @property
    def open_streams(self) -> int:
        self._watches = [w for w in self._watches if not w.stream.closed]
        return len(self._watches)

    # ------------------------------------------------------------------ ops from outside

    def check_op(self, submitter: PubKey | None, key: Key, op: Op) -> None:
        """Verify an op a client submitted for ``key`` before anything is stored (what
        :meth:`apply_op`'s door asks, and the signature the gate checks between the two).

        Raises:
            InvalidOp: the op names another key than the URL, or is not in normal form.
            BadSignature: (401) the op's signature does not verify for its author.
            Forbidden: (403) the submitter is not the author, the author may not write the key
                (unknown or revoked key, outside its delegation or rules), or the node does not
                host that namespace.
        """
        door = _ClientDoor(self, submitter, key)
        door.admits(op)
        check_signature(op)
        door.authorizes(op)

    def _authorize_op(self, submitter: PubKey | None, key: Key, op: Op) -> None:
        if submitter != op.author and submitter != self.local:
            raise Forbidden("an op is submitted by its author: sign the request with the op's key")
        self.require("write", op.author, key)
        namespace = namespace_of(key)
        if namespace != self.local and not self.local_policy.may_host(namespace):
            raise Forbidden(
                f"this node does not host namespace {namespace}; its owner lists hosted keys in "
                f"{acl_prefix(self.local)}.host"
            )
        # a client writes on versions this node has, as a PUT with Parents must (400 otherwise)
        self.node.check_parents(key, op.parents, op.version)
        limit = self.settings.max_value_bytes
        if op.kind in ("set", "crdt"):
            size = len(op.body) if isinstance(op.body, bytes) else len(dumps_json(op.body))
            if size > limit:
                raise TooLarge(f"the value is {size} bytes; the limit is {limit}")

    async def submit(
        self,
        submitter: PubKey | None,
        method: str,
        content_type: str | None,
        key: Key,
        body: bytes,
        address: str | None = None,
    ) -> Change:
        """A write sent by a client that is not the node owner (or any client sending an op): the body
        must be a signed op (``PUT``/``PATCH`` with ``Content-Type: application/vnd.statebus.op+json``).

        Raises:
            InvalidOp: another method or content type (the reason says what to send).
        """
        if method not in ("PUT", "PATCH") or content_type != OP_MEDIA_TYPE:
            raise InvalidOp(
                f"a client other than the node owner writes by sending its signed op: PUT with "
                f"Content-Type: {OP_MEDIA_TYPE} (a delete is an op of kind 'delete'); see docs/trust-model.md"
            )
        return await self.apply_op(submitter, key, body, address)

    def _guest(self, submitter: PubKey | None, key: Key) -> PubKey | None:
        """``submitter`` when its write of ``key`` is a guest write (:mod:`statebus.access.guests`)."""
        if submitter is None or submitter == self.local or namespace_of(key) != self.local:
            return None
        if self.local_policy.is_delegate(submitter, key) or self.local_policy.names("write", submitter, key):
            return None  # a delegate, or a writer the rule names: a collaborator, not a guest
        return submitter

    async def apply_op(
        self, submitter: PubKey | None, key: Key, body: bytes, address: str | None = None
    ) -> Change:
        """Verify and store a signed op (``application/vnd.statebus.op+json``) sent for ``key``:
        it passes the node's :class:`~statebus.access.op_gate.OpGate` as every remote op does.
        Another key writing into this node's own namespace (where a rule lets it) is a guest write:
        first its rates, then after the gate its quota (:mod:`statebus.access.guests`).

        Returns the change (the current state when the op was already stored). Nothing is stored
        when it raises (see :meth:`check_op`; also :class:`QuotaExceeded` for a remote namespace
        or a guest over its quota, :class:`RateLimited` for a guest over its rate).
        """
        guest = self._guest(submitter, key)
        if guest is not None and self.local_policy.why_not("write", guest, key) is None:
            self.guests.hit(guest, address)  # only writes a rule admits count: a refusal is 403
            self.guests.check_own(guest, key)  # a guest changes only what it wrote
        admitted = await self.op_gate.admit_async(body, _ClientDoor(self, submitter, key))
        change: Change | None = None
        charged = 0
        try:
            if guest is not None:
                charged = self.guests.charge(admitted.op.author, len(admitted.encoded))
            change = await self.node.apply(admitted.op, peer=submitter, encoded=admitted.encoded)
        finally:
            self.op_gate.settle(admitted, applied=change is not None)
            if change is None and guest is not None:
                self.guests.release(admitted.op.author, charged)
        if change is None:
            current = self.node.fetch_or_none(key)
            if current is None:
                raise InvalidOp("the op was already stored and its key no longer exists")
            return current
        return change


@dataclass(frozen=True, slots=True)
class _ClientDoor:
    """The signed-op HTTP route as a door of the op gate: ``submitter`` sent an op for ``key``."""

    control: AccessControl
    submitter: PubKey | None
    key: Key

    def admits(self, op: Op) -> None:
        if op.key != self.key:
            raise InvalidOp(f"the op is for {op.key!r}, but was sent to {self.key}")

    def authorizes(self, op: Op) -> None:
        self.control._authorize_op(self.submitter, self.key, op)


def _check_acl_op(op: Op) -> Op | None:
    """``to_save`` of ``/<local>/.acl/``: only whole, valid rules and lists are stored."""
    if op.kind == "delete":
        return None
    if op.kind != "set" or op.content_type is not None:
        raise InvalidOp("write an access rule or list whole, as JSON (PUT); patches are not taken here")
    check_acl_value(op.key, op.body)
    return None


def _check_keys_op(op: Op) -> Op | None:
    """``to_save`` of ``/<local>/.keys/``: only valid, owner-signed records at their own key."""
    if op.kind == "delete":
        return None
    delegate = op.key[len(keys_prefix(namespace_of(op.key))) :]
    if op.kind != "set" or op.content_type is not None or not is_pubkey(delegate):
        raise InvalidOp("a .keys entry is a whole delegation record at /<owner>/.keys/<delegate>")
    try:
        parse_record(op.body, op.key)
    except StatebusError as exc:
        raise InvalidOp(f"not a valid delegation record: {exc.detail}") from None
    return None
