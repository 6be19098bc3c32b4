"""Delegation and revocation records, and the :class:`Keyring` built from them.

The namespace key is the root of trust. It signs a **delegation** that lets another key (a device, an
app, a persona) write part of the namespace, and a **revocation** that takes it back. Both are stored
as ordinary JSON values in the owner's namespace, one key per delegate::

    /<owner>/.keys/<delegate-pubkey>

Only the owner may write under ``/<owner>/.keys/`` (a delegate's scope never covers it), and the
newest record (highest ``issued``) for a delegate wins; on a tie a revocation wins.

Value format (canonical JSON: sorted keys, no whitespace, UTF-8)::

    {"type": "statebus/delegation", "v": 1, "owner": <pubkey>, "delegate": <pubkey>,
     "scopes": ["/<owner>/chirp/", …], "not_before": <unix s>, "expires": <unix s> | null,
     "issued": <int>, "sig": <base64 Ed25519 signature>}
    {"type": "statebus/revocation", "v": 1, "owner": <pubkey>, "delegate": <pubkey>,
     "issued": <int>, "reason": <text>, "sig": <base64>}

A scope is a key prefix that ends in ``/`` and starts with ``/<owner>/`` (``/<owner>/`` is the whole
namespace but ``.keys``). ``issued`` is the owner's counter (a Lamport clock or a Unix time: anything
that grows). ``sig`` signs ``b"statebus-delegation-v1\\n"`` + the canonical JSON of every other field.

``not_before`` is set on the owner's clock and checked on the verifier's, so a :class:`Keyring` can
allow ``leeway`` seconds of difference (a node passes ``Settings.max_clock_skew``, two minutes by
default): a delegation made "from now" on a machine a minute fast works at once on every node.
``expires`` is checked strictly on the verifier's clock (an expiry is a promise to the owner; renew a
delegation before it ends).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass, field
from typing import Any

from statebus.errors import BadSignature, InvalidValue
from statebus.identity.keys import Identity, verify_signature
from statebus.keys import is_pubkey, namespace_of
from statebus.types import JSON, Key, PubKey

DELEGATION = "statebus/delegation"
REVOCATION = "statebus/revocation"
RECORD_DOMAIN = b"statebus-delegation-v1\n"
KEYS_SEGMENT = ".keys"
MAX_SCOPES = 32
MAX_REASON = 256


def keys_prefix(owner: PubKey) -> Key:
    """``/<owner>/.keys/``: where an owner's delegation records live."""
    return f"/{owner}/{KEYS_SEGMENT}/"


def record_key(owner: PubKey, delegate: PubKey) -> Key:
    """``/<owner>/.keys/<delegate>``: the key of the record about ``delegate``."""
    return f"/{owner}/{KEYS_SEGMENT}/{delegate}"


def _canonical(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


@dataclass(frozen=True, slots=True)
class Record:
    """A delegation (``revoked`` false) or a revocation (``revoked`` true) of ``delegate`` by ``owner``."""

    owner: PubKey
    delegate: PubKey
    issued: int
    revoked: bool = False
    scopes: tuple[str, ...] = ()
    not_before: int = 0
    expires: int | None = None
    reason: str = ""
    sig: bytes = field(default=b"", compare=False)

    def body(self) -> dict[str, JSON]:
        """The record as a JSON object, without ``sig``."""
        d: dict[str, JSON] = {"v": 1, "owner": self.owner, "delegate": self.delegate, "issued": self.issued}
        if self.revoked:
            d.update(type=REVOCATION, reason=self.reason)
        else:
            d.update(
                type=DELEGATION, scopes=list(self.scopes), not_before=self.not_before, expires=self.expires
            )
        return d

    def signing_bytes(self) -> bytes:
        """What the owner's signature covers."""
        return RECORD_DOMAIN + _canonical(self.body())

    def to_json(self) -> dict[str, JSON]:
        """The value stored at :func:`record_key` (signed)."""
        d = self.body()
        d["sig"] = base64.b64encode(self.sig).decode("ascii")
        return d

    @property
    def key(self) -> Key:
        return record_key(self.owner, self.delegate)

    def covers(self, key: Key) -> bool:
        """Whether a scope of this (unrevoked) delegation contains ``key`` (never ``.keys``)."""
        if self.revoked or key.startswith(keys_prefix(self.owner)):
            return False
        return any(key.startswith(scope) and key != scope for scope in self.scopes)

    def check_time(self, now: float, leeway: float = 0.0) -> str | None:
        """Why the delegation is not valid at ``now``, or None. It counts as started ``leeway`` seconds
        early (the owner's clock may run ahead of ours); the expiry is strict."""
        if now + leeway < self.not_before:
            return f"delegation of {self.delegate} is not valid before {self.not_before}"
        if self.expires is not None and now >= self.expires:
            return f"delegation of {self.delegate} expired at {self.expires}"
        return None


def _check_fields(owner: Any, delegate: Any, issued: Any) -> None:
    if not isinstance(owner, str) or not is_pubkey(owner):
        raise InvalidValue("record owner is not a 52-character public key")
    if not isinstance(delegate, str) or not is_pubkey(delegate):
        raise InvalidValue("record delegate is not a 52-character public key")
    if delegate == owner:
        raise InvalidValue("an owner does not delegate to itself")
    if not isinstance(issued, int) or isinstance(issued, bool) or not 0 <= issued < 2**53:
        raise InvalidValue("record issued is an integer in [0, 2^53)")


def _check_scopes(owner: PubKey, scopes: Any) -> tuple[str, ...]:
    if not isinstance(scopes, list | tuple) or not 1 <= len(scopes) <= MAX_SCOPES:
        raise InvalidValue(f"a delegation has 1 to {MAX_SCOPES} scopes")
    for s in scopes:
        if not isinstance(s, str) or not s.startswith(f"/{owner}/") or not s.endswith("/"):
            raise InvalidValue("a scope is a key prefix '/<owner>/…/' inside the owner's namespace")
        if s.startswith(keys_prefix(owner)):
            raise InvalidValue("a scope may not cover /<owner>/.keys/")
    return tuple(scopes)


def delegate(
    owner: Identity,
    delegate_key: PubKey,
    scopes: list[str] | tuple[str, ...] | None = None,
    *,
    issued: int,
    not_before: int = 0,
    expires: int | None = None,
) -> Record:
    """A delegation signed by ``owner``; ``scopes`` defaults to the whole namespace."""
    scopes_t = _check_scopes(owner.pubkey, list(scopes) if scopes is not None else [f"/{owner.pubkey}/"])
    _check_fields(owner.pubkey, delegate_key, issued)
    if expires is not None and (not isinstance(expires, int) or expires <= not_before):
        raise InvalidValue("a delegation expires after it starts")
    rec = Record(owner.pubkey, delegate_key, issued, False, scopes_t, not_before, expires)
    return _signed(rec, owner)


def revoke(owner: Identity, delegate_key: PubKey, *, issued: int, reason: str = "") -> Record:
    """A revocation signed by ``owner``; give it an ``issued`` above the delegation's."""
    _check_fields(owner.pubkey, delegate_key, issued)
    if len(reason) > MAX_REASON:
        raise InvalidValue(f"a revocation reason is at most {MAX_REASON} characters")
    return _signed(Record(owner.pubkey, delegate_key, issued, True, reason=reason), owner)


def _signed(rec: Record, owner: Identity) -> Record:
    sig = owner.sign(rec.signing_bytes())
    return Record(
        rec.owner,
        rec.delegate,
        rec.issued,
        rec.revoked,
        rec.scopes,
        rec.not_before,
        rec.expires,
        rec.reason,
        sig,
    )


def parse_record(value: Any, key: Key | None = None) -> Record:
    """Parse and verify a stored record; if ``key`` is given, check it is the record's own key.

    Raises:
        InvalidValue: malformed, or stored at the wrong key.
        BadSignature: not signed by the owner it names.
    """
    if not isinstance(value, dict):
        raise InvalidValue("a delegation record is a JSON object")
    kind = value.get("type")
    allowed = {"type", "v", "owner", "delegate", "issued", "sig"}
    allowed |= {"reason"} if kind == REVOCATION else {"scopes", "not_before", "expires"}
    if kind not in (DELEGATION, REVOCATION) or value.get("v") != 1:
        raise InvalidValue(f"a record's type is {DELEGATION!r} or {REVOCATION!r}, with v=1")
    if set(value) - allowed:
        raise InvalidValue(f"record has unknown fields: {sorted(set(value) - allowed)}")
    owner: Any = value.get("owner")
    dele: Any = value.get("delegate")
    issued: Any = value.get("issued")
    _check_fields(owner, dele, issued)
    try:
        sig = base64.b64decode(value.get("sig", ""), validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidValue("record sig is not base64") from None
    if kind == REVOCATION:
        reason = value.get("reason", "")
        if not isinstance(reason, str) or len(reason) > MAX_REASON:
            raise InvalidValue("a revocation reason is short text")
        rec = Record(owner, dele, issued, True, reason=reason, sig=sig)
    else:
        nb, exp = value.get("not_before", 0), value.get("expires")
        if not isinstance(nb, int) or isinstance(nb, bool) or not (exp is None or type(exp) is int):
            raise InvalidValue("not_before and expires are integers (Unix seconds)")
        rec = Record(owner, dele, issued, False, _check_scopes(owner, value.get("scopes")), nb, exp, sig=sig)
    if key is not None and key != rec.key:
        raise InvalidValue(f"a record about {dele} is stored at {rec.key}, not {key}")
    if not verify_signature(owner, rec.signing_bytes(), sig):
        raise BadSignature(f"delegation record for {dele} is not signed by its owner {owner}")
    return rec


class Keyring:
    """In-memory view of verified delegation records: who may write where. Pure; no I/O.

    ``leeway``: seconds by which the owner's clock may run ahead of ours (``not_before``).
    """

    def __init__(self, records: list[Record] | None = None, *, leeway: float = 0.0) -> None:
        self.leeway = leeway
        self._records: dict[tuple[PubKey, PubKey], Record] = {}
        for rec in records or ():
            self.add(rec)

    def add(self, rec: Record) -> bool:
        """Take a record if it is newer than the one held; returns whether it changed anything.

        Raises:
            BadSignature: the record is not signed by its owner.
        """
        if not verify_signature(rec.owner, rec.signing_bytes(), rec.sig):
            raise BadSignature(f"delegation record for {rec.delegate} is not signed by its owner")
        slot = (rec.owner, rec.delegate)
        held = self._records.get(slot)
        if held is not None and (held.issued, held.revoked) >= (rec.issued, rec.revoked):
            return False
        self._records[slot] = rec
        return True

    def add_stored(self, key: Key, value: Any) -> bool:
        """Take a record as stored at ``key`` (see :func:`parse_record`)."""
        return self.add(parse_record(value, key))

    def forget(self, owner: PubKey, delegate_key: PubKey) -> None:
        """Drop what is known about ``delegate_key`` (its record key was deleted): it loses all rights.

        Feed the keyring the *merged current value* of each ``/<owner>/.keys/…`` key, not raw ops.
        """
        self._records.pop((owner, delegate_key), None)

    def get(self, owner: PubKey, delegate_key: PubKey) -> Record | None:
        """The newest record about ``delegate_key`` in ``owner``'s namespace."""
        return self._records.get((owner, delegate_key))

    def is_revoked(self, owner: PubKey, delegate_key: PubKey) -> bool:
        rec = self._records.get((owner, delegate_key))
        return rec is not None and rec.revoked

    def why_not(self, author: PubKey, key: Key, now: float | None = None) -> str | None:
        """None when ``author`` may write ``key``; otherwise the reason it may not."""
        owner = namespace_of(key)
        if author == owner:
            return None
        if key.startswith(keys_prefix(owner)):
            return f"only the owner writes {keys_prefix(owner)}"
        rec = self._records.get((owner, author))
        if rec is None:
            return f"{author} is not the owner of {owner} and holds no delegation from it"
        if rec.revoked:
            return f"the delegation of {author} by {owner} was revoked"
        when = time.time() if now is None else now
        reason = rec.check_time(when, self.leeway)
        if reason:
            return reason
        if not rec.covers(key):
            return f"the delegation of {author} does not cover {key} (scopes: {', '.join(rec.scopes)})"
        return None

    def may_write(self, author: PubKey, key: Key, now: float | None = None) -> bool:
        """Whether ``author`` may write ``key``: it owns the namespace or holds a live delegation."""
        return self.why_not(author, key, now) is None

    def __len__(self) -> int:
        return len(self._records)
