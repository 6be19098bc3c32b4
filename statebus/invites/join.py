"""The joiner's side: talk to the inviter's node before anything is written.

    inviter = Inviter(invite, joiner_pubkey)          tries the invite's addresses in order
    status = inviter.check()                           live? spent? (InviteRefused with the reason)
    bundle = inviter.fetch_bundle(max_bytes, progress)  the app, checked against the invite's hash
    answer = inviter.redeem(identity)                   counts a use; the DHT secret, the follows

Rules:
    1. Nothing here writes anything: the command (:mod:`statebus.cli.invites`) writes the joining
       node's data folder only after every check passed and the invite was redeemed.
    2. The bundle must hash to the sha256 the signed invite names, carry a valid signature by its
       author, and be the invite's app; otherwise :class:`InvalidBundle` and nothing is installed.
    3. An inviter that no address answers is :class:`PeerUnavailable` naming every address tried;
       an inviter that answers with a refusal keeps its reason and class (:class:`InviteRefused`,
       :class:`InvalidInvite`).
    4. Transfers report progress through ``progress(done, total)`` as the bytes arrive.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

import httpx

from statebus.apps.bundle import Bundle, Signature, bundle_hash, open_bundle
from statebus.errors import (
    InvalidBundle,
    InvalidInvite,
    InviteRefused,
    PeerUnavailable,
    RemoteError,
    TooLarge,
)
from statebus.identity import Identity
from statebus.invites.ledger import redeem_message
from statebus.invites.payload import Invite
from statebus.invites.routes import INVITES_PATH, SIGNATURE_HEADER

Progress = Callable[[int, int], None]
TIMEOUT = 15.0


class Inviter:
    """The inviter's node, reached at the first of the invite's addresses that answers."""

    def __init__(self, invite: Invite, joiner: str, *, timeout: float = TIMEOUT) -> None:
        self.invite = invite
        self.joiner = joiner
        self.timeout = timeout
        self.url: str | None = None

    def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        urls = [self.url] if self.url is not None else [a.rstrip("/") for a in self.invite.addrs]
        failures = []
        for url in urls:
            try:
                with httpx.Client(timeout=self.timeout, trust_env=False) as http:
                    r = http.post(url + INVITES_PATH + path, json=body)
            except httpx.HTTPError as exc:
                failures.append(f"{url} ({type(exc).__name__})")
                continue
            self.url = url
            _raise_for(r)
            return r
        raise PeerUnavailable(f"cannot reach the inviter: tried {', '.join(failures)}")

    def check(self) -> dict[str, Any]:
        return dict(self._post("/check", {"invite": self.invite.text, "joiner": self.joiner}).json())

    def fetch_bundle(self, max_bytes: int, progress: Progress | None = None) -> Bundle:
        """The invite's app bundle, checked (rule 2), its progress reported (rule 4)."""
        ref = self.invite.app
        assert ref is not None
        if self.url is None:
            self.check()
        body = {"invite": self.invite.text, "joiner": self.joiner}
        try:
            with (
                httpx.Client(timeout=self.timeout, trust_env=False) as http,
                http.stream("POST", f"{self.url}{INVITES_PATH}/bundle", json=body) as r,
            ):
                if r.status_code >= 400:
                    r.read()
                    _raise_for(r)
                total = int(r.headers.get("content-length") or ref.size)
                data = bytearray()
                for chunk in r.iter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        raise TooLarge(
                            f"the inviter's bundle is over {max_bytes} bytes (app_bundle_max_bytes)"
                        )
                    if progress is not None:
                        progress(len(data), total)
                sig_text = r.headers.get(SIGNATURE_HEADER, "")
        except httpx.HTTPError as exc:
            raise PeerUnavailable(
                f"the bundle transfer from {self.url} failed: {type(exc).__name__}"
            ) from None
        try:
            signature = Signature.parse(base64.b64decode(sig_text, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidBundle("the inviter sent the bundle without a readable signature") from None
        got = bundle_hash(bytes(data))
        if got != ref.hash:
            raise InvalidBundle(
                f"the inviter sent {ref.name} with sha256 {got[:16]}…, not the {ref.hash[:16]}… the invite "
                "names (the inviter runs another version now, or the bytes were changed): nothing installed"
            )
        bundle = open_bundle(bytes(data), signature, max_bytes, expect_hash=ref.hash)
        if bundle.manifest.name != ref.name or f"/{bundle.manifest.author}/.apps/{ref.name}" != ref.key:
            raise InvalidBundle(
                f"the inviter sent {bundle.manifest.name} by {bundle.manifest.author}, not {ref.key}"
            )
        return bundle

    def redeem(self, identity: Identity, addrs: list[str] | None = None) -> dict[str, Any]:
        sig = identity.sign(redeem_message(self.invite.id, identity.pubkey))
        body = {
            "invite": self.invite.text,
            "joiner": identity.pubkey,
            "sig": base64.b64encode(sig).decode(),
            "addrs": addrs or [],
        }
        return dict(self._post("/redeem", body).json())


def _raise_for(r: httpx.Response) -> None:
    """An inviter's refusal as the same error class it had there (rule 3)."""
    if r.status_code < 400:
        return
    try:
        doc = json.loads(r.read())
        code, detail = str(doc.get("error", "")), str(doc.get("detail", ""))
    except (ValueError, AttributeError):
        code, detail = "", r.reason_phrase
    if code == "invite_refused":
        raise InviteRefused(detail)
    if code == "invalid_invite":
        raise InvalidInvite(detail)
    raise RemoteError(
        f"the inviter refused: {detail or code} (HTTP {r.status_code})",
        status_hint=r.status_code,
        remote_code=code,
    )


__all__ = ["Inviter", "Progress"]
