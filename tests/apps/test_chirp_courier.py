"""chirp's notices are delivered durably and retracted with the record that sent them (issue 12).

Two real nodes, A (the author, inbox open) and C (a stranger to A who follows A). C's node runs in a
child process: C replies to A's post while A's node is down, the reply is acknowledged and its
notice queued, and C's node is killed with SIGKILL. A starts again, C starts again on its data: the
queued notice is resumed from C's store and reaches A. Then C likes and follows A, and takes all
three back (delete the reply, unlike, unfollow): A's inbox is empty again. A stranger's signed delete
of C's notice, and C's delete of a key of A's outside the inbox, are refused and change nothing.
The queue's caps and its expiry are checked on one node with an unreachable destination.
"""

from __future__ import annotations

import dataclasses
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from statebus.errors import RateLimited
from statebus.federation.courier import QUEUE
from statebus.identity import Identity, sign_op
from statebus.oplog import Op, encode_op, mint_version
from statebus.server.cluster import start_node
from tests.apps.test_chirp_inbox import inbox, put_op
from tests.federation.support import wait_until
from tests.support.chirp import install_chirp

pytestmark = pytest.mark.anyio

CHILD = """
import asyncio, sys
from statebus.server.cluster import start_node

async def main():
    c = await start_node(__import__("pathlib").Path(sys.argv[1]), dht_name=None)
    reply = {"text": "a reply while A is away", "at": 3, "reply_to": sys.argv[2]}
    await c.node.save("/~/chirp/posts/r1", reply)
    print("acked", flush=True)
    courier = c.federation.courier
    queue = "/~/.courier/queue/"
    while not (
        courier.stats.waiting == 1
        and [n for n in c.node.children(queue) if c.node.fetch_or_none(queue + n, durable=True)]
    ):
        await asyncio.sleep(0.01)
    print("queued", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def queued(node: Any) -> list[str]:
    return list(node.node.children(QUEUE, limit=1000))


def delete_op(me: Identity, key: str, version: str) -> bytes:
    op = Op(key, "", (version,), me.pubkey, 2, "lww", "delete", None)
    return encode_op(sign_op(dataclasses.replace(op, version=mint_version(op)), me))


@pytest.mark.timeout(120)
async def test_a_killed_senders_notice_arrives_after_restart_and_is_retracted_with_its_record(
    tmp_path: Path,
) -> None:
    port = free_port()
    a = await start_node(tmp_path / "a", dht_name=None, port=port)
    c = await start_node(tmp_path / "c", dht_name=None)
    try:
        for n in (a, c):
            await install_chirp(n.url, n.token, tmp_path)
            await n.share("/~/chirp/")
        await a.node.save("/~/.acl/inbox", {"write": "signed"})
        await a.node.save("/~/chirp/posts/p1", {"text": "hello from A", "at": 1})
        post = f"/{a.pubkey}/chirp/posts/p1"
        await c.follow(f"/{a.pubkey}/chirp/", via=[a.url])
        await wait_until(lambda: c.node.fetch_or_none(post) is not None, what="A's post at C")
    finally:
        await c.stop()
        await a.stop()

    # C replies while A is down; its node is killed once the write is acknowledged and queued
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "c"), post],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip(), proc.stdout.readline().strip()]
        assert lines == [b"acked", b"queued"], (lines, proc.stderr.read() if proc.stderr else b"")
        time.sleep(0.5)  # an attempt or two fails (A is down) and is rescheduled
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    a = await start_node(tmp_path / "a", dht_name=None, port=port)
    c = await start_node(tmp_path / "c", dht_name=None)
    try:
        assert a.federation is not None and c.federation is not None
        courier = c.federation.courier
        assert courier.stats.resumed == 1
        await wait_until(lambda: "reply-r1" in inbox(a, c.pubkey), timeout=30, what="the resumed notice at A")
        assert inbox(a, c.pubkey)["reply-r1"]["text"] == "a reply while A is away"
        await wait_until(lambda: queued(c) == [], what="C's queue emptied")
        assert courier.stats.sent == 1 and courier.stats.failed == 0

        await c.node.save(f"/~/chirp/likes/{a.pubkey}-p1", {"post": post, "at": 4})
        await c.node.save(f"/~/chirp/follows/{a.pubkey}", {"at": 5})
        await wait_until(lambda: len(inbox(a, c.pubkey)) == 3, what="C's three notices at A")

        # the store lets the sender delete its own notice and nothing more
        reply_key = f"/{a.pubkey}/inbox/chirp/{c.pubkey}/reply-r1"
        reply = a.node.fetch_or_none(reply_key)
        assert reply is not None and reply.version
        async with httpx.AsyncClient(base_url=a.url, timeout=20, trust_env=False) as http:
            stranger = Identity.generate()
            r = await put_op(http, stranger, reply_key, delete_op(stranger, reply_key, reply.version[0]))
            assert r.status_code == 403 and "a guest changes only what it wrote" in r.json()["detail"], r.text
            p1 = a.node.fetch_or_none(post)
            assert p1 is not None
            r = await put_op(http, c.identity, post, delete_op(c.identity, post, p1.version[0]))
            assert r.status_code == 403, r.text
        assert len(inbox(a, c.pubkey)) == 3 and a.node.fetch_or_none(post) is not None

        # C takes back the reply, the like and the follow: A's inbox follows
        await c.node.delete("/~/chirp/posts/r1")
        await c.node.delete(f"/~/chirp/likes/{a.pubkey}-p1")
        await c.node.delete(f"/~/chirp/follows/{a.pubkey}")
        await wait_until(lambda: inbox(a, c.pubkey) == {}, timeout=30, what="C's notices retracted at A")
        assert courier.stats.retracted == 3 and courier.stats.refused == 0
        await wait_until(lambda: queued(c) == [], what="C's queue emptied")
        assert list(c.node.children("/~/.courier/sent/")) == []
    finally:
        await c.stop()
        await a.stop()


@pytest.mark.timeout(60)
async def test_the_queue_is_capped_per_destination_and_drops_expired_notices(tmp_path: Path) -> None:
    c = await start_node(
        tmp_path / "c", dht_name=None, notice_queue_max=2, notice_expiry=1.5, notice_retry_max=0.5
    )
    try:
        assert c.federation is not None
        courier = c.federation.courier
        nowhere, elsewhere = Identity.generate().pubkey, Identity.generate().pubkey
        notice = {"type": "follow", "from": f"/{c.pubkey}/chirp/follows/{nowhere}", "at": 1}
        courier.send(f"/{nowhere}/inbox/chirp/{c.pubkey}/n1", notice)
        courier.send(f"/{nowhere}/inbox/chirp/{c.pubkey}/n2", notice)
        with pytest.raises(RateLimited):
            courier.send(f"/{nowhere}/inbox/chirp/{c.pubkey}/n3", notice)
        courier.send(f"/{elsewhere}/inbox/chirp/{c.pubkey}/n1", notice)  # another destination's queue
        await wait_until(lambda: len(queued(c)) == 3, what="three queue records")
        await wait_until(lambda: courier.stats.expired == 3, timeout=20, what="the notices expired")
        await wait_until(lambda: queued(c) == [] and courier.stats.waiting == 0, what="the records deleted")
        assert courier.stats.sent == 0 and courier.stats.refused == 0
    finally:
        await c.stop()
