"""Scoped app capabilities: what an installed app's page holds in place of the owner token.

An installed app's web page runs on its own origin (``http://<name>.localhost:<port>/``, see
:mod:`statebus.http.app_origin`). It never sees the owner token or the login cookie. It acts with a
**capability**: a random bearer secret that the node mints for one app and one install (its bundle
hash), limited to the app's granted key patterns (:class:`GrantSet`, the apps package's ``Grants``),
and revocable. Writes made with it are the owner's writes (the node signs them), as a cookie write is.

How a capability reaches the page (docs/apps.md, "Origins and capabilities"): the owner, logged in on
the node's page, follows the app's launch link; the node mints a one-time **launch code** (single use,
:data:`LAUNCH_TTL` seconds) and redirects to the app's origin, which redeems it for a fresh capability
set as an HttpOnly, SameSite=Strict, host-only cookie of the app's origin. The page's script never
reads the secret; another origin never receives it.

Rules:
    1. A secret is 256 random bits. The node keeps its SHA-256 only; the secret itself is handed out
       once, in the Set-Cookie of the app's origin, and is never logged.
    2. A capability allows reads and listings inside its app's read grants (its own namespace, plus
       ``read_others`` in other namespaces) and writes inside its write grants in the owner's namespace
       only. A subtree (a listing, a stream) must be granted whole (a subtree pattern such as
       ``guestbook/``), since what it delivers is every key below it. Nothing else: a key outside the
       grants is refused with 403 ``outside_grant``, and so is every reserved name (a segment starting
       with ``.``: ``.acl``, ``.keys``, ``.apps``…) and a whole namespace, whatever the grants say.
    3. Revocation is immediate: :meth:`CapabilityStore.revoke` (and every change of the app's install
       record ``/<local>/.apps/<name>``: remove, upgrade, new grants) forgets the app's capabilities
       and launch codes, and cuts every stream opened with them, inside the call.
    4. Memory is bounded: at most :data:`MAX_PER_APP` live capabilities per app (a new launch retires
       the oldest) and :data:`MAX_LAUNCH_CODES` pending launch codes in all.
    5. With :meth:`CapabilityStore.persist` (a node with a data folder), the live capabilities survive a
       restart: ``<data>/app_capabilities.json`` holds each one's app, install (bundle hash) and the
       secret's SHA-256, never the secret, rewritten (atomically, fsynced, mode 0600) at every mint
       and revocation, before the call returns. At start a capability comes back only if its app is
       still installed from the same bundle with the same grants (an install record changed while
       the node was stopped revokes, as rule 3 does while it runs). Launch codes and counters are not
       kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from statebus.bus import Change
from statebus.errors import Forbidden, OutsideGrant
from statebus.keys import namespace_of
from statebus.runtime import Node
from statebus.runtime.streams import EventStream, OpenEvents
from statebus.types import Key, PubKey

log = logging.getLogger("statebus.access")

SECRET_BYTES: Final = 32
LAUNCH_TTL: Final = 60.0
"""Seconds a launch code stays redeemable."""
MAX_PER_APP: Final = 64
MAX_LAUNCH_CODES: Final = 256
MAX_SECRET_CHARS: Final = 128
APPS_SEGMENT: Final = ".apps"
SUBTREE_PROBE: Final = "/\x00" * 129
"""A subtree is granted when a key this deep below it is: no pattern has a literal ``\x00`` segment
(control characters are refused) nor 129 segments (at most 256 characters), so only a subtree pattern
(``guestbook/``, ``*/entries/``) covering the whole subtree matches it."""


class GrantSet(Protocol):
    """What a capability needs of an app's granted permissions (``statebus.apps.patterns.Grants``)."""

    def can_read(self, namespace_is_own: bool, rel_path: str) -> bool: ...

    def can_write(self, rel_path: str) -> bool: ...

    def to_json(self) -> Any: ...


@dataclass(eq=False)
class Capability:
    """One live capability: its app, the install it was minted for, and its grants."""

    app: str
    install: str
    """The bundle hash of the install the capability was minted for."""
    grants: GrantSet = field(repr=False)
    digest: bytes = field(default=b"", repr=False)
    """The SHA-256 of the secret (the node never keeps the secret itself)."""
    streams: list[EventStream] = field(default_factory=list, repr=False)
    revoked: bool = False

    @property
    def tag(self) -> str:
        """The first 8 hex digits of the secret's hash: names the capability in logs, reveals nothing."""
        return self.digest.hex()[:8]


@dataclass(slots=True)
class AppUse:
    """What an app's page did with its capabilities (for /metrics: its writes are the owner's ops,
    so these counters are where they show as the app's)."""

    reads: int = 0
    """Reads, listings and streams allowed."""
    writes: int = 0
    """Writes allowed (each is signed by the node as the owner)."""
    refused: int = 0
    """Requests refused with ``outside_grant``."""
    launches: int = 0
    """Capabilities minted."""


@dataclass(frozen=True, slots=True)
class _Launch:
    app: str
    install: str
    grants: GrantSet
    expires: float


CAPABILITIES_FILE: Final = "app_capabilities.json"
"""The file in the data folder that keeps the live capabilities' hashes (rule 5)."""

Resolve = Callable[[str, str], "GrantSet | None"]
"""``resolve(app, install)``: the grants of ``app`` if it is installed from bundle ``install``, else None."""


def _digest(secret: str) -> bytes:
    return hashlib.sha256(b"statebus app capability\x00" + secret.encode("utf-8", "replace")).digest()


def relative_path(local: PubKey, key: Key) -> tuple[bool, str]:
    """``(namespace_is_own, path inside the namespace)`` of a normalised key."""
    namespace = namespace_of(key)
    return namespace == local, key[len(namespace) + 2 :]


class CapabilityStore:
    """The live capabilities and launch codes of one node (in memory; kept across restarts once
    :meth:`persist` names the data folder, rule 5).

    Args:
        local: the node owner's namespace.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, local: PubKey, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.local = local
        self._clock = clock
        self._by_digest: dict[bytes, Capability] = {}
        self._by_app: dict[str, OrderedDict[bytes, Capability]] = {}
        self._launches: OrderedDict[bytes, _Launch] = OrderedDict()
        self.use: dict[str, AppUse] = {}
        """Per app, what its pages did (kept across revocations; one entry per app ever launched)."""
        self._file: Path | None = None

    # ------------------------------------------------------------------ persistence (rule 5)

    def persist(self, folder: Path, resolve: Resolve) -> int:
        """Keep the live capabilities in ``folder``/:data:`CAPABILITIES_FILE` from now on, and bring
        back those stored there whose app ``resolve`` still finds at the same install; how many."""
        self._file = Path(folder) / CAPABILITIES_FILE
        try:
            stored = json.loads(self._file.read_text(encoding="utf-8"))
            entries = stored if isinstance(stored, list) else []
        except FileNotFoundError:
            entries = []
        except (OSError, ValueError) as exc:
            log.warning("app capabilities not restored from %s: %s", self._file, type(exc).__name__)
            entries = []
        restored = 0
        for entry in entries:
            try:
                app, install, digest = (
                    str(entry["app"]),
                    str(entry["install"]),
                    bytes.fromhex(entry["digest"]),
                )
            except (KeyError, TypeError, ValueError):
                continue
            grants = resolve(app, install)
            held = self._by_app.setdefault(app, OrderedDict())
            if (
                grants is None
                or grants.to_json() != entry.get("granted")
                or len(digest) != 32
                or digest in self._by_digest
                or len(held) >= MAX_PER_APP
            ):
                continue
            cap = Capability(app, install, grants, digest)
            held[digest] = cap
            self._by_digest[digest] = cap
            restored += 1
        self._by_app = {app: held for app, held in self._by_app.items() if held}
        self._save()
        return restored

    def _save(self) -> None:
        if self._file is None:
            return
        entries = [
            {
                "app": cap.app,
                "install": cap.install,
                "granted": cap.grants.to_json(),
                "digest": cap.digest.hex(),
            }
            for held in self._by_app.values()
            for cap in held.values()
        ]
        if not entries:
            self._file.unlink(missing_ok=True)
            return
        tmp = self._file.with_name(self._file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(entries, separators=(",", ":")).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._file)

    def __repr__(self) -> str:
        return f"CapabilityStore(apps={len(self._by_app)}, live={len(self._by_digest)})"

    # ------------------------------------------------------------------ minting

    def mint(self, app: str, install: str, grants: GrantSet) -> str:
        """A new capability for ``app`` (its install ``install``); returns the secret (rule 1)."""
        secret = secrets.token_urlsafe(SECRET_BYTES)
        digest = _digest(secret)
        cap = Capability(app, install, grants, digest)
        held = self._by_app.setdefault(app, OrderedDict())
        while len(held) >= MAX_PER_APP:
            _, old = held.popitem(last=False)
            self._drop(old, "a newer launch of the app replaced it")
        held[digest] = cap
        self._by_digest[digest] = cap
        self.use.setdefault(app, AppUse()).launches += 1
        self._save()
        return secret

    def launch_code(self, app: str, install: str, grants: GrantSet) -> str:
        """A one-time code that :meth:`redeem` turns into a capability within :data:`LAUNCH_TTL` s."""
        now = self._clock()
        while self._launches and (
            len(self._launches) >= MAX_LAUNCH_CODES or next(iter(self._launches.values())).expires <= now
        ):
            self._launches.popitem(last=False)
        code = secrets.token_urlsafe(SECRET_BYTES)
        self._launches[_digest(code)] = _Launch(app, install, grants, now + LAUNCH_TTL)
        return code

    def redeem(self, code: str, app: str) -> str | None:
        """The secret of a new capability for ``app`` if ``code`` is a live launch code of that app
        (then the code is used up); None otherwise (unknown, used, expired, or another app's)."""
        if not code or len(code) > MAX_SECRET_CHARS:
            return None
        launch = self._launches.pop(_digest(code), None)
        if launch is None or launch.app != app or launch.expires <= self._clock():
            return None
        return self.mint(launch.app, launch.install, launch.grants)

    # ------------------------------------------------------------------ checking

    def verify(self, secret: str) -> Capability | None:
        """The live capability whose secret is ``secret``, or None."""
        if not secret or len(secret) > MAX_SECRET_CHARS:
            return None
        return self._by_digest.get(_digest(secret))  # looked up by hash: timing says nothing of it

    def why_not(self, cap: Capability, action: str, key: Key) -> str | None:
        """None when ``cap`` allows ``action`` (read, list, write) on ``key``, else the reason."""
        if cap.revoked:
            return f"the capability of app {cap.app} was revoked"
        own, rel = relative_path(self.local, key)
        if not rel.strip("/") or any(part.startswith(".") for part in rel.split("/")):
            return f"app {cap.app} may not touch reserved names or a whole namespace ({key})"
        if action == "write":
            if own and not rel.endswith("/") and cap.grants.can_write(rel):
                return None
            return f"{key} is outside the write grants of app {cap.app}"
        if rel.endswith("/"):  # a listing or a stream of a subtree: every key below it must be granted
            rel = rel[:-1] + SUBTREE_PROBE
        if cap.grants.can_read(own, rel):
            return None
        return f"{key} is outside the read grants of app {cap.app}"

    def require(self, cap: Capability, action: str, key: Key) -> None:
        """Raise :class:`OutsideGrant` (403) unless ``cap`` allows ``action`` on ``key``."""
        reason = self.why_not(cap, action, key)
        use = self.use.setdefault(cap.app, AppUse())
        if reason is not None:
            use.refused += 1
            log.info("app %s (capability %s) refused: %s", cap.app, cap.tag, reason)
            raise OutsideGrant(reason)
        if action == "write":
            use.writes += 1
        else:
            use.reads += 1

    def opener(self, cap: Capability, events: OpenEvents) -> OpenEvents:
        """``events`` whose streams are cut when ``cap`` is revoked (rule 3)."""

        def open_events(*args: Any, **kw: Any) -> EventStream:
            if cap.revoked:
                raise Forbidden(f"the capability of app {cap.app} was revoked", status_hint=401)
            stream = events(*args, **kw)
            cap.streams = [s for s in cap.streams if not s.closed]
            cap.streams.append(stream)
            return stream

        return open_events

    # ------------------------------------------------------------------ revoking

    def revoke(self, app: str) -> int:
        """Forget every capability and launch code of ``app`` and cut their streams; how many
        capabilities there were."""
        for digest in [d for d, launch in self._launches.items() if launch.app == app]:
            del self._launches[digest]
        held = self._by_app.pop(app, None)
        if not held:
            return 0
        for cap in held.values():
            self._drop(cap, "the app was removed, upgraded or its grants changed")
        self._save()
        return len(held)

    def live(self, app: str) -> int:
        """How many capabilities of ``app`` are live."""
        return len(self._by_app.get(app, ()))

    def watch(self, node: Node) -> None:
        """Revoke an app's capabilities whenever its install record ``/<local>/.apps/<name>`` changes."""
        prefix = f"/{self.local}/{APPS_SEGMENT}/"

        def changed(change: Change) -> None:
            if change.kind != "op":
                return
            name = change.key[len(prefix) :]
            if name and "/" not in name:
                self.revoke(name)

        node.observe(prefix, changed, snapshot=False)

    def _drop(self, cap: Capability, why: str) -> None:
        cap.revoked = True
        self._by_digest.pop(cap.digest, None)
        streams, cap.streams = cap.streams, []
        for stream in streams:
            stream.cut(Forbidden(f"the capability of app {cap.app} was revoked: {why}", status_hint=401))
