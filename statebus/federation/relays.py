"""Shedding followers to relays: the signed relay list, the book of relaying followers, the choice.

When a node's peer stream slots are full (setting ``max_peer_streams``), a new follower gets 503
``shed`` with ``Retry-After`` and this node's **relay list**: followers of it that hold the subtree
and offered to relay (setting ``relay``: their follow streams name their address). The follower
streams from one of them and verifies the owner's signatures on every op as it always does, so the
live tail fans out as a tree, not a star.

    {"v": 1, "node": <signer>, "namespace": <ns>, "depth": 0, "issued": t, "expires": t + 60,
     "head": {"key": K, "version": V} | null,
     "relays": [{"node": <pubkey>, "url": "http://…", "patterns": ["/<ns>/chirp/"], "lag": 0}, …],
     "sig": <base64url Ed25519 over DOMAIN + the canonical JSON of the rest>}

Rules:
    1. A list is signed by the node that sheds. A follower acts on it only when the signature is by
       the node it asked: the owner itself when it asked the owner (the key it follows, not a hint
       from the server), the relay when it asked a relay (:func:`verify`). A forged or altered list,
       an expired one, or one for another namespace is refused and nothing in it is contacted.
    2. A list names only followers whose ops stream is open here now, that offered to relay from
       the address they connect from, and that caught up once (their stream said ``live``); each
       with its ``lag``, the ops this node had written past the stream's cursor when it listed them
       (:class:`RelayBook`). A relay that disconnects is no longer listed.
    3. ``depth`` is the signer's distance from the owner (0: the owner). A follower refuses a list
       of depth :data:`MAX_DEPTH` or more, so shedding ends within a few hops.
    4. ``head`` is the newest op of the namespace this node held, among the last
       :data:`HEAD_WINDOW` ops it wrote, that the asking peer may read. A relay whose anti-entropy
       leaves the follower without it is stale (it lacks what its origin already had): dropped.
    5. The follower picks at random among the least lagging relays that cover its pattern and that
       it has not dropped (:func:`choose`): load spreads without any coordination.

Pure but for the clock: no I/O.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from statebus.errors import BadSignature, InvalidValue
from statebus.identity import Identity, verify_signature
from statebus.keys import is_pubkey, namespace_of, segments
from statebus.types import JSON, Key, PubKey, Seq, Version

DOMAIN = b"statebus-relays-v1\n"
"""Signed before the list's bytes, so no other signed statebus message can pass as a relay list."""
LIST_TTL = 60.0
"""How long a relay list is good for (it is acted on at once)."""
MAX_DEPTH = 3
"""Lists of this depth or more are refused: a follower sits at most this many hops below the owner."""
MAX_RELAYS = 16
"""Relays one list names at most."""
MAX_PATTERNS = 4
HEAD_WINDOW = 1000
"""Recent ops of this node searched for the newest one under the namespace (rule 4)."""
META = frozenset({".keys", ".acl", ".shares"})
"""Subtrees every follower streams besides its pattern: not what a relay is listed for."""


class StreamState(Protocol):
    """An open ops stream as the book sees it (``statebus.http.peers.StreamSlot``)."""

    @property
    def closed(self) -> bool: ...

    @property
    def live(self) -> bool: ...

    @property
    def seq(self) -> Seq: ...


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise InvalidValue("a relay list's signature is not base64url") from None


def _canonical(obj: dict[str, Any]) -> bytes:
    return DOMAIN + json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def data_patterns(patterns: Iterable[Key]) -> tuple[Key, ...]:
    """The patterns of a follow stream that are data (not ``.keys/``, ``.acl/``, ``.shares/``)."""
    out = []
    for p in patterns:
        parts = segments(p)
        if len(parts) >= 2 and parts[1] in META:
            continue
        out.append(p)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Relay:
    """One relay a list names."""

    node: PubKey
    url: str
    patterns: tuple[Key, ...]
    lag: int

    def covers(self, pattern: Key) -> bool:
        return any(pattern.startswith(p) for p in self.patterns)

    def to_json(self) -> dict[str, JSON]:
        return {"node": self.node, "url": self.url, "patterns": list(self.patterns), "lag": self.lag}


@dataclass(frozen=True, slots=True)
class RelayList:
    """A node's signed list of the relays that follow it (see the module rules)."""

    node: PubKey
    namespace: PubKey
    depth: int
    issued: float
    expires: float
    relays: tuple[Relay, ...]
    head: tuple[Key, Version] | None = None
    sig: bytes = b""

    def body(self) -> dict[str, Any]:
        head: JSON = {"key": self.head[0], "version": self.head[1]} if self.head is not None else None
        return {
            "v": 1,
            "node": self.node,
            "namespace": self.namespace,
            "depth": self.depth,
            "issued": self.issued,
            "expires": self.expires,
            "head": head,
            "relays": [r.to_json() for r in self.relays],
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "sig": _b64e(self.sig)}

    def signed(self, identity: Identity) -> RelayList:
        if identity.pubkey != self.node:
            raise InvalidValue("a relay list is signed by the node it names")
        return RelayList(
            self.node,
            self.namespace,
            self.depth,
            self.issued,
            self.expires,
            self.relays,
            self.head,
            identity.sign(_canonical(self.body())),
        )


def make_list(
    identity: Identity,
    namespace: PubKey,
    depth: int,
    relays: Iterable[Relay],
    head: tuple[Key, Version] | None = None,
    now: float | None = None,
) -> RelayList:
    """This node's signed relay list for ``namespace``."""
    t = round(time.time() if now is None else now, 3)
    listed = tuple(relays)[:MAX_RELAYS]
    return RelayList(identity.pubkey, namespace, depth, t, t + LIST_TTL, listed, head).signed(identity)


def _str(obj: dict[str, Any], name: str, limit: int = 1024) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidValue(f"a relay list's '{name}' is a string")
    return value


def _num(obj: dict[str, Any], name: str) -> float:
    value = obj.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidValue(f"a relay list's '{name}' is a number")
    return float(value)


def _relay(obj: Any, namespace: PubKey) -> Relay:
    if not isinstance(obj, dict):
        raise InvalidValue("a relay is an object")
    node, url = _str(obj, "node"), _str(obj, "url", 200)
    if not is_pubkey(node) or not url.startswith(("http://", "https://")):
        raise InvalidValue("a relay has a public key and an http(s) URL")
    patterns = obj.get("patterns")
    if not isinstance(patterns, list) or not 1 <= len(patterns) <= MAX_PATTERNS:
        raise InvalidValue(f"a relay names 1 to {MAX_PATTERNS} patterns")
    for p in patterns:
        if (
            not isinstance(p, str)
            or not p.endswith("/")
            or len(p) > 1024
            or not p.startswith(f"/{namespace}/")
        ):
            raise InvalidValue("a relay's patterns are subtrees of the list's namespace")
    lag = obj.get("lag")
    if not isinstance(lag, int) or isinstance(lag, bool) or lag < 0:
        raise InvalidValue("a relay's lag is a count of ops")
    return Relay(node, url, tuple(patterns), lag)


def verify(obj: object, signer: PubKey, namespace: PubKey, now: float | None = None) -> RelayList:
    """The relay list ``obj`` (as the 503 body carried it), checked (rule 1). Raises BadSignature
    (signed by another key than ``signer``, or altered) or InvalidValue (malformed, expired, for
    another namespace, too deep)."""
    if not isinstance(obj, dict):
        raise InvalidValue("a relay list is a JSON object")
    if obj.get("v") != 1:
        raise InvalidValue("a relay list of an unknown version")
    node, ns = _str(obj, "node"), _str(obj, "namespace")
    if node != signer:
        raise BadSignature(
            f"the relay list is signed for {node[:12]}…, not by the node asked ({signer[:12]}…)"
        )
    body = {k: v for k, v in obj.items() if k != "sig"}
    if not verify_signature(signer, _canonical(body), _b64d(_str(obj, "sig"))):
        raise BadSignature("the relay list's signature does not verify (forged or altered)")
    if ns != namespace:
        raise InvalidValue("the relay list is for another namespace")
    depth = obj.get("depth")
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        raise InvalidValue("a relay list's depth is a count of hops")
    if depth >= MAX_DEPTH:
        raise InvalidValue(f"the relay list is {depth} hops below the owner (at most {MAX_DEPTH - 1})")
    issued, expires = _num(obj, "issued"), _num(obj, "expires")
    t = time.time() if now is None else now
    if expires < t or expires - issued > 10 * LIST_TTL:
        raise InvalidValue("the relay list has expired")
    relays = obj.get("relays")
    if not isinstance(relays, list) or len(relays) > MAX_RELAYS:
        raise InvalidValue(f"a relay list names at most {MAX_RELAYS} relays")
    head_obj = obj.get("head")
    head: tuple[Key, Version] | None = None
    if head_obj is not None:
        if not isinstance(head_obj, dict):
            raise InvalidValue("a relay list's head is {key, version}")
        key, version = _str(head_obj, "key"), _str(head_obj, "version", 200)
        if not key.startswith(f"/{namespace}/"):
            raise InvalidValue("a relay list's head is a key of its namespace")
        head = (key, version)
    listed = tuple(_relay(r, namespace) for r in relays)
    return RelayList(node, ns, depth, issued, expires, listed, head, _b64d(obj["sig"]))


def choose(
    listed: RelayList,
    pattern: Key,
    *,
    skip: Iterable[str] = (),
    rnd: Callable[[], float] = random.random,
) -> list[Relay]:
    """The relays of ``listed`` to try for ``pattern``, best first (rule 5): those that cover it and
    are not in ``skip`` (dropped, our own addresses), least lagging first, at random among equals."""
    avoid = set(skip)
    usable = [r for r in listed.relays if r.covers(pattern) and r.url not in avoid]
    return sorted(usable, key=lambda r: (r.lag, rnd()))


@dataclass(eq=False, slots=True)
class _Entry:
    node: PubKey
    url: str
    patterns: tuple[Key, ...]
    stream: StreamState


@dataclass(eq=False)
class RelayBook:
    """The followers of this node that offered to relay, while their ops stream is open (rule 2)."""

    _entries: dict[int, _Entry] = field(default_factory=dict)
    rnd: Callable[[], float] = random.random

    def opened(self, node: PubKey, url: str, patterns: Iterable[Key], stream: StreamState) -> None:
        """A follower ``node`` opened an ops stream of ``patterns`` and offered to relay at ``url``."""
        data = data_patterns(patterns)
        if data:
            self._entries[id(stream)] = _Entry(node, url, data, stream)

    def relays(self, namespace: PubKey, head_seq: Seq, exclude: Iterable[PubKey] = ()) -> list[Relay]:
        """The current relays of ``namespace`` (open streams that caught up once), at random, one
        per node, at most :data:`MAX_RELAYS`."""
        for k in [k for k, e in self._entries.items() if e.stream.closed]:
            del self._entries[k]
        skip = set(exclude)
        seen: dict[PubKey, Relay] = {}
        for e in self._entries.values():
            if e.node in skip or not e.stream.live or namespace_of(e.patterns[0]) != namespace:
                continue
            lag = max(0, head_seq - e.stream.seq)
            known = seen.get(e.node)
            if known is None or lag < known.lag:
                seen[e.node] = Relay(e.node, e.url, e.patterns, lag)
        out = sorted(seen.values(), key=lambda r: self.rnd())
        return out[:MAX_RELAYS]

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if not e.stream.closed)
