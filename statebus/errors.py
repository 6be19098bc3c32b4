"""Every error statebus raises, in one tree.

    StatebusError                 (status_hint 400 unless noted)
    ├── InvalidKey                a key path is malformed or over a limit
    ├── InvalidValue              a value is not JSON, too large, or of the wrong kind
    ├── InvalidRange              a Braid range (``.a[3]``) cannot be parsed or does not apply
    ├── InvalidOp                 an op is malformed (bad parents, bad merge type, bad body)
    ├── CliError                  a ``statebus`` command cannot do what it was asked (one line, exit 1)
    ├── BadSignature        401   an op or request signature does not verify
    ├── Forbidden           403   the author or client may not do this
    │   ├── OutsideGrant    403   an app's capability does not cover this key
    │   └── Unauthorized    401   no (valid) credentials: the client must sign in first
    ├── NotFound            404   no such key (never written, or deleted)
    ├── NotAcceptable       406   the key cannot be served in the asked form (Yjs updates of a JSON key)
    ├── VersionConflict     409   a version id is reused with different content
    ├── StaleParents        409   a client's write names parents that are no longer the key's frontier
    ├── PreconditionFailed  412   an ``If-Match``/``If-None-Match`` condition does not hold
    ├── HistoryCompacted    410   a resume or a past version needs ops that compaction folded away
    ├── RangeNotSatisfiable 416   no byte range of a ``Range: bytes=…`` lies inside the value
    ├── TooLarge            413   a body or value is over its limit
    ├── QuotaExceeded       413   a namespace is over its storage quota
    ├── RateLimited         429   too many requests; carries ``retry_after`` seconds
    │   └── Shed            503   a node's peer stream slots are full; carries ``retry_after`` and
    │                             the node's signed list of relays to follow instead
    ├── StoreInUse          409   another process has the data folder's store open
    ├── StoreDamaged        500   the store failed its integrity check; the node refuses it
    ├── StoreBehind         409   the store holds less than this node committed; restore it first
    ├── StoreUnsupported    500   the data folder cannot hold the store (no WAL: a network share?)
    ├── StoreTooNew         500   the store was written by a newer statebus (its schema version)
    ├── StoreLocked         423   the data folder is encrypted at rest and no key, or a wrong key, was given
    ├── ArchiveInvalid      422   a backup archive fails a check (hash, signature, member, format)
    ├── StorageFailed       503   storage could not take a write (disk full); retried with backoff
    ├── ShuttingDown        503   the node, a server or a store is closing (or closed)
    ├── SubscriberTooSlow   503   a subscriber's buffer overflowed; it was cut off and may resume
    ├── Incomplete          503   a replica lacks history its owner compacted: it claims no state
    ├── BlobPending         503   a key's blob is still on its way to this replica (retry shortly)
    ├── BadBlob             422   blob bytes do not match their hash or declared size
    ├── MirrorTampered      422   a mirror object does not authenticate: altered, truncated or swapped
    ├── BadSnapshot         422   a subtree snapshot fails a check (signature, signer, Merkle root)
    ├── SwarmFailed         503   a blob's swarm fetch did not finish (no peers, timeout, session closed)
    ├── BlobSwarmed         409   a hot blob: a node that swarms is sent to the swarm, not served the bytes
    ├── PeerUnavailable     502   a remote node could not be reached (or a node we started did not)
    ├── RelayDropped        502   a relay a node was shed to lied (a forged op) or is stale: left
    ├── RemoteError        (peer) another node answered with an error: its status, its ``remote_code``
    ├── ReactiveTooDeep           reactive functions nest too deep (a cycle between them?)
    ├── ReactiveFailed      500   a reactive key's function raised (the detail names the key, no secrets)
    ├── DerivedKey          405   a write to a derived (reactive) key: its value is computed, not written
    ├── SandboxViolation    422   a hosted handler broke its limits
    ├── AppRejected         422   a hosted app's validator (or its JSON Schema) refused a write
    ├── AppFailed           422   a hosted app's handler failed (time, memory, a trap, a bad result)
    ├── InvalidBundle       422   an app bundle is malformed, tampered with or mis-signed: nothing installed
    ├── InvalidInvite             an invite link does not parse, is not signed by its inviter, or names
    │                             another DHT than the joining node's
    └── InviteRefused       410   the inviter refuses an invite: expired, spent, revoked, or made before
                                  the DHT's invite secret was rotated

Every error has a short machine ``code`` (the class name in snake case), a human ``detail`` and a
``status_hint`` that the HTTP layer turns into the response status. Secrets never go into ``detail``.
"""

from __future__ import annotations

import re

CLIENT_DOCS = "docs/http-api.md#using-a-generic-braid-or-statebus-client"
"""Where a client that is refused for want of a key prefix or a token learns both (named in details)."""
SIGN_IN_HINT = (
    "Send the owner token as Authorization: Bearer <token> (`statebus token` prints it), or open the login"
    f" link `statebus serve` printed; see {CLIENT_DOCS}"
)
"""The sentence every ``unauthorized`` answer ends with: how to sign in."""


class StatebusError(Exception):
    """Base of all statebus errors."""

    status_hint: int = 400

    def __init__(self, detail: str = "", *, status_hint: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status_hint is not None:
            self.status_hint = status_hint

    @property
    def code(self) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r})"

    def __str__(self) -> str:
        return self.detail or self.code


class InvalidKey(StatebusError):
    pass


class InvalidValue(StatebusError):
    pass


class InvalidRange(StatebusError):
    pass


class InvalidOp(StatebusError):
    pass


class CliError(StatebusError):
    """An expected failure of a ``statebus`` command, shown as one line on stderr."""


class BadSignature(StatebusError):
    status_hint = 401


class Forbidden(StatebusError):
    status_hint = 403


class OutsideGrant(Forbidden):
    """A request made with an app's capability names a key outside the app's granted patterns."""


class Unauthorized(Forbidden):
    """The client sent no credentials, or ones that are not valid: it may not do this until it signs
    in (HTTP 401, code ``unauthorized``). A :class:`Forbidden` so that callers catching a refusal
    catch both."""

    status_hint = 401


class NotFound(StatebusError):
    status_hint = 404


class NotAcceptable(StatebusError):
    status_hint = 406


class VersionConflict(StatebusError):
    status_hint = 409


class StaleParents(StatebusError):
    status_hint = 409


class PreconditionFailed(StatebusError):
    status_hint = 412


class HistoryCompacted(StatebusError):
    status_hint = 410


class RangeNotSatisfiable(StatebusError):
    """No range of a ``Range: bytes=…`` request lies inside the value; ``size`` is its length (the
    HTTP layer answers ``Content-Range: bytes */size``)."""

    status_hint = 416

    def __init__(self, detail: str = "", *, size: int = 0) -> None:
        super().__init__(detail)
        self.size = size


class TooLarge(StatebusError):
    status_hint = 413


class QuotaExceeded(StatebusError):
    status_hint = 413


class RateLimited(StatebusError):
    status_hint = 429

    def __init__(self, detail: str = "", *, retry_after: float = 1.0) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Shed(RateLimited):
    """A node's peer stream slots are all taken (``max_peer_streams``): the follower should stream
    from one of ``relays`` (the node's signed relay list, ``statebus.federation.relays``), or wait
    ``retry_after`` seconds. A :class:`RateLimited` so that a follower with no usable relay waits as
    it does for a 429."""

    status_hint = 503

    def __init__(self, detail: str = "", *, retry_after: float = 10.0, relays: object = None) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.relays = relays


class StoreInUse(StatebusError):
    """Another process has this data folder's store open (two writers would corrupt its order)."""

    status_hint = 409


class StoreDamaged(StatebusError):
    """The store failed its integrity check (``PRAGMA quick_check``): the node will not serve it."""

    status_hint = 500


class StoreBehind(StatebusError):
    """The store holds fewer ops than this node once committed (deleted, or an old copy): a local
    write now would lose to the older copies its followers hold. ``statebus restore`` first."""

    status_hint = 409


class StorageFailed(StatebusError):
    """Storage could not make a write durable (disk full, I/O error); nothing of it is visible."""

    status_hint = 503


class StoreUnsupported(StatebusError):
    """The data folder's file system cannot hold the store (SQLite's WAL mode is refused there)."""

    status_hint = 500


class StoreTooNew(StatebusError):
    """The store's schema version is newer than this statebus reads: it was written by a later
    release. Nothing is changed; run that release (there is no downgrade)."""

    status_hint = 500


class StoreLocked(StatebusError):
    """The data folder is encrypted at rest and cannot be opened: no key was given, or the key given
    does not open it (docs/storage.md, "Encryption at rest"). Nothing is read or changed."""

    status_hint = 423


class ArchiveInvalid(StatebusError):
    """A backup archive (``statebus import``) fails one of its checks: not a tar file, an unexpected
    member, a hash or size that does not match the manifest, a bad signature. Nothing is applied."""

    status_hint = 422


class ShuttingDown(StatebusError):
    """The node, a server or a store is closing or closed: nothing new is taken. The one class for
    every "shutting down" refusal, so callers catch one thing."""

    status_hint = 503


class SubscriberTooSlow(StatebusError):
    status_hint = 503


class Incomplete(StatebusError):
    """This replica cannot rebuild another node's key from the ops it holds (the owner compacted
    history this replica never saw): it serves no value and claims no version for it."""

    status_hint = 503


class BlobPending(StatebusError):
    """A key points to a blob this replica has not fetched yet: it serves no bytes until they arrive
    and their sha256 matches the signed pointer."""

    status_hint = 503


class BadBlob(StatebusError):
    """Blob bytes whose sha256 is not the one named (by a signed pointer or a request), or whose
    length is not the declared one: nothing is kept."""

    status_hint = 422


class MirrorTampered(StatebusError):
    """A ciphertext a mirror served back does not authenticate (or its hash is not the one pushed):
    the detail names the object (``seg/41``), never its content."""

    status_hint = 422


class BadSnapshot(StatebusError):
    """A signed subtree snapshot does not check (its signature, its signer, its Merkle root, its
    rows): nothing of it is installed; the detail says which check failed."""

    status_hint = 422


class SwarmFailed(StatebusError):
    """A blob could not be fetched from its swarm (no peer had it in time, the session closed, or it
    is being fetched already): nothing was kept; the HTTP fetch is the fallback."""

    status_hint = 503


class BlobSwarmed(StatebusError):
    """A small blob asked for more often than ``swarm_hot_requests`` a minute became a torrent: a peer
    that named its swarm address (``?seeder=``) is sent to the swarm offer; asked without it, the
    node still serves the bytes (the HTTP fallback)."""

    status_hint = 409


class PeerUnavailable(StatebusError):
    status_hint = 502


class RelayDropped(StatebusError):
    """A relay a follower was shed to sent a forged op, or lacks an op its origin already had when
    it named the relay (stale): the follower leaves it and asks the origin again."""

    status_hint = 502


class RemoteError(StatebusError):
    """Another node (a federation peer, or the server a CLI command talks to) answered with an error.

    Like h11's ``RemoteProtocolError``: the fault is at the other end. ``status_hint`` is the status
    the remote answered (so a caller can tell its 403 from its 404) and ``remote_code`` the error
    ``code`` it sent, when it sent one.
    """

    status_hint = 502

    def __init__(self, detail: str = "", *, status_hint: int | None = None, remote_code: str = "") -> None:
        super().__init__(detail, status_hint=status_hint)
        self.remote_code = remote_code


class ReactiveTooDeep(StatebusError):
    """Reactive functions nest deeper than the bus allows: most likely two of them read each other."""


class ReactiveFailed(StatebusError):
    """A reactive key's function raised: its key has no value until the function succeeds again.
    The detail names the key and the exception's class, never its message (it may hold secrets)."""

    status_hint = 500


class DerivedKey(StatebusError):
    """A write (PUT, PATCH, DELETE or an op) to a derived key: its value is computed from its inputs,
    so nothing was changed; write the inputs instead."""

    status_hint = 405


class SandboxViolation(StatebusError):
    status_hint = 422


class AppRejected(StatebusError):
    """A hosted app's validator said no (its verdict) or its JSON Schema does not hold: the write is
    refused and nothing changed. The detail names the app and its reason."""

    status_hint = 422


class AppFailed(StatebusError):
    """A hosted app's handler could not give a verdict (it ran past its time or memory budget, trapped,
    returned something not JSON or too large): the write is refused, the app's runtime restarted."""

    status_hint = 422


class InvalidBundle(StatebusError):
    """An app bundle (or its manifest, or its signature) is refused: malformed, tampered with, signed
    by another key, or holding a path that could leave its folder. Nothing was installed."""

    status_hint = 422


class InvalidInvite(StatebusError):
    """An invite link (or its payload) is malformed, tampered with (its signature does not verify), or
    names another DHT than the one the joining node is in. Nothing changed."""


class InviteRefused(StatebusError):
    """The inviter refuses the invite: it expired, its uses are spent, it was revoked, or it was made
    before the DHT's invite secret was rotated. Nothing changed."""

    status_hint = 410
