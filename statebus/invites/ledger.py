"""The inviter's side: make, list, revoke and redeem invites; rotate the DHT's invite secret.

    ledger = Ledger(node, identity, data_dir, registry)    one per node (statebus.server)
    ledger.dht = DhtAccess("devnet-x", b"network secret", "10.0.0.1:8766")
    ledger.addrs = ("http://10.0.0.1:8765",)
    invite = await ledger.create(app="guestbook", uses=2, ttl=7 * 86400, note="hi")
    ledger.check(invite.text, joiner=None)                 what a joiner sees before it commits
    answer = await ledger.redeem(invite.text, joiner, sig)  counts a use; hands over the DHT secret

Each invite has a record ``/~/.invites/<id>`` in the owner's namespace (private, as every name
starting with ``.``)::

    {"id", "created", "exp", "uses", "used", "note", "app", "back", "revoked": false,
     "joined": [{"pubkey": "<joiner>", "at": <unix s>}]}

Rules:
    1. Redeeming is atomic per node: one lock covers read, check and write of the record, so an
       n-use invite admits exactly n joiners however many race. The record is durable before the
       answer leaves.
    2. A joiner already in ``joined`` redeems again without counting a use: a join that failed half
       way is finished by running the same command (same identity).
    3. A spent, revoked, expired or pre-rotation invite is refused (:class:`InviteRefused`) with the
       reason and nothing changes; an invite this node did not make, or made for another DHT, is
       :class:`InvalidInvite`.
    4. The invite secret (``<data>/invites/secret``, 0600) only signs tickets; rotating it stops
       every earlier link at once. The DHT's network secret is never in a link: it is handed to a
       joiner in the redeem answer, so members already in the DHT stay in after a rotation.
    5. A joiner is added to the ACL list ``@invited`` and that list may read the app's subtrees, so
       the joiner's node can follow them. ``back`` invites make this node follow the joiner's app
       subtrees in turn.
    6. Nothing here logs or stores the network secret or a ticket.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from statebus.access.acl import LISTS, rule_key
from statebus.apps.bundle import Signature
from statebus.apps.manifest import Manifest
from statebus.apps.registry import AppRegistry, InstalledApp
from statebus.errors import InvalidInvite, InvalidValue, InviteRefused, NotFound, StatebusError
from statebus.identity import Identity, keystore
from statebus.identity.keys import verify_signature
from statebus.invites.payload import (
    MAX_NOTE,
    MAX_USES,
    AppRef,
    DhtTicket,
    Invite,
    new_id,
    parse_payload,
    ticket,
)
from statebus.keys import is_pubkey
from statebus.runtime import Node
from statebus.types import JSON, PubKey

INVITES = ".invites"
INVITED_LIST = "invited"
SECRET_FILE = "secret"
REDEEM_DOMAIN = b"statebus-invite-redeem\n"
MAX_TTL = 365 * 86400.0

FollowFn = Callable[[str, Sequence[str]], Awaitable[None]]


def record_key(invite_id: str) -> str:
    return f"/~/{INVITES}/{invite_id}"


def redeem_message(invite_id: str, joiner: PubKey) -> bytes:
    """What a joiner signs to redeem ``invite_id`` as ``joiner`` (proves it holds the key)."""
    return REDEEM_DOMAIN + f"{invite_id}\n{joiner}".encode()


def app_subtrees(manifest: Manifest) -> list[str]:
    """The subtrees (relative, ending in ``/``) of the owner's namespace an app reads and writes:
    what a joiner follows at the inviter (a pattern with ``*`` is cut at its first ``*``)."""
    out: list[str] = []
    perms = manifest.permissions
    for p in (*perms.write, *perms.read):
        text = p.text.split("*", 1)[0]
        if "/" not in text:
            continue
        text = text[: text.rfind("/") + 1]
        if text and text not in out:
            out.append(text)
    return out


@dataclass(frozen=True, slots=True)
class DhtAccess:
    """The DHT this node is in: its name, its network secret (never shown) and its address."""

    name: str
    secret: bytes = field(repr=False)
    peer: str


class Ledger:
    """A node's invites (every rule above)."""

    def __init__(
        self,
        node: Node,
        identity: Identity,
        data_dir: str | Path,
        registry: AppRegistry,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.identity = identity
        self.dir = Path(data_dir) / "invites"
        self.registry = registry
        self.clock = clock
        self.dht: DhtAccess | None = None
        self.addrs: tuple[str, ...] = ()
        self.follow: FollowFn | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ the invite secret (rule 4)

    def _secret(self) -> bytes:
        path = self.dir / SECRET_FILE
        if not path.exists():
            self.rotate()
        return keystore.read_private_file(path)

    def rotate(self) -> None:
        """A new invite secret: every link made before stops working (rule 4)."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.dir / SECRET_FILE
        keystore.write_private_file(path, secrets.token_bytes(32))

    # ------------------------------------------------------------------ making and managing

    def _app_ref(self, name: str) -> tuple[AppRef, InstalledApp]:
        app = self.registry.get(name)
        if app is None:
            raise NotFound(f"no app named {name[:40]!r} is installed here: install it before inviting to it")
        m = app.manifest
        return AppRef(m.name, app.bundle_hash, app.bundle.size, f"/{m.author}/.apps/{m.name}"), app

    async def create(
        self,
        *,
        app: str | None = None,
        uses: int = 1,
        ttl: float = 7 * 86400,
        note: str = "",
        back: bool = False,
    ) -> Invite:
        """Make, sign and record an invite. Raises InvalidValue / NotFound (changing nothing)."""
        if not self.addrs:
            raise InvalidValue(
                "this node has no address to put in an invite: it listens on every interface (0.0.0.0);"
                " set public_origins to the address friends reach it by"
            )
        if not 1 <= uses <= MAX_USES:
            raise InvalidValue(f"an invite has 1-{MAX_USES} uses, not {uses}")
        if not 0 < ttl <= MAX_TTL:
            raise InvalidValue("an invite expires within a year")
        if len(note) > MAX_NOTE:
            raise InvalidValue(f"a note is at most {MAX_NOTE} characters")
        ref = self._app_ref(app)[0] if app else None
        iid = new_id()
        dht = None
        if self.dht is not None:
            dht = DhtTicket(self.dht.name, self.dht.peer, ticket(self._secret(), iid))
        now = self.clock()
        invite = Invite(
            id=iid,
            by=self.identity.pubkey,
            addrs=self.addrs,
            exp=int(now + ttl),
            uses=uses,
            dht=dht,
            app=ref,
            back=back,
            note=note,
        )
        text = invite.encode(self.identity)
        record: dict[str, JSON] = {
            "id": iid,
            "created": int(now),
            "exp": invite.exp,
            "uses": uses,
            "used": 0,
            "note": note,
            "app": ref.name if ref else None,
            "back": back,
            "revoked": False,
            "joined": [],
        }
        await self.node.save(record_key(iid), record)
        return Invite(**{**_fields(invite), "text": text})

    def _record(self, invite_id: str) -> dict[str, Any] | None:
        change = self.node.fetch_or_none(record_key(invite_id), durable=True)
        if change is None or not change.exists or not isinstance(change.value, dict):
            return None
        return dict(change.value)

    def list(self) -> list[dict[str, Any]]:
        """Every invite's record, newest first."""
        out: list[dict[str, Any]] = []
        after = ""
        while True:
            page = self.node.children(f"/~/{INVITES}/", after=after, limit=200)
            if not page:
                break
            for name in page:
                rec = self._record(name)
                if rec is not None:
                    out.append(rec)
            after = page[-1]
        out.sort(key=lambda r: r.get("created", 0), reverse=True)
        return out

    async def revoke(self, invite_id: str) -> dict[str, Any]:
        async with self._lock:
            rec = self._record(invite_id) if invite_id.isalnum() else None
            if rec is None:
                raise NotFound(f"no invite {invite_id[:40]!r} was made here")
            rec["revoked"] = True
            await self.node.save(record_key(invite_id), rec)
            return rec

    # ------------------------------------------------------------------ the joiner's calls

    def _checked(self, text: str, joiner: str | None) -> tuple[Invite, dict[str, Any], bool]:
        """The invite in ``text``, its record, and whether ``joiner`` already redeemed it (rule 3)."""
        invite = parse_payload(text)
        if invite.by != self.identity.pubkey:
            raise InvalidInvite("this invite was made by another node")
        rec = self._record(invite.id)
        if rec is None:
            raise InvalidInvite(f"this node has no record of invite {invite.id}")
        if self.dht is not None:
            if invite.dht is None or invite.dht.name != self.dht.name:
                raise InvalidInvite(f"this invite is for another DHT than {self.dht.name!r}, the inviter's")
            if not secrets.compare_digest(invite.dht.ticket, ticket(self._secret(), invite.id)):
                raise InviteRefused("this invite was made before the DHT's invite secret was rotated")
        already = joiner is not None and any(j.get("pubkey") == joiner for j in rec.get("joined", []))
        if already:
            return invite, rec, True
        if rec.get("revoked") is True:
            raise InviteRefused(f"the invite {invite.id} was revoked by its inviter")
        if invite.exp <= self.clock():
            raise InviteRefused(f"the invite {invite.id} has expired")
        if int(rec.get("used", 0)) >= invite.uses:
            raise InviteRefused(f"the invite {invite.id} is spent: {invite.uses} of {invite.uses} uses taken")
        return invite, rec, False

    def check(self, text: str, joiner: str | None = None) -> dict[str, Any]:
        """Whether ``text`` would be redeemed now, and what it brings (the app's manifest)."""
        invite, rec, already = self._checked(text, joiner)
        out: dict[str, Any] = {
            "id": invite.id,
            "live": True,
            "joined": already,
            "uses": invite.uses,
            "used": rec.get("used", 0),
            "app": None,
        }
        if invite.app is not None:
            app = self.registry.get(invite.app.name)
            if app is not None:
                out["app"] = {"name": app.name, "hash": app.bundle_hash, "size": app.bundle.size}
        return out

    def bundle(self, text: str, joiner: str | None = None) -> tuple[bytes, Signature]:
        """The bundle of the invite's app as this node runs it now (the joiner checks its hash)."""
        invite, _, _ = self._checked(text, joiner)
        if invite.app is None:
            raise NotFound("this invite shares no app")
        app = self.registry.get(invite.app.name)
        if app is None:
            raise NotFound(f"the inviter no longer runs {invite.app.name}")
        data = self.registry.bundle_bytes(app.bundle_hash)
        if data is None:
            raise NotFound(f"the bundle of {app.name} is missing on the inviter")
        return data, app.bundle.signature

    async def redeem(self, text: str, joiner: str, sig: bytes, addrs: Sequence[str] = ()) -> dict[str, Any]:
        """Count a use of the invite for ``joiner`` (rules 1-3, 5) and hand over what it opens."""
        if not is_pubkey(joiner):
            raise InvalidValue("joiner is a public key (52 base32 characters)")
        async with self._lock:
            invite, rec, already = self._checked(text, joiner)
            if not verify_signature(joiner, redeem_message(invite.id, joiner), sig):
                raise InvalidInvite("the redeem request is not signed by the joining key")
            patterns: list[str] = []
            if invite.app is not None:
                app = self.registry.get(invite.app.name)
                if app is not None:
                    patterns = app_subtrees(app.manifest)
            if not already:
                await self._admit(joiner, patterns)
                rec["used"] = int(rec.get("used", 0)) + 1
                rec["joined"] = [*rec.get("joined", []), {"pubkey": joiner, "at": int(self.clock())}]
                await self.node.save(record_key(invite.id), rec)
        if invite.back and self.follow is not None and not already:
            for p in patterns:
                try:
                    await self.follow(f"/{joiner}/{p}", tuple(addrs)[:8])
                except StatebusError:  # a follow-back is a courtesy: the join stands
                    pass
        out: dict[str, Any] = {
            "id": invite.id,
            "inviter": self.identity.pubkey,
            "addrs": list(self.addrs),
            "follow": [f"/{self.identity.pubkey}/{p}" for p in patterns],
            "used": rec["used"],
            "uses": invite.uses,
            "back": invite.back,
            "dht": None,
        }
        if self.dht is not None:
            out["dht"] = {"name": self.dht.name, "secret": self.dht.secret.hex(), "peers": [self.dht.peer]}
        return out

    async def _admit(self, joiner: PubKey, patterns: Sequence[str]) -> None:
        """Put ``joiner`` on ``@invited`` and let that list read ``patterns`` (rule 5)."""
        list_key = f"/~/.acl/{LISTS}/{INVITED_LIST}"
        change = self.node.fetch_or_none(list_key, durable=True)
        members = (
            list(change.value)
            if change is not None and change.exists and isinstance(change.value, list)
            else []
        )
        if joiner not in members:
            await self.node.save(list_key, [*members, joiner])
        for p in patterns:
            key = rule_key("~", p)
            rule_change = self.node.fetch_or_none(key, durable=True)
            rule: dict[str, Any] = (
                dict(rule_change.value)
                if rule_change is not None and rule_change.exists and isinstance(rule_change.value, dict)
                else {}
            )
            read = rule.get("read", "owner")
            if read in ("public", "signed"):
                continue
            who = (
                [read]
                if isinstance(read, str) and read != "owner"
                else list(read)
                if isinstance(read, list)
                else []
            )
            if f"@{INVITED_LIST}" in who:
                continue
            rule["read"] = [*who, f"@{INVITED_LIST}"]
            await self.node.save(key, rule)


def _fields(invite: Invite) -> dict[str, Any]:
    return {name: getattr(invite, name) for name in Invite.__dataclass_fields__}


__all__ = ["INVITES", "DhtAccess", "Ledger", "app_subtrees", "record_key", "redeem_message"]
