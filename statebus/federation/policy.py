"""What peers may read, what this node follows and shares: the records the owner keeps in its store.

Owner-written records (plain JSON values in the node's own namespace, so the web page can edit them):

    /~/.follows/<id>   {"pattern": "/<their-pubkey>/chirp/", "added": <unix s>, "via": ["http://…"]}
    /~/.shares/<id>    {"pattern": "/<my-pubkey>/chirp/"}

:class:`PeerView` is the whole read policy for peer nodes (one place): delegation records, patterns
the owner shared, what the node's ACL lets the peer read (own namespace), and what the *owner's*
rules, replicated with its data, let the peer read (other namespaces: relaying).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Protocol

from statebus.bus import KeyReader
from statebus.errors import InvalidValue, StatebusError
from statebus.keys import is_subtree, namespace_of, parse_key, segments
from statebus.types import JSON, Key, PubKey

FOLLOWS = ".follows"
SHARES = ".shares"
PUBLIC = "public"
KEYS = ".keys"
ACL = ".acl"
MAX_VIA = 8
MAX_LISTED = 10_000


def follow_id(pattern: Key) -> str:
    """The record id of a follow: stable per pattern, so following twice is one record."""
    return hashlib.sha256(pattern.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Follow:
    """One thing this node follows."""

    id: str
    pattern: Key
    added: float = 0.0
    via: tuple[str, ...] = ()
    """Addresses to try besides the DHT (an invite, a relay)."""

    @property
    def owner(self) -> PubKey:
        return namespace_of(self.pattern)

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"pattern": self.pattern, "added": self.added}
        if self.via:
            out["via"] = list(self.via)
        return out


def check_pattern(pattern: str, local: PubKey | None = None) -> Key:
    """A normalised subtree pattern ``/<pubkey>/…/``. Raises InvalidKey / InvalidValue."""
    p = parse_key(pattern, local)
    if not is_subtree(p):
        raise InvalidValue("a pattern is a subtree: it ends in '/'")
    return p


def parse_follow(local: PubKey, fid: str, value: object) -> Follow:
    """Validate a ``/~/.follows/<id>`` value. Raises InvalidValue / InvalidKey."""
    if not isinstance(value, dict):
        raise InvalidValue('a follow is {"pattern": "/<pubkey>/…/", "added": <unix s>}')
    p = check_pattern(str(value.get("pattern", "")), local)
    if namespace_of(p) == local:
        raise InvalidValue("a node does not follow its own namespace")
    added = value.get("added", 0)
    if not isinstance(added, int | float) or isinstance(added, bool):
        raise InvalidValue("a follow's 'added' is a Unix time")
    via = value.get("via", [])
    if not isinstance(via, list) or len(via) > MAX_VIA or not all(isinstance(v, str) for v in via):
        raise InvalidValue(f"a follow's 'via' is a list of at most {MAX_VIA} URLs")
    if any(not v.startswith(("http://", "https://")) or len(v) > 200 for v in via):
        raise InvalidValue("a 'via' address is an http(s) URL")
    return Follow(fid, p, float(added), tuple(via))


def new_follow(local: PubKey, pattern: str, via: tuple[str, ...] = ()) -> Follow:
    p = check_pattern(pattern, local)
    return parse_follow(local, follow_id(p), {"pattern": p, "added": time.time(), "via": list(via)})


def _records(bus: KeyReader, segment: str, namespace: PubKey | None = None) -> dict[str, object]:
    prefix = f"/{namespace or bus.local}/{segment}/"
    out: dict[str, object] = {}
    for key in bus.walk(prefix, MAX_LISTED):
        rest = key[len(prefix) :]
        if "/" in rest:
            continue
        change = bus.fetch_or_none(key)
        if change is not None and change.exists:
            out[rest] = change.value
    return out


def follows(bus: KeyReader) -> dict[str, Follow]:
    """The valid follow records of this node (invalid ones are ignored)."""
    out: dict[str, Follow] = {}
    for fid, value in _records(bus, FOLLOWS).items():
        try:
            out[fid] = parse_follow(bus.local, fid, value)
        except StatebusError:
            continue
    return out


def shares(bus: KeyReader, namespace: PubKey | None = None) -> list[Key]:
    """The patterns of ``namespace`` (default: this node's) its owner marked readable by peers
    (``/<namespace>/.shares/…``: this node's own records, or the owner's, replicated with its data)."""
    ns = bus.local if namespace is None else namespace
    out: list[Key] = []
    for value in _records(bus, SHARES, ns).values():
        try:
            p = check_pattern(str(value.get("pattern", "")) if isinstance(value, dict) else "", ns)
        except StatebusError:
            continue
        if namespace_of(p) == ns:
            out.append(p)
    return out


class ReadCheck(Protocol):
    """The node's access rules (``statebus.access.control.AccessControl`` fits): this node's own
    rules for its namespace, and the rules replicated from each other namespace's owner."""

    def may_read(self, client: PubKey | None, key: Key) -> bool: ...

    def may_read_rules(self, client: PubKey | None, namespace: PubKey) -> bool: ...

    def denied(self, client: PubKey | None, namespace: PubKey | None = None) -> bool: ...


class PeerView:
    """What one peer node may read here, decided once per request (the records are read once).

    The rules (the one place they live):

    1. ``/<ns>/.keys/…`` (signed delegation records, needed to verify anything) and
       ``/<ns>/.shares/…`` (the patterns the owner lets every peer read): anyone.
    2. ``/<ns>/.acl/…`` (the owner's read rules, signed ops like any other): a peer may open a
       pattern there, and receives each rule only if the rules held here admit it somewhere
       (``ReadCheck.may_read_rules``): a relay needs them to serve the namespace as its owner would.
    3. The peer's own namespace: the peer (it reads itself back from anyone holding it).
    4. This node's namespace: what its ACL lets that peer read, plus a pattern the owner shared
       (``/~/.shares/…``) unless the peer is on the deny-list.
    5. Another namespace (relaying): **the owner's rules** (its ``.acl`` and ``.shares`` records),
       replicated here with the data and evaluated as on the owner's node; while this node holds
       no rules for it, only ``public/`` (the built-in rule): missing rules never mean public.
       Following a namespace gives this node no right to re-serve it.

    Without access rules (``access=None``, unit tests) rule 4 is the shares and ``public/``, and
    rule 5 is ``public/`` only.
    """

    def __init__(self, bus: KeyReader, peer: PubKey, access: ReadCheck | None = None) -> None:
        self.bus = bus
        self.peer = peer
        self.access = access
        self._shares: dict[PubKey, list[Key]] = {}

    def shared(self, key: Key) -> bool:
        """Whether the owner of ``key``'s namespace shared a pattern holding it with every peer."""
        ns = namespace_of(key)
        if ns not in self._shares:
            self._shares[ns] = shares(self.bus, ns)
        return any(key.startswith(p) for p in self._shares[ns])

    def _decide(self, key: Key, pattern: bool) -> bool:
        parts = segments(key)
        ns = parts[0]
        top = parts[1] if len(parts) >= 2 else ""
        if top in (KEYS, SHARES):
            return True
        if top == ACL:
            if pattern or ns == self.peer:
                return True  # each rule is still checked key by key
            return self.access is not None and self.access.may_read_rules(self.peer, ns)
        if ns == self.peer:
            return True
        if self.access is None:
            return top == PUBLIC or (ns == self.bus.local and self.shared(key))
        if self.shared(key) and not self.access.denied(self.peer, ns):
            return True
        return self.access.may_read(self.peer, key)

    def pattern(self, pattern: Key) -> bool:
        """May the peer stream / sync the subtree ``pattern``? (Each key is then checked again.)"""
        return is_subtree(pattern) and self._decide(pattern, True)

    def key(self, key: Key) -> bool:
        """May the peer receive the ops of ``key``, as of now?"""
        return self._decide(key, False)

    @property
    def filters_keys(self) -> bool:
        """Whether :meth:`key` can refuse a key under an allowed pattern: always (rules are per key)."""
        return True


def peer_may_read(bus: KeyReader, peer: PubKey, pattern: Key, access: ReadCheck | None = None) -> bool:
    """May the node ``peer`` read the subtree ``pattern`` from ``bus``? (See :class:`PeerView`.)"""
    return PeerView(bus, peer, access).pattern(pattern)
