"""Clock skew between machines (issue 9, defect 12): NTP-level skew (a minute) never stops federation.

Live nodes in this process (uvicorn on 127.0.0.1 port 0, a real DHT); one machine's clock is shifted
by injecting the clock its signatures take their ``created`` from.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import httpx
import pytest

import statebus.federation.client
from statebus.cli.signed import OP_MEDIA_TYPE, make_op
from statebus.identity import Identity, delegate, sign_request
from statebus.identity.delegation import record_key
from statebus.oplog import encode_op
from statebus.server import Cluster

from .support import has, wait_until

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("offset", [10, 60, -60])
async def test_a_follower_a_minute_off_syncs(
    cluster: Cluster, offset: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a follower 10 s fast got 401 "signature was created in the future" on every request."""

    def skewed(*args: Any, created: float | None = None, **kw: Any) -> dict[str, str]:
        return sign_request(*args, created=(created if created is not None else time.time()) + offset, **kw)

    a, b = await cluster.add("a"), await cluster.add("b")
    # peer requests are signed in statebus.federation.client; only B makes any in this test
    monkeypatch.setattr(statebus.federation.client, "sign_request", skewed)
    await a.share("/~/chirp/")
    await a.node.save("/~/chirp/1", {"text": "before"})
    chirp = f"/{a.pubkey}/chirp/"
    await b.follow(chirp)
    await wait_until(functools.partial(has, b, chirp + "1"), what="the backlog at the skewed follower")
    await a.node.save("/~/chirp/2", {"text": "live"})
    await wait_until(functools.partial(has, b, chirp + "2"), what="a live write at the skewed follower")


async def test_skew_beyond_the_bound_is_refused_with_the_reason(cluster: Cluster) -> None:
    a = await cluster.add("a", max_clock_skew=30)
    stranger = Identity.generate()
    url = f"{a.url}/{a.pubkey}/public/x"
    async with httpx.AsyncClient() as http:
        req = http.build_request("GET", url)
        req.headers.update(sign_request("GET", url, req.headers, b"", stranger, created=time.time() + 90))
        r = await http.send(req)
    assert r.status_code == 401
    assert "in the future; clocks may differ by at most 30s" in r.json()["detail"]


async def test_a_delegate_device_a_minute_fast_writes_at_once(cluster: Cluster) -> None:
    """The owner's laptop and the device both run 60 s fast: the delegation starts "now" on their
    clock, a minute in the node's future, and the device's signed requests are dated a minute ahead."""
    a = await cluster.add("a")
    owner, device = a.identity, Identity.generate()
    fast = time.time() + 60
    record = delegate(owner, device.pubkey, [f"/{a.pubkey}/notes/"], issued=1, not_before=int(fast))
    await a.node.save(record_key(a.pubkey, device.pubkey), record.to_json())
    key = f"/{a.pubkey}/notes/1"
    op = make_op(device, key, "set", {"from": "device"})
    async with httpx.AsyncClient() as http:
        req = http.build_request(
            "PUT", f"{a.url}{key}", content=encode_op(op), headers={"Content-Type": OP_MEDIA_TYPE}
        )
        req.headers.update(sign_request("PUT", str(req.url), req.headers, req.content, device, created=fast))
        r = await http.send(req)
    assert r.status_code == 200, r.text
    assert a.node.fetch(key).value == {"from": "device"}
