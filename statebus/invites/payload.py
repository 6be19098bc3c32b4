"""The invite payload: what an inviter signs and a friend's node checks. Pure (no I/O).

    invite = Invite(id=new_id(), by=pubkey, addrs=("http://10.0.0.1:8765",), dht=DhtTicket(...), ...)
    text = invite.encode(identity)              "sbi1.<base64url body>.<base64url signature>"
    link = invite.link(text)                     "http://10.0.0.1:8765/join#sbi1.…"
    invite = parse_link(link_or_text, now)      checks the signature and the expiry

Format::

    payload   = "sbi1." || base64url(body) || "." || base64url(signature)      (no padding)
    body      = canonical JSON (sorted keys, no whitespace, ASCII):
                {"v": 1, "id": "<26 base32>", "by": "<inviter pubkey>", "addrs": ["http://…"],
                 "dht": {"name": "devnet-x", "peer": "10.0.0.1:8766", "ticket": "<base64url>"} | null,
                 "app": {"name": "guestbook", "hash": "<sha256>", "size": 20480,
                         "key": "/<author>/.apps/guestbook"} | null,
                 "exp": <unix s>, "uses": N, "back": false, "note": "…"}
    signature = Ed25519(inviter, "statebus-invite-v1\\n" || body)

Rules:
    1. The payload travels in a link's fragment (``/join#…``): browsers never send a fragment, so it
       reaches no server log. :func:`parse_link` takes the link or the bare payload.
    2. A payload is refused whole (:class:`InvalidInvite`) when it does not parse, carries unknown or
       missing fields, or its signature by ``by`` does not verify: one changed character anywhere is
       refused (base64url is canonical: unused low bits must be zero).
       An expired one is :class:`InviteRefused`.
    3. ``dht.ticket`` is ``HMAC(invite secret, id)``: the way into the DHT, checked by the inviter when
       the invite is redeemed (the network secret itself is handed over only then). Rotating the
       inviter's invite secret makes every earlier ticket fail; members keep the network secret.
    4. The domain prefix keeps an invite signature from ever being valid as an op, record or bundle
       signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from statebus.errors import InvalidInvite, InviteRefused
from statebus.identity import Identity
from statebus.identity.keys import verify_signature
from statebus.keys import is_pubkey
from statebus.types import PubKey

PREFIX = "sbi1."
DOMAIN = b"statebus-invite-v1\n"
TICKET_DOMAIN = b"statebus-invite-ticket\n"
MAX_PAYLOAD = 4096
MAX_ADDRS = 8
MAX_NOTE = 200
MAX_USES = 10_000
NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
ID_RE = re.compile(r"^[a-z2-7]{26}$")
HASH_RE = re.compile(r"^[0-9a-f]{64}$")
APP_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, None: 1}
FIELDS = {"v", "id", "by", "addrs", "dht", "app", "exp", "uses", "back", "note"}


def new_id() -> str:
    """A random invite id: 128 bits, lowercase base32 without padding (26 characters)."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def ticket(invite_secret: bytes, invite_id: str) -> str:
    """The DHT ticket of invite ``invite_id`` under ``invite_secret`` (rule 3)."""
    mac = hmac.new(invite_secret, TICKET_DOMAIN + invite_id.encode(), hashlib.sha256).digest()[:18]
    return _b64e(mac)


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` (or plain seconds) → seconds. Raises InvalidValue."""
    from statebus.errors import InvalidValue

    m = DURATION_RE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise InvalidValue(f"{text[:40]!r} is not a duration such as 90s, 30m, 12h, 7d or 2w")
    return float(m.group(1)) * UNITS[m.group(2)]


@dataclass(frozen=True, slots=True)
class DhtTicket:
    """The DHT an invite lets its bearer into, and the inviter's DHT address (the first peer)."""

    name: str
    peer: str
    ticket: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "peer": self.peer, "ticket": self.ticket}


@dataclass(frozen=True, slots=True)
class AppRef:
    """The app an invite shares: its name, bundle hash and size, and its published pointer."""

    name: str
    hash: str
    size: int
    key: str

    @property
    def author(self) -> PubKey:
        return self.key.split("/")[1]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "hash": self.hash, "size": self.size, "key": self.key}


@dataclass(frozen=True, slots=True)
class Invite:
    """One invite's content (every field is signed)."""

    id: str
    by: PubKey
    addrs: tuple[str, ...]
    exp: int
    uses: int = 1
    dht: DhtTicket | None = None
    app: AppRef | None = None
    back: bool = False
    note: str = ""
    text: str = field(default="", compare=False)
    """The encoded payload this invite was parsed from (empty until encoded or parsed)."""

    def body(self) -> bytes:
        doc = {
            "v": 1,
            "id": self.id,
            "by": self.by,
            "addrs": list(self.addrs),
            "dht": self.dht.to_json() if self.dht is not None else None,
            "app": self.app.to_json() if self.app is not None else None,
            "exp": self.exp,
            "uses": self.uses,
            "back": self.back,
            "note": self.note,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def encode(self, identity: Identity) -> str:
        """The signed payload (``identity`` must be the inviter's)."""
        if identity.pubkey != self.by:
            raise InvalidInvite("an invite is signed by its inviter")
        body = self.body()
        return PREFIX + _b64e(body) + "." + _b64e(identity.sign(DOMAIN + body))

    def link(self, text: str | None = None) -> str:
        """``<first address>/join#<payload>`` (rule 1)."""
        return f"{self.addrs[0].rstrip('/')}/join#{text or self.text}"


def _b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def _b64d(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise InvalidInvite("the invite is not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidInvite("the invite is not base64url") from None
    if _b64e(raw) != text:  # unused low bits set: another spelling of the same bytes (rule 2)
        raise InvalidInvite("the invite was changed: it is not the inviter's encoding")
    return raw


def payload_of(link: str) -> str:
    """The payload in ``link`` (``…/join#sbi1.…``), or ``link`` itself when it is a bare payload."""
    text = link.strip()
    if "#" in text:
        text = text.split("#", 1)[1]
    return text


def parse_link(link: str, now: float) -> Invite:
    """The invite in ``link`` (a ``/join#`` link or a bare payload), its signature and expiry checked.

    Raises:
        InvalidInvite: it does not parse, or its signature does not verify (rule 2).
        InviteRefused: it has expired.
    """
    invite = parse_payload(payload_of(link))
    if invite.exp <= now:
        raise InviteRefused(f"the invite {invite.id} expired {_ago(now - invite.exp)} ago")
    return invite


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def parse_payload(text: str) -> Invite:
    """Decode and verify a payload (rule 2); the expiry is not checked here."""
    if len(text) > MAX_PAYLOAD:
        raise InvalidInvite(f"the invite is over {MAX_PAYLOAD} characters")
    if not text.startswith(PREFIX) or text.count(".") != 2:
        raise InvalidInvite(
            "this is not a statebus invite (a link ending in /join#sbi1.… or the sbi1.… part)"
        )
    body_text, sig_text = text[len(PREFIX) :].split(".")
    body, sig = _b64d(body_text), _b64d(sig_text)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInvite("the invite was changed or cut short: its body does not decode") from None
    if not isinstance(doc, dict) or set(doc) != FIELDS or doc.get("v") != 1:
        raise InvalidInvite("the invite's fields are not those of a v1 invite (tampered?)")
    by = doc["by"]
    if not isinstance(by, str) or not is_pubkey(by):
        raise InvalidInvite("the invite names no inviter key")
    if len(sig) != 64 or not verify_signature(by, DOMAIN + body, sig):
        raise InvalidInvite(
            "the invite's signature does not verify: it was changed after the inviter signed it"
        )
    return _from_doc(doc, text)


def _from_doc(doc: dict[str, Any], text: str) -> Invite:
    """The checked fields of a signed body (a signed body with bad fields is still refused)."""
    iid, addrs, exp, uses = doc["id"], doc["addrs"], doc["exp"], doc["uses"]
    if not isinstance(iid, str) or not ID_RE.match(iid):
        raise InvalidInvite("the invite's id is malformed")
    if (
        not isinstance(addrs, list)
        or not 1 <= len(addrs) <= MAX_ADDRS
        or not all(
            isinstance(a, str) and a.startswith(("http://", "https://")) and len(a) <= 200 for a in addrs
        )
    ):
        raise InvalidInvite("the invite's addresses are not 1-8 http(s) URLs")
    if (
        not isinstance(exp, int)
        or isinstance(exp, bool)
        or not isinstance(uses, int)
        or isinstance(uses, bool)
    ):
        raise InvalidInvite("the invite's expiry and uses are integers")
    if not 1 <= uses <= MAX_USES:
        raise InvalidInvite(f"an invite has 1-{MAX_USES} uses")
    if not isinstance(doc["back"], bool) or not isinstance(doc["note"], str) or len(doc["note"]) > MAX_NOTE:
        raise InvalidInvite(f"the invite's note is text of at most {MAX_NOTE} characters")
    return Invite(
        id=iid,
        by=doc["by"],
        addrs=tuple(addrs),
        exp=exp,
        uses=uses,
        dht=_dht(doc["dht"]),
        app=_app(doc["app"]),
        back=doc["back"],
        note=doc["note"],
        text=text,
    )


def _dht(value: object) -> DhtTicket | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) != {"name", "peer", "ticket"}
        or not all(isinstance(v, str) for v in value.values())
        or not NAME_RE.match(value["name"])
        or not 0 < len(value["peer"]) <= 200
        or not 0 < len(value["ticket"]) <= 64
    ):
        raise InvalidInvite("the invite's DHT is not {name, peer, ticket}")
    return DhtTicket(value["name"], value["peer"], value["ticket"])


def _app(value: object) -> AppRef | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"name", "hash", "size", "key"}:
        raise InvalidInvite("the invite's app is not {name, hash, size, key}")
    name, hash_, size, key = value["name"], value["hash"], value["size"], value["key"]
    parts = key.split("/") if isinstance(key, str) else []
    if (
        not isinstance(name, str)
        or not APP_RE.match(name)
        or not isinstance(hash_, str)
        or not HASH_RE.match(hash_)
        or not isinstance(size, int)
        or isinstance(size, bool)
        or size < 0
        or len(parts) != 4
        or parts[0] != ""
        or not is_pubkey(parts[1])
        or parts[2:] != [".apps", name]
    ):
        raise InvalidInvite("the invite's app is malformed")
    return AppRef(name, hash_, size, key)


__all__ = [
    "AppRef",
    "DhtTicket",
    "Invite",
    "new_id",
    "parse_duration",
    "parse_link",
    "parse_payload",
    "payload_of",
    "ticket",
]
