"""Anti-entropy: two replicas of a namespace find the ops one of them lacks, and move only those.

Pure: no I/O, no clocks. The transport (``statebus.http.peers`` and ``statebus.federation.client``)
carries the messages; :mod:`statebus.federation.opset` reads the op sets out of a store.

**Method: a hash trie over op hashes (range-based set reconciliation with fixed split points).**
The items are the ops a replica holds under a pattern, identified by ``op_hash`` (SHA-256 of the
signing bytes: the op's content, not its signature). Ops are immutable and a delete is an op too,
so "the state of a namespace" *is* this set and two replicas agree exactly when their sets agree.
A range is a hex prefix of the op hash; its summary is the count and a 16-byte fingerprint
(SHA-256 of the sorted ids in it). Equal summaries end the range; a differing range where we hold
few ids (``<= leaf``) is answered with the ids themselves, which settles it in both directions; any
other differing range is answered with its 16 child summaries (fingerprints only). Hashes are
uniform, so the trie is balanced without coordination.

Why this and not a Merkle tree over sorted ``(key, version-set hash)``: a key-ordered tree needs
split points both sides agree on (key boundaries move as keys are written), then a second exchange
of version lists for each differing key before the ops move. Over op hashes the split points are
fixed, a difference is found in ``O(d · log16 n)`` summaries for ``d`` differing ops, the last step
names the ops themselves, and concurrent writes to one key (two versions, neither superseding)
need no special case. Measured figures: docs/federation.md.

Wire (canonical JSON, never pickle): ids are unpadded base64url of 32 bytes; a range is
``[prefix, count, fingerprint]`` or ``[prefix, count, fingerprint, [ids…]]``; ops are embedded as
their canonical JSON objects.

**Paging: no cap on the total.** An answer carries at most :data:`PAGE_BYTES` of ops (always at least
one op, so any op up to :data:`MAX_OP_BYTES` travels); the ids of the other ops it would send go in
``later`` (at most :data:`MAX_IDS`; ``more: true`` when even those are not all), and the opener asks for
them in its next ``want``. So a message stays under :data:`MAX_MESSAGE_BYTES` however much a replica
lacks, and an opener that takes each page as it comes (``SyncSession.take``) keeps what it got if the
exchange breaks: the next exchange starts from the ops it then holds. An answer that had to leave
ids out (``more``) names no ``seq``: the opener then has no claim to everything up to a cursor, and
streams from the cursor it had instead.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from statebus.errors import InvalidValue, TooLarge
from statebus.keys import parse_key
from statebus.values.json import loads_json

ID_BYTES = 32
FP_BYTES = 16
LEAF = 8
"""A range holding at most this many ids is answered with the ids (not split further)."""
MAX_RANGES = 4096
MAX_IDS = 65_536
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
PAGE_BYTES = 4 * 1024 * 1024
"""The ops of one answer, in bytes (the first op of a page goes whatever its size)."""
MAX_OP_BYTES = MAX_MESSAGE_BYTES - 64 * 1024
"""The largest op anti-entropy (and the ops stream) carries: one op alone on a page, with room for
the rest of the message. Larger values travel as blobs (``statebus.blobs``)."""
_HEX = "0123456789abcdef"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: Any, size: int, what: str) -> bytes:
    if not isinstance(text, str) or len(text) != (size * 4 + 2) // 3:
        raise InvalidValue(f"{what} is {size} bytes as unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidValue(f"{what} is not base64url") from None
    if len(raw) != size or _b64(raw) != text:
        raise InvalidValue(f"{what} is not canonical base64url")
    return raw


class OpIndex:
    """An immutable sorted set of op ids (32-byte op hashes) with range summaries."""

    __slots__ = ("_hex", "_ids")

    def __init__(self, ids: Iterable[bytes]) -> None:
        self._ids: list[bytes] = sorted(set(ids))
        if any(len(i) != ID_BYTES for i in self._ids):
            raise InvalidValue(f"an op id is {ID_BYTES} bytes")
        self._hex: list[str] = [i.hex() for i in self._ids]

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, bytes):
            return False
        i = bisect.bisect_left(self._ids, item)
        return i < len(self._ids) and self._ids[i] == item

    def ids(self, prefix: str = "") -> list[bytes]:
        """The ids whose hex form starts with ``prefix``, sorted."""
        lo = bisect.bisect_left(self._hex, prefix)
        hi = bisect.bisect_left(self._hex, prefix + "g") if prefix else len(self._hex)
        return self._ids[lo:hi]

    def summary(self, prefix: str, leaf: int = LEAF) -> RangeSummary:
        """The summary of one range: count and fingerprint, plus the ids when there are few."""
        ids = self.ids(prefix)
        fp = hashlib.sha256(b"".join(ids)).digest()[:FP_BYTES]
        return RangeSummary(prefix, len(ids), fp, tuple(ids) if len(ids) <= leaf else None)


@dataclass(frozen=True, slots=True)
class RangeSummary:
    """What one side holds under a hex prefix of the op hash."""

    prefix: str
    count: int
    fingerprint: bytes
    ids: tuple[bytes, ...] | None = None
    """Every id in the range, when the sender listed them (a small range): settles the range."""

    def to_json(self) -> list[Any]:
        out: list[Any] = [self.prefix, self.count, _b64(self.fingerprint)]
        if self.ids is not None:
            out.append([_b64(i) for i in self.ids])
        return out

    @staticmethod
    def from_json(raw: Any) -> RangeSummary:
        if not isinstance(raw, list) or len(raw) not in (3, 4):
            raise InvalidValue("a range is [prefix, count, fingerprint] or [prefix, count, fingerprint, ids]")
        prefix, count, fp = raw[0], raw[1], raw[2]
        if not isinstance(prefix, str) or len(prefix) > 2 * ID_BYTES or prefix.strip(_HEX):
            raise InvalidValue("a range prefix is at most 64 lowercase hex digits")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count < 2**53:
            raise InvalidValue("a range count is a non-negative integer")
        ids = None
        if len(raw) == 4:
            if not isinstance(raw[3], list) or len(raw[3]) > MAX_IDS or len(raw[3]) != count:
                raise InvalidValue("a range's id list has exactly `count` ids")
            ids = tuple(_unb64(i, ID_BYTES, "an op id") for i in raw[3])
            if any(not i.hex().startswith(prefix) for i in ids):
                raise InvalidValue("an id in a range's list is outside its prefix")
        return RangeSummary(prefix, count, _unb64(fp, FP_BYTES, "a fingerprint"), ids)


@dataclass(frozen=True, slots=True)
class Diff:
    """What comparing a peer's ranges with our index found."""

    reply: tuple[RangeSummary, ...]
    """Ranges still to settle: send them back (empty when everything is settled)."""
    need: frozenset[bytes]
    """Ids the peer has and we lack."""
    offer: frozenset[bytes]
    """Ids we have and the peer lacks."""


def summarize(index: OpIndex, prefixes: Sequence[str] = ("",), leaf: int = LEAF) -> tuple[RangeSummary, ...]:
    """The opening summaries of an exchange (by default one range: the whole set)."""
    return tuple(index.summary(p, leaf) for p in prefixes)


def diff(index: OpIndex, ranges: Sequence[RangeSummary], leaf: int = LEAF) -> Diff:
    """Compare the peer's ``ranges`` with ``index``: settle what can be settled, split the rest.

    A range the peer listed is settled in both directions. A range whose summary matches ours is
    settled. Otherwise we answer with our ids when we have few, else with the 16 child ranges.
    """
    reply: list[RangeSummary] = []
    need: set[bytes] = set()
    offer: set[bytes] = set()
    for r in ranges:
        mine = index.summary(r.prefix, leaf)
        if r.ids is not None:
            theirs = set(r.ids)
            ours = set(index.ids(r.prefix))
            need |= theirs - ours
            offer |= ours - theirs
        elif (mine.count, mine.fingerprint) == (r.count, r.fingerprint):
            continue
        elif mine.ids is not None or len(r.prefix) >= 2 * ID_BYTES:
            reply.append(index.summary(r.prefix, leaf=MAX_IDS))
        else:
            # children go without ids: most of them match, and a list costs ~46 bytes an id
            reply.extend(index.summary(r.prefix + c, leaf=-1) for c in _HEX)
    return Diff(tuple(reply), frozenset(need), frozenset(offer))


# ---------------------------------------------------------------------- messages


def _dumps(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _op_objects(ops: Sequence[bytes]) -> list[Any]:
    return [json.loads(op) for op in ops]


def _op_bytes(raw: Any) -> tuple[bytes, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_IDS or not all(isinstance(o, dict) for o in raw):
        raise InvalidValue(f"ops is a list of at most {MAX_IDS} op objects")
    return tuple(_dumps(o) for o in raw)


def _ids(raw: Any, what: str) -> tuple[bytes, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_IDS:
        raise InvalidValue(f"{what} is a list of at most {MAX_IDS} op ids")
    return tuple(_unb64(i, ID_BYTES, "an op id") for i in raw)


def _ranges(raw: Any) -> tuple[RangeSummary, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_RANGES:
        raise InvalidValue(f"ranges is a list of at most {MAX_RANGES} ranges")
    return tuple(RangeSummary.from_json(r) for r in raw)


def _load(data: bytes, fields: set[str]) -> dict[str, Any]:
    if len(data) > MAX_MESSAGE_BYTES:
        raise TooLarge(f"a sync message is at most {MAX_MESSAGE_BYTES} bytes")
    obj = loads_json(data, max_bytes=MAX_MESSAGE_BYTES, max_depth=80).value
    if not isinstance(obj, dict) or obj.get("v") != 1 or set(obj) - fields - {"v"}:
        raise InvalidValue(f"a sync message is a version 1 object with the fields {sorted(fields)}")
    return obj


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """One round from the side that opened the exchange."""

    pattern: str
    ranges: tuple[RangeSummary, ...]
    want: tuple[bytes, ...] = ()
    """Ids the opener found it lacks: the answer carries those ops."""
    ops: tuple[bytes, ...] = field(default=())
    """Ops the answering side lacks (pushed; it takes them only if it would accept them anyway)."""

    def encode(self) -> bytes:
        return _dumps(
            {
                "v": 1,
                "pattern": self.pattern,
                "ranges": [r.to_json() for r in self.ranges],
                "want": [_b64(i) for i in self.want],
                "ops": _op_objects(self.ops),
            }
        )

    @staticmethod
    def decode(data: bytes) -> SyncRequest:
        """Parse a request. Raises InvalidValue / TooLarge / InvalidKey on anything malformed."""
        obj = _load(data, {"pattern", "ranges", "want", "ops"})
        pattern = obj.get("pattern")
        if not isinstance(pattern, str) or not pattern.endswith("/") or parse_key(pattern) != pattern:
            raise InvalidValue("a sync pattern is a normalised subtree: /<pubkey>/…/")
        return SyncRequest(
            pattern,
            _ranges(obj.get("ranges")),
            _ids(obj.get("want", []), "want"),
            _op_bytes(obj.get("ops", [])),
        )


@dataclass(frozen=True, slots=True)
class SyncResponse:
    """The answering side's round: its ranges, the ops the opener lacks, the ids it lacks itself."""

    ranges: tuple[RangeSummary, ...]
    ops: tuple[bytes, ...] = ()
    want: tuple[bytes, ...] = ()
    seq: int | None = None
    """The answering node's cursor when it took its op set: every op it had stored up to there is in
    the set, so once the exchange settles the opener can stream from this cursor on."""
    later: tuple[bytes, ...] = ()
    """Ids of ops the opener lacks that did not fit this page: ask for them in the next ``want``."""
    more: bool = False
    """Even ``later`` does not list every op the opener lacks (more than :data:`MAX_IDS`)."""

    def encode(self) -> bytes:
        obj: dict[str, Any] = {
            "v": 1,
            "ranges": [r.to_json() for r in self.ranges],
            "ops": _op_objects(self.ops),
            "want": [_b64(i) for i in self.want],
        }
        if self.seq is not None:
            obj["seq"] = self.seq
        if self.later:
            obj["later"] = [_b64(i) for i in self.later]
        if self.more:
            obj["more"] = True
        return _dumps(obj)

    @staticmethod
    def decode(data: bytes) -> SyncResponse:
        obj = _load(data, {"ranges", "ops", "want", "seq", "later", "more"})
        seq = obj.get("seq")
        if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**63):
            raise InvalidValue("a sync response's seq is a cursor (a non-negative integer)")
        more = obj.get("more", False)
        if not isinstance(more, bool):
            raise InvalidValue("a sync response's more is true or false")
        return SyncResponse(
            _ranges(obj.get("ranges")),
            _op_bytes(obj.get("ops", [])),
            _ids(obj.get("want", []), "want"),
            seq,
            _ids(obj.get("later", []), "later"),
            more,
        )


def answer(
    index: OpIndex,
    ops: Mapping[bytes, bytes],
    request: SyncRequest,
    leaf: int = LEAF,
    page_bytes: int = PAGE_BYTES,
) -> SyncResponse:
    """The answering side of one round: settle ``request``'s ranges against ``index``; send the ops
    the opener lacks (found now, or asked for in ``want``) from ``ops`` (id → canonical bytes), one
    page of at most ``page_bytes`` (at least one op), the ids of the rest in ``later``."""
    d = diff(index, request.ranges, leaf)
    send = sorted((d.offer | set(request.want)) & set(ops))
    page: list[bytes] = []
    later: list[bytes] = []
    used = 0
    for i in send:
        size = len(ops[i])
        if (page and used + size > page_bytes) or size > MAX_OP_BYTES:
            if size <= MAX_OP_BYTES:  # an op too large for any message is never offered
                later.append(i)
            continue
        page.append(ops[i])
        used += size
    more = len(later) > MAX_IDS
    return SyncResponse(d.reply, tuple(page), tuple(sorted(d.need)), later=tuple(later[:MAX_IDS]), more=more)


class SyncSession:
    """The opening side of an exchange, as a state machine: no I/O.

    >>> a, b = OpIndex([]), OpIndex([])
    >>> s = SyncSession("/" + "a" * 51 + "q/x/", a)
    >>> s.receive(answer(b, {}, s.start())) is None
    True
    """

    def __init__(
        self, pattern: str, index: OpIndex, ops: Mapping[bytes, bytes] | None = None, leaf: int = LEAF
    ):
        self.pattern = pattern
        self.index = index
        self.ops = ops or {}
        self.leaf = leaf
        self.received: list[bytes] = []
        """Canonical bytes of the ops the answering side sent (the caller verifies and applies them)."""
        self.pushed: set[bytes] = set()
        self.rounds = 0
        self.server_seq: int | None = None
        """The lowest cursor the answering side named: the opener holds everything stored there up to
        it. None if an answer named none, or could not list every op the opener lacked (``more``)."""
        self.partial = False
        """An answer had more ops for us than it could list: this exchange does not bring them all."""
        self.pages = 0
        """Rounds that only fetched the next page of ops (they do not count towards settling)."""
        self.bytes_sent = 0
        self.bytes_received = 0

    @property
    def settling_rounds(self) -> int:
        """Rounds spent comparing ranges (what a bound on rounds should count; pages are not)."""
        return self.rounds - self.pages

    def take(self) -> list[bytes]:
        """The ops received since the last ``take`` (an opener that applies each page as it comes)."""
        out, self.received = self.received, []
        return out

    def start(self) -> SyncRequest:
        req = SyncRequest(self.pattern, summarize(self.index, leaf=self.leaf))
        self.bytes_sent += len(req.encode())
        return req

    def receive(self, response: SyncResponse, response_bytes: int | None = None) -> SyncRequest | None:
        """Take the answer; return the next request, or None when the sets are settled."""
        self.rounds += 1
        self.bytes_received += len(response.encode()) if response_bytes is None else response_bytes
        if response.later and not response.ops:
            raise InvalidValue("a sync answer names ops for later but sends none (peer misbehaving?)")
        self.received.extend(response.ops)
        if response.more:
            self.partial = True
            self.server_seq = None
        if response.seq is not None and not self.partial:
            self.server_seq = response.seq if self.server_seq is None else min(self.server_seq, response.seq)
        d = diff(self.index, response.ranges, self.leaf)
        push = sorted((d.offer | set(response.want)) & set(self.ops) - self.pushed)
        self.pushed.update(push)
        want = sorted(d.need | set(response.later))
        if len(want) > MAX_IDS:  # asked for in a later exchange: this one claims no cursor
            self.partial, self.server_seq = True, None
        if not d.reply and not want and not push:
            return None
        if response.later and not d.reply and not d.need and not push:
            self.pages += 1
        req = SyncRequest(self.pattern, d.reply, tuple(want[:MAX_IDS]), tuple(self.ops[i] for i in push))
        self.bytes_sent += len(req.encode())
        return req
