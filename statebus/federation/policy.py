"""What peers may read, what this node follows and shares: the records the owner keeps in its store.

Owner-written records (plain JSON values in the node's own namespace, so the web page can edit them):

    /~/.follows/<id>   {"pattern": "/<their-pubkey>/chirp/", "added": <unix s>, "via": ["http://…"]}
    /~/.shares/<id>    {"pattern": "/<my-pubkey>/chirp/"}

:class:`PeerView` is the whole read policy for peer nodes (one place): public data and delegation
records, patterns the owner shared, what the node's ACL lets the peer read (own namespace), and what
this node follows (other namespaces: relaying).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Protocol

from statebus.bus import Bus
from statebus.errors import InvalidValue, StatebusError
from statebus.keys import is_subtree, namespace_of, parse_key, segments
from statebus.types import JSON, Key, PubKey

FOLLOWS = ".follows"
SHARES = ".shares"
PUBLIC = "public"
KEYS = ".keys"
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


def _records(bus: Bus, segment: str) -> dict[str, object]:
    prefix = f"/{bus.local}/{segment}/"
    out: dict[str, object] = {}
    for key in bus.walk(prefix, MAX_LISTED):
        rest = key[len(prefix) :]
        if "/" in rest:
            continue
        change = bus.fetch_or_none(key)
        if change is not None and change.exists:
            out[rest] = change.value
    return out


def follows(bus: Bus) -> dict[str, Follow]:
    """The valid follow records of this node (invalid ones are ignored)."""
    out: dict[str, Follow] = {}
    for fid, value in _records(bus, FOLLOWS).items():
        try:
            out[fid] = parse_follow(bus.local, fid, value)
        except StatebusError:
            continue
    return out


def shares(bus: Bus) -> list[Key]:
    """The patterns of this node's namespace the owner marked readable by peers."""
    out: list[Key] = []
    for value in _records(bus, SHARES).values():
        try:
            p = check_pattern(str(value.get("pattern", "")) if isinstance(value, dict) else "", bus.local)
        except StatebusError:
            continue
        if namespace_of(p) == bus.local:
            out.append(p)
    return out


class ReadCheck(Protocol):
    """The node's access rules (``statebus.access.control.AccessControl`` fits)."""

    def may_read(self, client: PubKey | None, key: Key) -> bool: ...

    def denied(self, client: PubKey | None) -> bool: ...


class PeerView:
    """What one peer node may read here, decided once per request (the records are read once).

    The rules (the one place they live):

    1. This node's namespace, when the node has access rules (``access``, the ACL): what they let
       that peer read (they know ``public/``, ``.keys/``, lists and the deny-list), plus a pattern
       the owner shared (``/~/.shares/…``) unless the peer is on the deny-list.
    2. ``/<ns>/public/…`` and ``/<ns>/.keys/…`` (signed delegation records) of other namespaces
       (and of this one without access rules): anyone.
    3. The peer's own namespace: the peer (it reads itself back from anyone holding it).
    4. Another namespace: a pattern this node follows (relaying: its owner made it readable by
       peers, so serving it on exposes nothing new; every op keeps the owner's signature).
    """

    def __init__(self, bus: Bus, peer: PubKey, access: ReadCheck | None = None) -> None:
        self.bus = bus
        self.peer = peer
        self.access = access
        self._shares = shares(bus)
        self._follows = [f.pattern for f in follows(bus).values()]

    def _by_records(self, key: Key) -> bool:
        parts = segments(key)
        ns = parts[0]
        if ns == self.bus.local and self.access is not None:
            # the ACL decides public/ and .keys/ here; a share widens it, never past the deny-list
            return any(key.startswith(p) for p in self._shares) and not self.access.denied(self.peer)
        if len(parts) >= 2 and parts[1] in (PUBLIC, KEYS):
            return True
        if ns == self.peer:
            return True
        allowed = self._shares if ns == self.bus.local else self._follows
        return any(key.startswith(p) for p in allowed)

    def pattern(self, pattern: Key) -> bool:
        """May the peer stream / sync the subtree ``pattern``?"""
        if not is_subtree(pattern):
            return False
        if self._by_records(pattern):
            return True
        return (
            self.access is not None
            and namespace_of(pattern) == self.bus.local
            and (self.access.may_read(self.peer, pattern))
        )

    def key(self, key: Key) -> bool:
        """May the peer receive the ops of ``key``? (Inside a pattern it may stream, this only
        narrows when the ACL decides key by key.)"""
        if self._by_records(key):
            return True
        return (
            self.access is not None
            and namespace_of(key) == self.bus.local
            and (self.access.may_read(self.peer, key))
        )

    @property
    def filters_keys(self) -> bool:
        """Whether :meth:`key` can refuse a key under an allowed pattern (only the ACL does)."""
        return self.access is not None


def peer_may_read(bus: Bus, peer: PubKey, pattern: Key, access: ReadCheck | None = None) -> bool:
    """May the node ``peer`` read the subtree ``pattern`` from ``bus``? (See :class:`PeerView`.)"""
    return PeerView(bus, peer, access).pattern(pattern)
