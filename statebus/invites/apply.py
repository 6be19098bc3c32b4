"""What a join writes on the joining node, once the invite was redeemed: the DHT membership, the app,
the follows of the inviter's app data, the follow-back grant, and the ``/~/.joined/<id>`` record.
The same steps for ``statebus join`` on a stopped node (:mod:`statebus.cli.joining`) and for a running
node that performs the join itself (:mod:`statebus.invites.node_join`).

Rules:
    1. A step that fails undoes those before it (the membership file, a new app, the follows) and
       keeps the identity; the same command then finishes the join (the inviter counts no second use).
       An upgrade the owner consented to stays. A running node that already entered the invite's DHT
       stays in it (the membership file goes, the next start reads its settings again).
    2. The error names the step and its reason, and says the same command finishes it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from statebus.apps.bundle import Bundle
from statebus.apps.registry import AppRegistry
from statebus.errors import CliError, StatebusError
from statebus.federation.policy import FOLLOWS, new_follow
from statebus.invites.ledger import INVITED_LIST, app_subtrees
from statebus.invites.membership import Membership, read_membership, write_membership
from statebus.invites.payload import Invite
from statebus.runtime import Node

EnterDht = Callable[[Membership], Awaitable[None]]
"""How a running node enters the DHT it just became a member of (None: at its next start)."""


async def apply_join(
    node: Node,
    registry: AppRegistry,
    data_dir: str | Path,
    invite: Invite,
    answer: dict[str, Any],
    bundle: Bundle | None,
    *,
    enter: EnterDht | None = None,
) -> None:
    """Write the membership, the app, the follows; undo them all if one fails (rules 1-2)."""
    data = Path(data_dir)
    had_member = read_membership(data)
    done: list[str] = []
    step = "the DHT membership"
    try:
        dht = answer.get("dht")
        if dht is not None and had_member is None:
            member = Membership(dht["name"], bytes.fromhex(dht["secret"]), tuple(dht["peers"]))
            write_membership(data, member)
            done.append("membership")
            if enter is not None:
                step = "entering the DHT"
                await enter(member)
        if bundle is not None:
            step = f"installing {bundle.manifest.name}"
            current = registry.get(bundle.manifest.name)
            if current is None or current.bundle_hash != bundle.hash:  # install, or upgrade to the invite's
                await registry.install(bundle, bundle.manifest.permissions)
                done.append("app" if current is None else "upgraded")
        step = "following the inviter"
        for pattern in answer.get("follow", []):
            f = new_follow(node.local, pattern, tuple(answer.get("addrs", []))[:8])
            await node.save(f"/~/{FOLLOWS}/{f.id}", f.to_json())
            done.append(f"/~/{FOLLOWS}/{f.id}")
        if invite.back and bundle is not None:  # let the inviter read what it follows back
            step = "opening the app's data to the inviter"
            await node.save(f"/~/.acl/.lists/{INVITED_LIST}", [invite.by])
            for p in app_subtrees(bundle.manifest):
                await node.save(f"/~/.acl/{p.strip('/')}", {"read": [f"@{INVITED_LIST}"]})
        await node.save(
            f"/~/.joined/{invite.id}",
            {"by": invite.by, "at": int(time.time()), "dht": (dht or {}).get("name")},
        )
    except (StatebusError, OSError) as exc:
        reason = exc.detail or exc.code if isinstance(exc, StatebusError) else str(exc)
        for item in reversed(done):
            try:
                if item == "membership":
                    (data / "dht.json").unlink(missing_ok=True)
                elif item == "app" and bundle is not None:
                    await registry.remove(bundle.manifest.name)
                elif item == "upgraded":  # an upgrade the owner consented to stays; the rerun keeps it
                    continue
                else:
                    await node.delete(item)
            except StatebusError:
                pass
        raise CliError(
            f"the join stopped at {step}: {reason}; what it wrote was undone: "
            "run the same command again to finish"
        ) from None


__all__ = ["EnterDht", "apply_join"]
