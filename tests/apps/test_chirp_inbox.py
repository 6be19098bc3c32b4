"""chirp's inbox on three real nodes: notices from strangers reach the author (issue 12).

A shares chirp/ and opens its inbox (``/~/.acl/inbox`` = ``{"write": "signed"}``). C follows A;
A does not follow C. C replies to A's post and likes it: C's node sends each as a notice signed by C
(chirp's on_write, the node's courier) to A's node, which checks it (rules, guest rate and quota,
chirp's validateNotice) and stores it at ``/<A>/inbox/chirp/<C>/…``. B, whom A blocked, does the
same: A's node refuses B's notice and never stores it. Fresh keys then hit A's node directly, as
signed HTTP clients: over the guest rate (429), over the guest quota (413), a 300-character notice
(422), a body over the value limit (413), a notice naming another sender (422), an op signed by
another key than its author (401), a notice about a post A never wrote (422), and a closed inbox.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import httpx
import pytest

from statebus.identity import Identity, sign_op, sign_request
from statebus.oplog import Op, encode_op, mint_version, signing_bytes
from statebus.oplog.codec import with_signature
from statebus.server import Cluster, RunningNode
from tests.federation.support import wait_until
from tests.support.chirp import install_chirp

pytestmark = pytest.mark.anyio

OP_TYPE = "application/vnd.statebus.op+json"


def inbox(node: RunningNode, sender: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in node.node.children(f"/~/inbox/chirp/{sender}/", limit=1000):
        change = node.node.fetch_or_none(f"/~/inbox/chirp/{sender}/{name}")
        if change is not None and change.exists:
            out[name] = change.value
    return out


def notice_op(
    me: Identity, owner: str, sender: str, name: str, value: Any, signer: Identity | None = None
) -> bytes:
    """A notice op authored by ``me``, signed by ``signer`` (another key: a forgery) or by ``me``."""
    op = Op(f"/{owner}/inbox/chirp/{sender}/{name}", "", (), me.pubkey, 1, "lww", "set", value)
    op = dataclasses.replace(op, version=mint_version(op))
    if signer is None:
        return encode_op(sign_op(op, me))
    return encode_op(with_signature(op, signer.sign(signing_bytes(op))))


async def put_op(http: httpx.AsyncClient, me: Identity, key: str, body: bytes) -> httpx.Response:
    req = http.build_request("PUT", key, content=body, headers={"content-type": OP_TYPE})
    req.headers.update(sign_request(req.method, str(req.url), req.headers, body, me))
    return await http.send(req)


@pytest.mark.timeout(180)
async def test_stranger_notices_reach_the_author_within_the_speed_bumps(
    cluster: Cluster, tmp_path: Path
) -> None:
    a = await cluster.add("a", guest_write_rate="4/minute", guest_quota_bytes=3000)
    b, c = await cluster.add("b"), await cluster.add("c")
    for n in (a, b, c):
        await install_chirp(n.url, n.token, tmp_path)
        await n.share("/~/chirp/")
    await a.node.save("/~/.acl/inbox", {"write": "signed"})
    await a.node.save("/~/chirp/posts/p1", {"text": "hello from A", "at": 1})
    post = f"/{a.pubkey}/chirp/posts/p1"
    await c.follow(f"/{a.pubkey}/chirp/", via=[a.url])
    await b.follow(f"/{a.pubkey}/chirp/", via=[a.url])
    await wait_until(lambda: c.node.fetch_or_none(post) is not None, what="A's post at C")
    await a.node.save(f"/~/chirp/blocks/{b.pubkey}", {"at": 2})

    # C, whom A does not follow, replies and likes; B, whom A blocked, replies.
    await c.node.save("/~/chirp/posts/r1", {"text": "hi A, from a stranger", "at": 3, "reply_to": post})
    await c.node.save(f"/~/chirp/likes/{a.pubkey}-p1", {"post": post, "at": 4})
    await c.node.save(f"/~/chirp/follows/{a.pubkey}", {"at": 5})
    await b.node.save("/~/chirp/posts/r2", {"text": "blocked reply", "at": 6, "reply_to": post})
    await wait_until(lambda: len(inbox(a, c.pubkey)) == 3, what="C's three notices on A's node")
    got = inbox(a, c.pubkey)
    assert got["reply-r1"] == {
        "type": "reply",
        "from": f"/{c.pubkey}/chirp/posts/r1",
        "post": post,
        "text": "hi A, from a stranger",
        "at": 3,
    }
    assert got[f"like-{a.pubkey}-p1"]["type"] == "like" and got["follow"]["type"] == "follow"
    assert a.node.fetch_or_none(f"/{c.pubkey}/chirp/posts/r1") is None  # A holds no replica of C
    assert a.federation is not None and c.federation is not None and b.federation is not None
    await wait_until(lambda: b.federation.courier.stats.refused == 1, what="B's notice refused")
    assert "is blocked here" in (b.federation.courier.stats.last_refusal or "")
    assert inbox(a, b.pubkey) == {}
    assert c.federation.courier.stats.sent == 3 and c.federation.courier.stats.refused == 0

    async with httpx.AsyncClient(base_url=a.url, timeout=20, trust_env=False) as http:
        # a flood from one fresh key: 4 a minute, then 429 with Retry-After; nothing more stored
        flood = Identity.generate()
        codes = []
        for i in range(6):
            value = {"type": "reply", "from": f"/{flood.pubkey}/chirp/posts/f{i}", "post": post, "at": i}
            body = notice_op(flood, a.pubkey, flood.pubkey, f"f{i}", value)
            r = await put_op(http, flood, f"/{a.pubkey}/inbox/chirp/{flood.pubkey}/f{i}", body)
            codes.append(r.status_code)
        assert codes == [200, 200, 200, 200, 429, 429], codes
        assert "retry-after" in r.headers and r.json()["error"] == "rate_limited", r.text
        assert len(inbox(a, flood.pubkey)) == 4

        # the quota of one key's notices (3000 bytes): full texts of 280 three-byte characters
        big = Identity.generate()
        codes = []
        for i in range(4):
            value = {
                "type": "reply",
                "from": f"/{big.pubkey}/chirp/posts/q{i}",
                "post": post,
                "at": i,
                "text": "€" * 280,
            }
            body = notice_op(big, a.pubkey, big.pubkey, f"q{i}", value)
            r = await put_op(http, big, f"/{a.pubkey}/inbox/chirp/{big.pubkey}/q{i}", body)
            codes.append(r.status_code)
            if r.status_code != 200:
                break
        assert codes[-1] == 413 and set(codes[:-1]) == {200}, codes
        assert "inbox quota" in r.json()["detail"], r.text
        assert len(inbox(a, big.pubkey)) == len(codes) - 1

        async def refused(
            me: Identity, name: str, value: Any, *, sender: str | None = None, signer: Identity | None = None
        ) -> httpx.Response:
            who = sender or me.pubkey
            body = notice_op(me, a.pubkey, who, name, value, signer)
            r = await put_op(http, me, f"/{a.pubkey}/inbox/chirp/{who}/{name}", body)
            assert r.status_code >= 400, r.text
            assert name not in inbox(a, who)
            return r

        k = Identity.generate()
        base = {"type": "reply", "from": f"/{k.pubkey}/chirp/posts/x", "post": post, "at": 1}
        r = await refused(k, "long", {**base, "text": "x" * 300})
        assert r.status_code == 422 and "at most 280 characters, not 300" in r.json()["detail"], r.text
        r = await refused(k, "huge", {**base, "text": "x" * (2 << 20)})
        assert r.status_code == 413, r.text
        other = Identity.generate()
        r = await refused(
            k, "forged", {**base, "from": f"/{other.pubkey}/chirp/posts/x"}, sender=other.pubkey
        )
        assert r.status_code == 422 and "written by its sender" in r.json()["detail"], r.text
        r = await refused(k, "badsig", base, signer=other)
        assert r.status_code == 401, r.text
        r = await refused(k, "nopost", {**base, "post": f"/{a.pubkey}/chirp/posts/never"})
        assert r.status_code == 422 and "is no post of this node's owner" in r.json()["detail"], r.text

        # the owner closes the inbox to strangers: only people A follows (and they follow) may write
        await a.node.save("/~/chirp/settings", {"inbox": "follows"})
        r = await refused(Identity.generate(), "late", {**base})
        assert r.status_code == 422, r.text
        # ...or shuts it at the store: no rule, no guest writes (403 before any app runs)
        await a.node.delete("/~/.acl/inbox")
        r = await refused(Identity.generate(), "shut", {**base})
        assert r.status_code == 403, r.text
