"""A running node joins with an invite: ``statebus join LINK`` against a running node hands the link
here (the owner's routes, :mod:`statebus.invites.routes`), and the node does what a stopped node's join
does (:mod:`statebus.cli.joining`), reporting its progress as it goes.

    joins = NodeJoins(ledger, max_bytes=…, bound_dht=None, enter=…)   one per node (statebus.server)
    pending = await joins.prepare(link)            checks the link and asks the inviter (4xx if refused)
    async for event in joins.fetch(pending): …     {"state": "fetching", "done", "total"} …, then
                                                   {"state": "ready", "ticket", "app": {…} | null}
    summary = await joins.finish(ticket)           redeem, write (statebus.invites.apply): what it did

Rules:
    1. The checks of a stopped node's join: the link's signature and expiry, not this node's own
       invite, not another DHT than the one this node is bound to (``bound_dht``), and the inviter's
       word; a refused link raises before anything is fetched or written.
    2. Nothing is written to the store before :meth:`finish`, which the caller sends once the owner
       consented to the app's permissions; a ticket is used once, within :data:`TICKET_TTL` seconds.
    3. Progress: every step, and the bundle's bytes as they arrive (at most every
       :data:`PROGRESS_EVERY` seconds, and the last), go to the caller as events and to
       :attr:`NodeJoins.progress` (``{"id", "by", "app", "state", "done", "total", "at"}`` by invite
       id, in memory: a refused link writes nothing to the store), which the owner's
       ``GET /.well-known/statebus/invites/joins`` serves and the node's page shows. The DHT's network
       secret is never in an event, the progress or a summary.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from statebus.apps.bundle import Bundle
from statebus.apps.manifest import permission_lines
from statebus.errors import InvalidInvite, NotFound, StatebusError
from statebus.invites.apply import EnterDht, apply_join
from statebus.invites.join import Inviter
from statebus.invites.ledger import Ledger
from statebus.invites.membership import read_membership
from statebus.invites.payload import Invite, parse_link

TICKET_TTL = 600.0
PROGRESS_EVERY = 0.25
MAX_SHOWN = 20
"""Joins :attr:`NodeJoins.progress` remembers."""


@dataclass
class PendingJoin:
    """A checked link waiting for its bundle and the owner's consent."""

    invite: Invite
    inviter: Inviter
    status: dict[str, Any]
    bundle: Bundle | None = None
    ticket: str = ""
    made: float = 0.0


class NodeJoins:
    """The joins a running node performs (every rule above)."""

    def __init__(
        self, ledger: Ledger, *, max_bytes: int, bound_dht: str | None, enter: EnterDht | None
    ) -> None:
        self.ledger = ledger
        self.max_bytes = max_bytes
        self.bound_dht = bound_dht
        self.enter = enter
        self._pending: dict[str, PendingJoin] = {}
        self.progress: dict[str, dict[str, Any]] = {}
        """The joins this node ran since it started, by invite id, newest last (rule 3)."""

    def _report(self, invite: Invite, state: str, done: int | None = None, total: int | None = None) -> None:
        last = self.progress.pop(invite.id, {})  # a later step keeps the bundle's bytes
        done = done if done is not None else int(last.get("done", 0))
        total = total if total is not None else int(last.get("total", 0))
        self.progress[invite.id] = {
            "id": invite.id,
            "by": invite.by,
            "app": invite.app.name if invite.app else None,
            "state": state,
            "done": done,
            "total": total,
            "at": int(time.time()),
        }
        while len(self.progress) > MAX_SHOWN:
            del self.progress[next(iter(self.progress))]

    async def prepare(self, link: str) -> PendingJoin:
        """Check ``link`` here and at the inviter (rule 1)."""
        invite = parse_link(link, time.time())
        if invite.by == self.ledger.identity.pubkey:
            raise InvalidInvite("this is this node's own invite")
        member = read_membership(self.ledger.dir.parent)
        mine = member.name if member is not None else self.bound_dht
        if invite.dht is not None and mine is not None and invite.dht.name != mine:
            raise InvalidInvite(f"this invite is for the DHT {invite.dht.name!r}; this node is in {mine!r}")
        inviter = Inviter(invite, self.ledger.identity.pubkey)
        status = await asyncio.to_thread(inviter.check)
        self._report(invite, "checked")
        return PendingJoin(invite, inviter, status)

    async def fetch(self, pending: PendingJoin) -> AsyncIterator[dict[str, Any]]:
        """The bundle's progress, then ``ready`` with the ticket :meth:`finish` takes (rules 2-3)."""
        invite = pending.invite
        if invite.app is not None:
            current = self.ledger.registry.get(invite.app.name)
            if current is not None and current.bundle_hash == invite.app.hash:
                pending.bundle = current.bundle  # a join run again: the app is already this one
            else:
                async for event in self._fetch_bundle(pending):
                    yield event
        pending.ticket, pending.made = secrets.token_urlsafe(16), time.monotonic()
        self._pending = {t: p for t, p in self._pending.items() if time.monotonic() - p.made < TICKET_TTL}
        self._pending[pending.ticket] = pending
        self._report(invite, "waiting for consent" if pending.bundle is not None else "ready")
        yield {"state": "ready", "ticket": pending.ticket, "app": app_summary(pending.bundle)}

    async def _fetch_bundle(self, pending: PendingJoin) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        last = [0.0]

        def progress(done: int, total: int) -> None:  # in the transfer's thread
            now = time.monotonic()
            if done < total and now - last[0] < PROGRESS_EVERY:
                return
            last[0] = now
            loop.call_soon_threadsafe(events.put_nowait, (done, total))

        task = asyncio.ensure_future(
            asyncio.to_thread(pending.inviter.fetch_bundle, self.max_bytes, progress)
        )
        try:
            while not task.done() or not events.empty():
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    continue
                done, total = getter.result()
                self._report(pending.invite, "fetching", done, total)
                yield {"state": "fetching", "done": done, "total": total}
            pending.bundle = task.result()
        except StatebusError as exc:
            self._report(pending.invite, f"failed: {exc.detail or exc.code}")
            raise
        finally:
            if not task.done():
                task.cancel()

    async def finish(self, ticket: str) -> dict[str, Any]:
        """Redeem the invite and write what it brings (rule 2); what was done, without secrets."""
        pending = self._pending.pop(ticket, None)
        if pending is None or time.monotonic() - pending.made > TICKET_TTL:
            raise NotFound("no such join waiting (it finished, or its ticket is over 10 minutes old)")
        invite = pending.invite
        self._report(invite, "joining")
        try:
            answer = await asyncio.to_thread(
                pending.inviter.redeem, self.ledger.identity, list(self.ledger.addrs)
            )
            await apply_join(
                self.ledger.node,
                self.ledger.registry,
                self.ledger.dir.parent,
                invite,
                answer,
                pending.bundle,
                enter=self.enter,
            )
        except StatebusError as exc:
            self._report(invite, f"failed: {exc.detail or exc.code}")
            raise
        self._report(invite, "joined")
        dht = answer.get("dht")
        return {
            "invite": invite.id,
            "by": invite.by,
            "pubkey": self.ledger.identity.pubkey,
            "dht": {"name": dht["name"], "peers": dht["peers"]} if dht else None,
            "app": app_summary(pending.bundle),
            "follow": list(answer.get("follow", [])),
            "back": bool(answer.get("back")),
            "used": answer.get("used"),
            "uses": answer.get("uses"),
        }


def app_summary(bundle: Bundle | None) -> dict[str, Any] | None:
    """What the owner consents to: the app, its bundle, and its permissions as lines."""
    if bundle is None:
        return None
    m = bundle.manifest
    return {
        "name": m.name,
        "version": m.version,
        "author": m.author,
        "description": m.description,
        "hash": bundle.hash,
        "size": bundle.size,
        "signer": bundle.signature.signer,
        "permissions": permission_lines(m.permissions),
    }


__all__ = ["NodeJoins", "PendingJoin", "app_summary"]
