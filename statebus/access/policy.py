"""The live access policy of one namespace: its rules and delegations, kept current from the bus.

An :class:`AccessPolicy` observes ``/<owner>/.acl/`` and ``/<owner>/.keys/`` on the bus. The initial
snapshot loads every rule and delegation record; each later change updates them synchronously,
inside the write that made it, and then calls the listeners (the transports re-check their open
streams there), so a rule change takes effect before the next change is delivered to anyone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from statebus.access.acl import BUILTIN_PUBLIC, AclRules, acl_prefix
from statebus.bus import Change, KeyReader, Subscription
from statebus.errors import StatebusError
from statebus.identity.delegation import Keyring, keys_prefix
from statebus.keys import is_pubkey, is_subtree
from statebus.types import Key, PubKey

log = logging.getLogger("statebus.access")

Listener = Callable[["AccessPolicy"], None]


class AccessPolicy:
    """Who may read, write and list the keys of ``owner``'s namespace.

    Args:
        bus: the bus holding the namespace's ``.acl`` and ``.keys`` keys.
        owner: the namespace (its owner's public key).
        keyring: the delegation records to use (a fresh one by default); it is fed from
            ``/<owner>/.keys/``.
        clock: Unix time, for delegation validity windows.
        builtin_public: apply the built-in rule ``public`` → ``{"read": "public"}`` (a stored rule at
            ``/<owner>/.acl/public`` replaces it).

    Clients are public keys; ``None`` is an anonymous client.
    """

    def __init__(
        self,
        bus: KeyReader,
        owner: PubKey,
        keyring: Keyring | None = None,
        *,
        clock: Callable[[], float] = time.time,
        builtin_public: bool = True,
    ) -> None:
        self.owner = owner
        self.rules = AclRules(owner)
        if builtin_public:
            self.rules.builtin["public"] = BUILTIN_PUBLIC
        self.keyring = keyring if keyring is not None else Keyring()
        self.clock = clock
        self._listeners: list[Listener] = []
        self._subs: list[Subscription] = []
        self._subs.append(bus.observe(acl_prefix(owner), self._on_acl))
        self._subs.append(bus.observe(keys_prefix(owner), self._on_keys))

    def __repr__(self) -> str:
        return f"AccessPolicy({self.owner!r}, rules={len(self.rules.rules)}, delegations={len(self.keyring)})"

    # ------------------------------------------------------------------ keeping current

    def _on_acl(self, change: Change) -> None:
        if change.key == self.rules.prefix or change.kind == "derived":
            return
        self.rules.update(change.key, change.value if change.exists else None, change.exists)
        if change.kind == "op":
            self._changed()

    def _on_keys(self, change: Change) -> None:
        prefix = keys_prefix(self.owner)
        delegate = change.key[len(prefix) :]
        if change.key == prefix or not is_pubkey(delegate) or change.kind == "derived":
            return
        if change.exists:
            try:
                self.keyring.add_stored(change.key, change.value)
            except StatebusError as exc:
                log.warning("ignoring an invalid delegation record at %s: %s", change.key, exc.detail)
        else:
            self.keyring.forget(self.owner, delegate)
        if change.kind == "op":
            self._changed()

    def _changed(self) -> None:
        for listener in list(self._listeners):
            try:
                listener(self)
            except Exception:  # a broken listener must not break the write that changed a rule
                log.exception("an access-policy listener failed")

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(policy)`` after every change of a rule, list or delegation; returns the
        function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    def close(self) -> None:
        """Stop following the bus (the policy keeps its last state)."""
        for sub in self._subs:
            sub.close("access policy closed")
        self._listeners.clear()

    # ------------------------------------------------------------------ decisions

    def is_delegate(self, client: PubKey | None, key: Key) -> bool:
        """Whether ``client`` holds a live delegation from the owner covering ``key`` (for a subtree,
        covering everything below it)."""
        if client is None or client == self.owner:
            return False
        probe = key + "_" if is_subtree(key) else key
        return self.keyring.why_not(client, probe, self.clock()) is None

    def names(self, action: str, client: PubKey, key: Key) -> bool:
        """Whether the rule governing ``key`` names ``client`` for ``action`` (``AclRules.names``): a
        collaborator the owner chose, not anyone who signs."""
        return self.rules.names(action, client, key)

    def why_not(self, action: str, client: PubKey | None, key: Key) -> str | None:
        """None when ``client`` may ``action`` (``read``, ``write`` or ``list``) ``key``; else the reason."""
        reason = self.rules.decide(action, client, key, self.is_delegate(client, key))
        if reason is not None and client is not None and self.keyring.get(self.owner, client) is not None:
            probe = key + "_" if is_subtree(key) else key
            why = self.keyring.why_not(client, probe, self.clock())
            if why is not None:  # a delegation that does not apply: say why (revoked, expired, scope)
                reason = f"{reason}; {why}"
        return reason

    def may_read(self, client: PubKey | None, key: Key) -> bool:
        """Whether ``client`` may read the value of ``key`` (or stream it)."""
        return self.why_not("read", client, key) is None

    def may_write(self, client: PubKey | None, key: Key) -> bool:
        """Whether ops authored by ``client`` may be stored at ``key``."""
        return self.why_not("write", client, key) is None

    def may_list(self, client: PubKey | None, key: Key) -> bool:
        """Whether ``client`` may list the subtree ``key`` (or stream it; values are still filtered
        by :meth:`may_read`)."""
        return self.why_not("list", client, key) is None

    def may_read_rules(self, client: PubKey | None) -> bool:
        """Whether ``client`` may receive this namespace's rules (``/<owner>/.acl/…``) from a node
        holding them: the owner, a live delegate, or a key some stored rule lets read or list
        something (:meth:`AclRules.admits_somewhere`)."""
        if client is not None and client != self.owner:
            rec = self.keyring.get(self.owner, client)
            if rec is not None and not rec.revoked and rec.check_time(self.clock()) is None:
                return client not in self.rules.deny and not self.rules.deny_all
        return self.rules.admits_somewhere(client)

    def may_host(self, client: PubKey | None) -> bool:
        """Whether ``client`` may store its own namespace on this node (it is on ``.host``)."""
        return client is not None and client in self.rules.host and client not in self.rules.deny
