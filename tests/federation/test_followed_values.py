"""A followed peer's page, replicated to the follower and served from the follower's origin, opened in
headless Chromium by the follower's owner (logged in with the cookie): its script gets nowhere
(docs/trust-model.md, hardening 1)."""

from __future__ import annotations

import functools
import secrets

import anyio
import httpx
import pytest

from statebus.server import Cluster
from statebus.testing.planted import assert_sandboxed, collector, html_page, svg_image, visit_args
from tests.support.node_harness import browser_available, run_browser

from .support import has, wait_until

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium"),
]


async def test_a_followed_peer_s_page_can_do_nothing_as_the_follower_s_owner(cluster: Cluster) -> None:
    a, b = await cluster.add("a"), await cluster.add("b")
    secret = "b-only-" + secrets.token_hex(8)
    async with httpx.AsyncClient(base_url=b.url, headers={"Authorization": f"Bearer {b.token}"}) as owner:
        assert (await owner.put("/~/secret/x", json={"secret": secret})).status_code == 200
    with collector() as loot:
        await a.share("/~/site/")
        await a.node.save("/~/site/page", html_page(loot.url), content_type="text/html")
        await a.node.save("/~/site/picture", svg_image(loot.url), content_type="image/svg+xml")
        site = f"/{a.pubkey}/site/"
        await b.follow(site)
        await wait_until(
            lambda: has(b, site + "page") and has(b, site + "picture"), what="the replicated pages"
        )
        urls = [f"{b.url}{site}{name}{view}" for name in ("page", "picture") for view in ("", "?view")]
        browse = functools.partial(
            run_browser, f"{b.url}/login?token={b.token}", None, 120, wait=None, extra_args=visit_args(urls)
        )
        out = await anyio.to_thread.run_sync(browse)
    async with httpx.AsyncClient(base_url=b.url, headers={"Authorization": f"Bearer {b.token}"}) as owner:
        pwned = await owner.get("/~/pwned")
    assert out["ok"], out
    assert loot.loot == [], f"a followed peer's page reported back: {loot.loot}"
    assert pwned.status_code == 404, f"a followed peer's page wrote /~/pwned: {pwned.text}"
    assert_sandboxed(out["visits"], urls)
