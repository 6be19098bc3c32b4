"""The node's DHT presence as JSON documents, for the HTTP routes (:mod:`statebus.http.dht`):
its own record as published, and lookups of other public keys' records.

    view = DhtView(directory)
    view.own()                     # {"pubkey", "dht", "addrs", "seq", "expires", "signature",
                                   #  "signed", "published", "stored_on", "holders", "checked"}
    await view.lookup(pubkey)      # {"pubkey", "dht", "addrs", "seq", "expires", "signature", "signed"}

Rules:
    1. A document holds what the DHT serves to anyone (the signed record: its fields, its signature and
       its wire bytes, base64, so a reader can check it), plus, for the node's own record, the
       publisher's counters: when it was published, to how many DHT nodes it was stored, how many held
       it at the last self-check and when that ran. Never the DHT's invite secret.
    2. At most :data:`MAX_LOOKUPS` lookups run at once (one more is refused, 429), each bounded by
       :data:`LOOKUP_TIMEOUT` seconds; a lookup that finds nothing is ``None``, not an error.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from statebus.errors import NotFound, PeerUnavailable, RateLimited
from statebus.federation.dht import KademliaDirectory
from statebus.federation.dht_record import SIGNATURE_BYTES, NodeRecord
from statebus.keys.paths import decode_pubkey

MAX_LOOKUPS = 4
LOOKUP_TIMEOUT = 10.0


def record_document(record: NodeRecord, signed: bytes | None) -> dict[str, Any]:
    """A record as JSON: its fields, and its signature and wire bytes (base64) when known."""
    return {
        "pubkey": record.pubkey,
        "dht": record.dht,
        "addrs": list(record.addrs),
        "seq": record.seq,
        "expires": record.expires,
        "signature": base64.b64encode(signed[:SIGNATURE_BYTES]).decode() if signed else None,
        "signed": base64.b64encode(signed).decode() if signed else None,
    }


class DhtView:
    """Read-only documents of ``directory`` (a started :class:`KademliaDirectory`, or None while the
    node is in no DHT; a node that enters one by invite points :attr:`directory` at it)."""

    def __init__(self, directory: KademliaDirectory | None) -> None:
        self.directory = directory
        self._running = 0

    def own(self) -> dict[str, Any]:
        """The node's own record as last published (``record`` null before the first publish; ``dht``
        null too when the node is in no DHT)."""
        d = self.directory
        if d is None:
            return {"dht": None, "record": None}
        doc: dict[str, Any] = {
            "dht": d.dht_name,
            "pubkey": d.pubkey,
            "record": record_document(d.record, d.signed) if d.record is not None else None,
            "published": d.published_at,
            "stored_on": d.last_acks,
            "holders": d.last_holders,
            "checked": d.checked_at,
            "neighbours": d.neighbours(),
        }
        return doc

    async def lookup(self, pubkey: str) -> dict[str, Any] | None:
        """``pubkey``'s newest record in the DHT, or None.

        Raises:
            InvalidKey: ``pubkey`` is not 52 base32 characters (400).
            RateLimited: :data:`MAX_LOOKUPS` lookups already run (429).
            PeerUnavailable: the lookup took over :data:`LOOKUP_TIMEOUT` seconds (502).
        """
        decode_pubkey(pubkey)
        directory = self.directory
        if directory is None:
            raise NotFound("this node is in no DHT (it runs without one)")
        if self._running >= MAX_LOOKUPS:
            raise RateLimited(f"{MAX_LOOKUPS} DHT lookups are running; try again in a moment")
        self._running += 1
        try:
            record = await asyncio.wait_for(directory.resolve(pubkey), LOOKUP_TIMEOUT)
        except TimeoutError:
            raise PeerUnavailable(f"the DHT lookup took over {LOOKUP_TIMEOUT:g} s") from None
        finally:
            self._running -= 1
        if record is None:
            return None
        return record_document(record, directory.signed_record(record.pubkey))
