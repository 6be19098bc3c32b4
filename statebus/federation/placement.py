"""Placement: how many copies of each subtree of this node's namespace exist, across this node, the
owner's other devices and its mirrors, against how many the owner wants.

Rules:

1. A rule says "keep at least N copies of this subtree": ``mirror_copies`` is the rule for ``/~/``,
   and each ``mirror_placement`` entry ``SUBTREE=N`` (``/~/photos/=3``) adds one. A subtree is in
   this node's namespace and ends with ``/``.
2. This node is one copy of every subtree. A mirror holds the whole namespace (as ciphertext): it
   counts for every subtree when it is complete (:attr:`~statebus.mirror.push.MirrorStatus.complete`).
3. A device (``mirror_devices``, ``PUBKEY@URL``) is a node of the same owner: its key holds a live
   delegation of ours covering the subtree, and it follows us, so it holds the plaintext. It counts
   for a subtree when the node at its URL answers with its pubkey and an anti-entropy exchange for
   the subtree, signed by this node and sending nothing, finds no op of ours that it lacks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from statebus.errors import InvalidValue, RemoteError, StatebusError
from statebus.federation.client import PeerClient
from statebus.federation.opset import op_set
from statebus.federation.sync import SyncRequest, SyncSession, diff
from statebus.identity.delegation import parse_record, record_key
from statebus.keys import is_pubkey
from statebus.mirror.push import MirrorStatus, check_url
from statebus.runtime import Node

MAX_ROUNDS = 64
"""Anti-entropy rounds a device check may take before it counts the device as not answering."""


@dataclass(frozen=True, slots=True)
class Device:
    pubkey: str
    url: str


@dataclass(slots=True)
class DeviceCopy:
    device: Device
    subtree: str
    lacking: int = -1
    """Ops of ours under the subtree the device does not hold (-1: not known)."""
    error: str = ""

    @property
    def complete(self) -> bool:
        return not self.error and self.lacking == 0


@dataclass(slots=True)
class Placement:
    """One rule and what holds a copy of its subtree."""

    subtree: str
    wanted: int
    holders: list[str] = field(default_factory=list)
    """``this node``, ``device <pubkey>``, ``mirror <url>``: each complete copy."""

    @property
    def have(self) -> int:
        return len(self.holders)

    @property
    def short(self) -> int:
        return max(0, self.wanted - self.have)


def rules(local: str, copies: int, placement: tuple[str, ...]) -> dict[str, int]:
    """``subtree (/<local>/…/) → copies wanted`` (rule 1). Raises InvalidValue with the reason."""
    out = {f"/{local}/": copies}
    for entry in placement:
        subtree, sep, n = entry.strip().rpartition("=")
        if subtree.startswith("/~/"):
            subtree = f"/{local}/" + subtree[3:]
        if not sep or not n.isdigit() or not 1 <= int(n) <= 100:
            raise InvalidValue(f"mirror_placement {entry!r}: write SUBTREE=N, N from 1 to 100 (/~/photos/=3)")
        if not subtree.startswith(f"/{local}/") or not subtree.endswith("/") or "//" in subtree[1:]:
            raise InvalidValue(f"mirror_placement {entry!r}: the subtree is /~/…/ (in this node's namespace)")
        out[subtree] = int(n)
    return out


def devices(entries: tuple[str, ...]) -> list[Device]:
    """The ``mirror_devices`` entries (``PUBKEY@URL``). Raises InvalidValue with the reason."""
    out = []
    for entry in entries:
        pk, sep, url = entry.strip().partition("@")
        if not sep or not is_pubkey(pk):
            raise InvalidValue(f"mirror_devices {entry!r}: write PUBKEY@URL (a device node of this owner)")
        try:
            out.append(Device(pk, check_url(url)))
        except InvalidValue:
            raise InvalidValue(f"mirror_devices {entry!r}: the URL is http(s)://host:port") from None
    return out


def _delegation_problem(node: Node, device: str, subtree: str) -> str | None:
    change = node.fetch_or_none(record_key(node.local, device))
    if change is None or not change.exists:
        return f"no delegation of ours for {device}"
    try:
        rec = parse_record(change.value, change.key)
    except StatebusError as exc:
        return f"its record is not a delegation ({exc.detail})"
    if rec.revoked:
        return f"{device} was revoked"
    if (why := rec.check_time(time.time())) is not None:
        return why
    if not rec.covers(subtree + "x"):
        return f"its delegation does not cover {subtree}"
    return None


async def check_device(node: Node, client: PeerClient, device: Device, subtree: str) -> DeviceCopy:
    """Whether ``device`` holds every op of ours under ``subtree`` (rule 3)."""
    out = DeviceCopy(device, subtree)
    if (why := _delegation_problem(node, device.pubkey, subtree)) is not None:
        out.error = why
        return out
    try:
        if (pk := await client.node_info(device.url)) != device.pubkey:
            out.error = f"{device.url} answers as {pk}, not {device.pubkey}"
            return out
        ours = op_set(node, subtree)
        session = SyncSession(subtree, ours.index)  # no ops to send: it only compares
        lacking: set[bytes] = set()
        request: SyncRequest | None = session.start()
        while request is not None:
            if session.rounds >= MAX_ROUNDS:
                raise InvalidValue(f"anti-entropy with {device.url} did not settle")
            response, _ = await client.sync_round(device.url, request)
            d = diff(ours.index, response.ranges, session.leaf)
            lacking |= (d.offer | set(response.want)) & ours.ops.keys()
            request = session.receive(response)
            session.take()
        out.lacking = len(lacking)
    except RemoteError as exc:
        out.error = f"{exc.remote_code or exc.code}: {exc.detail}"
    except StatebusError as exc:
        out.error = f"{exc.code}: {exc.detail}"
    return out


def place(
    wanted: dict[str, int], mirrors: list[MirrorStatus], device_copies: list[DeviceCopy]
) -> list[Placement]:
    """Each rule with the complete copies of its subtree (rules 2 and 3), broadest subtree first."""
    out = []
    for subtree in sorted(wanted, key=lambda s: (s.count("/"), s)):
        p = Placement(subtree, wanted[subtree], ["this node"])
        p.holders += [
            f"device {c.device.pubkey}" for c in device_copies if c.subtree == subtree and c.complete
        ]
        p.holders += [f"mirror {m.url}" for m in mirrors if m.complete]
        out.append(p)
    return out


async def placement(
    node: Node,
    client: PeerClient,
    wanted: dict[str, int],
    mirrors: list[MirrorStatus],
    device_list: list[Device],
) -> tuple[list[Placement], list[DeviceCopy]]:
    """Check every device for every subtree of the rules, and count the copies."""
    checked = [await check_device(node, client, d, s) for s in wanted for d in device_list]
    return place(wanted, mirrors, checked), checked
