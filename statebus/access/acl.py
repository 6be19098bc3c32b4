"""Access-control rules: their key layout, their JSON format, and the decision they make. Pure.

Rules live in the store, in the owner's namespace, and are changed like any other key (only the
owner may write them)::

    /<owner>/.acl/<p1>/…/<pn>     a rule for the key /<owner>/<p1>/…/<pn> and everything below it
    /<owner>/.acl/.default        the rule for every key no more specific rule covers
    /<owner>/.acl/.lists/<name>   a named list of public keys, used in rules as "@<name>"
    /<owner>/.acl/.deny           keys refused everything (even public data); beats every rule
    /<owner>/.acl/.allow          when present, only these keys are recognised by rules: any other
                                  signed client is treated as anonymous
    /<owner>/.acl/.host           keys that may store their *own* namespace on this node (quota'd)

A rule is ``{"read": WHO, "write": WHO, "list": WHO}`` (each field optional; a missing ``read`` or
``write`` means ``"owner"``, a missing ``list`` means the same as ``read``), where WHO is
``"public"`` (anyone, even anonymous; for ``write`` anonymous clients cannot sign, so it means any
signing key), ``"signed"`` (any client that signs its requests), ``"owner"`` (nobody else), or a
list of public keys and ``"@list-name"`` references (``"public"`` / ``"signed"`` may appear in it).

Decisions (:meth:`AclRules.decide`), in order:

1. The namespace owner may do everything, ``.acl`` and ``.keys`` included.
2. ``/<owner>/.acl/…`` is read and written by the owner only; ``/<owner>/.keys/…`` (signed
   delegation records, needed to verify ops) is readable by anyone and written by the owner only.
3. A key on ``.deny`` gets nothing.
4. A delegate (a live delegation in the keyring) may read and write inside its scopes.
5. With ``.allow`` present, a client not on it is treated as anonymous.
6. The most specific rule (longest path prefix) decides; without any rule (``.default``
   included) only the owner has access: private by default. One rule is built in: ``public`` →
   ``{"read": "public"}`` (``/<owner>/public/…`` is readable by anyone); a stored rule at
   ``/<owner>/.acl/public`` replaces it.

A rule value that does not parse (stored by an old version, or replicated from elsewhere) is
treated as ``"owner"`` for everything: the rules fail closed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from statebus.errors import InvalidKey, InvalidValue
from statebus.keys import is_pubkey, namespace_of
from statebus.types import JSON, Key, PubKey

ACL_SEGMENT = ".acl"
KEYS_SEGMENT = ".keys"
DEFAULT = ".default"
DENY = ".deny"
ALLOW = ".allow"
HOST = ".host"
LISTS = ".lists"
PUBLIC = "public"
SIGNED = "signed"
OWNER = "owner"
ACTIONS = ("read", "write", "list")
MAX_ENTRIES = 10_000
"""Most entries in one grant or key list."""
MAX_LIST_NAME = 64


@dataclass(frozen=True, slots=True)
class Grant:
    """Who one field of a rule admits."""

    public: bool = False
    signed: bool = False
    keys: frozenset[PubKey] = frozenset()
    lists: tuple[str, ...] = ()

    def admits(self, client: PubKey | None, lists: Mapping[str, frozenset[PubKey]]) -> bool:
        """Whether ``client`` (None: anonymous) is admitted, resolving ``@list`` names in ``lists``."""
        if self.public:
            return True
        if client is None:
            return False
        if self.signed or client in self.keys:
            return True
        return any(client in lists.get(name, ()) for name in self.lists)

    def to_json(self) -> JSON:
        if self.public and not (self.keys or self.lists):
            return PUBLIC
        if self.signed and not (self.keys or self.lists):
            return SIGNED
        if not (self.public or self.signed or self.keys or self.lists):
            return OWNER
        items: list[JSON] = [PUBLIC] if self.public else []
        items += [SIGNED] if self.signed else []
        items += sorted(self.keys)
        items += [f"@{name}" for name in self.lists]
        return items


OWNER_ONLY = Grant()


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: a :class:`Grant` per action."""

    read: Grant = OWNER_ONLY
    write: Grant = OWNER_ONLY
    list: Grant = OWNER_ONLY

    def grant(self, action: str) -> Grant:
        if action == "read":
            return self.read
        if action == "write":
            return self.write
        return self.list

    def to_json(self) -> dict[str, JSON]:
        return {"read": self.read.to_json(), "write": self.write.to_json(), "list": self.list.to_json()}


CLOSED = Rule()
"""The rule of a namespace without rules, and of a rule that does not parse."""

BUILTIN_PUBLIC = Rule(read=Grant(public=True), list=Grant(public=True))
"""The built-in rule for ``/<owner>/public/``: anyone reads, the owner writes. A stored rule at
``/<owner>/.acl/public`` replaces it."""


def _check_list_name(name: str) -> str:
    if not 1 <= len(name) <= MAX_LIST_NAME or not all(c.isalnum() or c in "-_." for c in name):
        raise InvalidValue(f"a list name is 1-{MAX_LIST_NAME} letters, digits, '-', '_' or '.'")
    return name


def parse_grant(value: Any, field: str = "read") -> Grant:
    """Parse one field of a rule. Raises :class:`InvalidValue` naming the field."""
    if value == PUBLIC:
        return Grant(public=True)
    if value == SIGNED:
        return Grant(signed=True)
    if value == OWNER:
        return OWNER_ONLY
    if not isinstance(value, list):
        raise InvalidValue(f'acl {field!r} is "public", "signed", "owner" or a list of keys and @lists')
    if len(value) > MAX_ENTRIES:
        raise InvalidValue(f"acl {field!r} has more than {MAX_ENTRIES} entries")
    public = signed = False
    keys: set[PubKey] = set()
    lists: list[str] = []
    for item in value:
        if item == PUBLIC:
            public = True
        elif item == SIGNED:
            signed = True
        elif isinstance(item, str) and item.startswith("@"):
            name = _check_list_name(item[1:])
            if name not in lists:
                lists.append(name)
        elif isinstance(item, str) and is_pubkey(item):
            keys.add(item)
        else:
            raise InvalidValue(
                f"acl {field!r}: each entry is a public key (52 base32 chars), '@list', 'public' or 'signed'"
            )
    return Grant(public, signed, frozenset(keys), tuple(lists))


def parse_rule(value: Any) -> Rule:
    """Parse a rule value ``{"read": …, "write": …, "list": …}``. Raises :class:`InvalidValue`."""
    if not isinstance(value, dict):
        raise InvalidValue('an acl rule is an object such as {"read": "public", "write": "owner"}')
    unknown = set(value) - set(ACTIONS)
    if unknown:
        raise InvalidValue(f"an acl rule has only read, write and list; not {sorted(unknown)}")
    read = parse_grant(value.get("read", OWNER), "read")
    write = parse_grant(value.get("write", OWNER), "write")
    listing = parse_grant(value["list"], "list") if "list" in value else read
    return Rule(read, write, listing)


def parse_key_list(value: Any, what: str = "list") -> frozenset[PubKey]:
    """Parse a key list (``.deny``, ``.allow``, ``.host``, ``.lists/<name>``): ``["<pubkey>", …]``."""
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise InvalidValue(f"an acl {what} is a list of at most {MAX_ENTRIES} public keys")
    for item in value:
        if not isinstance(item, str) or not is_pubkey(item):
            raise InvalidValue(f"an acl {what} holds public keys (52 base32 characters) only")
    return frozenset(value)


def acl_prefix(owner: PubKey) -> Key:
    """``/<owner>/.acl/``: the subtree holding ``owner``'s rules and lists."""
    return f"/{owner}/{ACL_SEGMENT}/"


def rule_key(owner: PubKey, path: str) -> Key:
    """The key of the rule for ``/<owner>/<path>`` (``path`` without the namespace, no slashes around)."""
    return f"/{owner}/{ACL_SEGMENT}/{path.strip('/')}"


def check_acl_value(key: Key, value: Any) -> None:
    """Validate a value about to be stored at ``key`` (inside ``/<owner>/.acl/``).

    Raises:
        InvalidKey: ``key`` is not a rule, list or reserved name (e.g. ``/<o>/.acl/.other``).
        InvalidValue: the value is not a valid rule or key list.
    """
    rest = key[len(acl_prefix(namespace_of(key))) :]
    first, _, more = rest.partition("/")
    if first in (DENY, ALLOW, HOST) and not more:
        parse_key_list(value, first)
    elif first == LISTS and more and "/" not in more:
        _check_list_name(more)
        parse_key_list(value, f"list @{more}")
    elif first == DEFAULT and not more:
        parse_rule(value)
    elif first.startswith("."):
        raise InvalidKey(
            f"{key}: names under .acl starting with '.' are reserved "
            "(.default, .deny, .allow, .host, .lists/<name>)"
        )
    else:
        parse_rule(value)


def _path_of(owner: PubKey, key: Key) -> list[str]:
    """The segments of ``key`` after ``/<owner>/`` (a subtree's trailing slash dropped)."""
    return [s for s in key[len(owner) + 2 :].split("/") if s]


class AclRules:
    """The rules of one namespace, held in memory and updated key by key. Pure: no bus, no I/O."""

    def __init__(self, owner: PubKey) -> None:
        if not is_pubkey(owner):
            raise InvalidKey("an acl belongs to a namespace: a 52-character public key")
        self.owner = owner
        self.prefix = acl_prefix(owner)
        self.rules: dict[str, Rule] = {}
        self.builtin: dict[str, Rule] = {}
        """Rules that apply where no stored rule of the same path exists (e.g. ``public``)."""
        self.lists: dict[str, frozenset[PubKey]] = {}
        self.deny: frozenset[PubKey] = frozenset()
        self.deny_all = False
        """True while ``.deny`` holds a value that does not parse: every non-owner is refused."""
        self.allow: frozenset[PubKey] | None = None
        self.host: frozenset[PubKey] = frozenset()
        self.broken: set[Key] = set()
        """Stored keys whose value did not parse (each treated as closed)."""

    def update(self, key: Key, value: Any, exists: bool = True) -> None:
        """Take the current value of ``key`` (under :attr:`prefix`); ``exists=False`` removes it."""
        if not key.startswith(self.prefix) or key == self.prefix:
            return
        rest = key[len(self.prefix) :]
        first, _, more = rest.partition("/")
        self.broken.discard(key)
        try:
            if exists:
                check_acl_value(key, value)
        except (InvalidValue, InvalidKey):
            self.broken.add(key)
            exists, value = True, None
        if first in (DENY, ALLOW, HOST) and not more:
            keys = parse_key_list(value) if exists and value is not None else frozenset()
            if first == DENY:
                self.deny = keys
                self.deny_all = key in self.broken
            elif first == HOST:
                self.host = keys
            else:  # a broken allow-list admits nobody; a deleted one admits everyone
                self.allow = keys if exists else None
        elif first == LISTS:
            if exists and value is not None:
                self.lists[more] = parse_key_list(value)
            else:
                self.lists.pop(more, None)
        elif first.startswith(".") and first != DEFAULT:
            return
        elif exists:
            self.rules[rest] = parse_rule(value) if value is not None else CLOSED
        else:
            self.rules.pop(rest, None)

    def load(self, items: Iterable[tuple[Key, Any]]) -> None:
        for key, value in items:
            self.update(key, value)

    def rule_for(self, key: Key) -> tuple[str | None, Rule]:
        """The most specific rule covering ``key`` and the path it is stored under (None: no rule)."""
        parts = _path_of(self.owner, key)
        for n in range(len(parts), 0, -1):
            path = "/".join(parts[:n])
            rule = self.rules.get(path) or self.builtin.get(path)
            if rule is not None:
                return path, rule
        rule = self.rules.get(DEFAULT)
        return (DEFAULT, rule) if rule is not None else (None, CLOSED)

    def admits_somewhere(self, client: PubKey | None) -> bool:
        """Whether a stored rule lets ``client`` read or list anything (the owner: always).

        This is who may receive the rules themselves from a node that holds them (a relay needs
        them to serve the namespace as its owner would; see docs/federation.md). The built-in
        ``public`` rule does not count: it needs no stored rule to be applied.
        """
        if client == self.owner:
            return True
        if self.deny_all or (client is not None and client in self.deny):
            return False
        who = client if client is None or self.allow is None or client in self.allow else None
        return any(
            r.read.admits(who, self.lists) or r.list.admits(who, self.lists) for r in self.rules.values()
        )

    def names(self, action: str, client: PubKey, key: Key) -> bool:
        """Whether the rule governing ``key`` names ``client`` for ``action`` itself (its key, or an
        ``@list`` holding it), rather than admitting it as one of ``"signed"`` or ``"public"``."""
        _path, rule = self.rule_for(key)
        grant = rule.grant(action)
        return client in grant.keys or any(client in self.lists.get(n, ()) for n in grant.lists)

    def decide(self, action: str, client: PubKey | None, key: Key, delegate_ok: bool = False) -> str | None:
        """None when ``client`` (None: anonymous) may ``action`` (read, write, list) ``key``; else why not.

        ``delegate_ok`` says whether the keyring holds a live delegation of ``client`` covering ``key``.
        """
        if action not in ACTIONS:
            raise InvalidValue(f"an acl action is one of {', '.join(ACTIONS)}")
        if namespace_of(key) != self.owner:
            return f"{key} is not in the namespace {self.owner}"
        if client == self.owner:
            return None
        parts = _path_of(self.owner, key)
        top = parts[0] if parts else ""
        if top == ACL_SEGMENT:
            return "only the owner reads and writes the access rules (.acl)"
        if top == KEYS_SEGMENT:
            return None if action != "write" else "only the owner writes delegation records (.keys)"
        if self.deny_all:
            return f"the deny-list of {self.owner} is unreadable: only the owner has access"
        if client is not None and client in self.deny:
            return f"{client} is on the deny-list of {self.owner}"
        if delegate_ok:
            return None
        who = client
        if who is not None and self.allow is not None and who not in self.allow:
            who = None
        path, rule = self.rule_for(key)
        grant = rule.grant(action)
        if action == "write" and who is None and grant.public:
            return "anonymous clients cannot write: sign the request (and the op) with your key"
        if grant.admits(who, self.lists):
            return None
        where = f"the rule at {self.prefix}{path}" if path is not None else "no rule (private by default)"
        if client is None:
            return f"sign in or sign the request to {action} {key}: {where} does not admit anonymous clients"
        return f"{client} may not {action} {key}: {where} does not admit it"
