"""apps/chirp on a 3-node devnet, used in real headless Chromium (issue 12, "Tests in a real browser").

A, B and C each run a node with chirp installed from its signed bundle and share their chirp/.
B follows A, A follows B (the author follows the people who answer it: docs/apps/chirp.md), C
follows B only. In the browser:

* A posts through the compose form, and B's open page shows it live;
* C, whom A does not follow, replies to A's post: C's node delivers a signed notice to A's open
  inbox, and A's notifications show the reply;
* B likes (keyboard `l`), replies (`r`), quotes (`q`) and reposts (`t`); A's notifications show
  all four; A mutes B (B's reply leaves A's timeline), unmutes, and deletes a post of its own;
* A blocks B: B's next reply is refused by A's node and never shows, and B's earlier reply is
  hidden;
* A goes offline, and B's page (reloaded) still shows A's posts from B's replica;
* C, who does not follow A, sees B's posts and none of A's;
* B's node, without chirp, takes a 300-character post from its owner over HTTP (signed by B);
  C's validator refuses it: it is not stored on C and C's page never shows it;
* C goes down while its page is open: the page says it is offline and keeps showing B's posts; B
  posts five times, C starts again on its data and catches up with all five.

A's post carries an image (a PNG through the form's file input) that B's page shows from B's replica,
and B's browser checks its signature (statebus.js `verify`): the post shows "✓ signed".

Screenshots of each screen go to $STATEBUS_SCREENSHOTS when set (docs/apps/ holds the committed ones).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from statebus.server import Cluster, RunningNode
from tests.federation.support import wait_until
from tests.support.chirp import chirp_url, install_chirp, launch
from tests.support.node_harness import browser_available, run_browser

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium"),
]
# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
FAST = {"sse_ping_interval": 0.3, "backoff_base": 0.05, "backoff_cap": 0.4}

HELPERS = """
const sleep = ms => new Promise(res => setTimeout(res, ms));
const until = async (what, f, ms = 40000) => {
  const t = Date.now();
  while (!f()) { if (Date.now() - t > ms) throw new Error('timed out waiting for ' + what); await sleep(50) }
};
const texts = () => [...document.querySelectorAll('#view article .text')].map(e => e.textContent);
const article = text => [...document.querySelectorAll('#view article')]
  .find(a => a.querySelector('.text') && a.querySelector('.text').textContent === text);
const key = (node, k) => node.dispatchEvent(new KeyboardEvent('keydown', {key: k, bubbles: true}));
const compose = text => {
  const f = document.getElementById('compose');
  f.text.value = text; f.text.dispatchEvent(new Event('input')); f.requestSubmit();
};
const fail = e => { window.__result = {error: String(e && e.stack || e)}; window.__done = true };
"""

# B's page: opens, says it is there (its profile), waits for A's post to arrive live, likes and replies
# to it with the keyboard.
B_LIVE = (
    HELPERS
    + """
(async () => {
  const r = {};
  await statebus.ready;
  await until('the streams', () => document.getElementById('conn').textContent === 'live');
  r.before = texts();
  await statebus.put('chirp/profile', {name: 'bob', bio: 'B of the devnet'});
  await until('A\\'s post', () => texts().includes('hello from A'));
  r.live = texts();
  const img = () => article('hello from A').querySelector('img.img');
  await until('the image of A', () => img() && img().complete && img().naturalWidth === 1);
  await until('the signature check', () => article('hello from A').querySelector('.verified'));
  r.badge = article('hello from A').querySelector('.verified').textContent;
  r.unverified = chirp.unverified;
  r.dropped = chirp.dropped;
  const a = article('hello from A');
  a.focus(); key(a, 'l');
  await until('the like', () => article('hello from A').querySelector('.like').textContent === '♥ 1');
  key(article('hello from A'), 'r');
  await until('the reply context', () => !document.getElementById('replying').hidden);
  compose('nice one, A');
  await until('the reply', () => texts().includes('nice one, A'));
  r.after = texts();
  r.ctx = [...document.querySelectorAll('#view article .ctx')].map(e => e.textContent);
  await until('the form reset', () => document.getElementById('compose').text.value === '');
  key(article('hello from A'), 'q');
  const quoting = () => document.getElementById('replying').textContent.startsWith('Quoting');
  await until('the quote context', quoting);
  compose('quoting A');
  await until('the quote', () => texts().includes('quoting A'));
  r.quoted = [...document.querySelectorAll('#view article .quoted')].map(e => e.textContent);
  key(article('hello from A'), 't');
  const ctx = () => [...document.querySelectorAll('#view article .ctx')].map(e => e.textContent);
  await until('the repost', () => ctx().includes('⟲ bob reposted'));
  r.reposts = [...document.querySelectorAll('#view article .repost')].map(e => e.textContent);
  const face = () => document.querySelector('#view article img.avatar');
  await until('the avatar of A', () => face() && face().complete && face().naturalWidth === 200);
  r.avatar = face().naturalWidth;
  window.__result = r; window.__done = true;
})().catch(fail)
"""
)

A_POST = (
    HELPERS
    + """
(async () => {
  await statebus.ready;
  await until('the streams', () => document.getElementById('conn').textContent === 'live');
  // the profile, with an avatar of 200x200 noisy pixels: a PNG over the 64 KiB blob threshold
  location.hash = '#me';
  await until('the profile form', () => document.getElementById('profile'));
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 200;
  const g = canvas.getContext('2d'), noise = g.createImageData(200, 200);
  for (let i = 0; i < noise.data.length; i++) noise.data[i] = i % 4 === 3 ? 255 : Math.random() * 256;
  g.putImageData(noise, 0, 0);
  const face = await new Promise(res => canvas.toBlob(res, 'image/png'));
  const mine = new DataTransfer();
  mine.items.add(new File([face], 'me.png', {type: 'image/png'}));
  const f = document.getElementById('profile');
  f.pname.value = 'ann'; f.bio.value = 'A of the devnet'; f.avatar.files = mine.files;
  f.requestSubmit();
  await until('the avatar', () => (chirp.profiles.get(statebus.node) || {}).avatar);
  const avatarBytes = face.size;
  location.hash = '#home';
  const png = Uint8Array.from(atob(%(png)s), c => c.charCodeAt(0));
  const files = new DataTransfer();
  files.items.add(new File([png], 'dot.png', {type: 'image/png'}));
  document.getElementById('compose').image.files = files.files;
  compose('hello from A');
  await until('the post', () => texts().includes('hello from A'));
  await until('the form reset', () => document.getElementById('compose').text.value === '');
  compose('y'.repeat(281));
  await until('the refusal', () => document.getElementById('status').textContent !== '');
  window.__result = {texts: texts(), refused: document.getElementById('status').textContent, avatarBytes,
                     left: document.getElementById('left').textContent};
  window.__done = true;
})().catch(fail)
"""
)

A_NOTES = (
    HELPERS
    + """
(async () => {
  await statebus.ready;
  location.hash = '#notifications';
  const notes = () => [...document.querySelectorAll('#view .note')].map(e => e.textContent);
  // by bob's name: a notice can reach A's inbox before bob's profile reaches A's replica
  const four = () => notes().filter(n => /^bob (replied|liked|quoted|reposted)/.test(n)).length >= 4;
  await until('four notifications', four);
  await until('the reply of a stranger', () => notes().some(n => n.includes('a stranger says hi')));
  const r = {notes: notes()};
  // mute bob from the People view: his reply leaves the timeline (it stays stored)
  location.hash = '#people';
  const button = text => [...document.querySelectorAll('.person button')].find(b => b.textContent === text);
  await until('the people view', () => button('Mute'));
  button('Mute').click();
  await until('the mute', () => chirp.mutes.size === 1);
  location.hash = '#home';
  await until('the timeline without bob', () => texts().length && !texts().includes('nice one, A'));
  r.muted = texts();
  // unmute, then write a post and delete it
  location.hash = '#people';
  await until('the people view', () => button('Unmute'));
  button('Unmute').click();
  await until('the unmute', () => chirp.mutes.size === 0);
  location.hash = '#home';
  compose('oops');
  await until('the post to delete', () => texts().includes('oops'));
  article('oops').querySelector('button.delete').click();
  await until('the delete', () => !texts().includes('oops'));
  r.afterDelete = texts();
  location.hash = '#notifications';  // the screen the screenshot shows
  // C deleted its reply meanwhile (the test does, once the mute is stored): its notice is retracted
  const stranger = () => notes().some(n => n.includes('a stranger says hi'));
  const bobReplied = () => notes().some(n => n.startsWith('bob replied'));
  await until('the reply of the stranger retracted', () => bobReplied() && !stranger(), 60000);
  r.retracted = notes();
  await until('the notifications again', () => document.querySelectorAll('#view .note').length >= 5);
  window.__result = r;
  window.__done = true;
})().catch(fail)
"""
)

THREAD = (
    HELPERS
    + """
(async () => {
  await statebus.ready;
  await until('the streams', () => document.getElementById('conn').textContent === 'live');
  await until('A\\'s post', () => texts().includes('hello from A'));
  key(article('hello from A'), 'Enter');
  await until('the thread', () => location.hash.startsWith('#post/') && !!document.querySelector('#view h2'));
  await sleep(800);
  window.__result = {thread: texts(), replies: document.querySelector('#view h2').textContent};
  window.__done = true;
})().catch(fail)
"""
)

B_OFFLINE = (
    HELPERS
    + """
(async () => {
  await statebus.ready;
  await until('A\\'s post', () => texts().includes('hello from A'));
  const names = [...document.querySelectorAll('#view .who a')].map(e => e.textContent);
  window.__result = {texts: texts(), names};
  window.__done = true;
})().catch(fail)
"""
)

C_VIEW = (
    HELPERS
    + """
(async () => {
  await statebus.ready;
  await until('B\\'s posts', () => texts().includes('nice one, A'));
  await sleep(800);
  window.__result = {texts: texts()};
  window.__done = true;
})().catch(fail)
"""
)


C_OFFLINE = (
    HELPERS
    + """
(async () => {
  await statebus.ready;
  await until('the streams', () => document.getElementById('conn').textContent === 'live');
  await until('the posts of B', () => texts().includes('after the forgery'));
  await statebus.put('chirp/profile', {name: 'cy'});
  await until('the node gone', () => document.getElementById('conn').textContent !== 'live', 60000);
  await sleep(300);
  window.__result = {conn: document.getElementById('conn').textContent, texts: texts()};
  window.__done = true;
})().catch(fail)
"""
)


def has_key(node: RunningNode, key: str) -> bool:
    change = node.node.fetch_or_none(key)
    return change is not None and change.exists


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def devnet(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path / "nodes", dht_secret=os.urandom(16), **FAST)
    try:
        yield c
    finally:
        await c.aclose()


async def browse(node: RunningNode, script: str, shots: Path, name: str, hash_: str = "") -> dict[str, Any]:
    out = await asyncio.to_thread(
        run_browser,
        chirp_url(node.port) + hash_,
        script,
        timeout=90,
        before=launch(node.url, node.token),
        screenshot=shots / f"{name}.png",
    )
    assert out["ok"] and not out["page_errors"], json.dumps(out)[:3000]
    result: dict[str, Any] = out["result"]
    assert "error" not in result, result
    return result


async def mark(node: RunningNode, kind: str, pk: str) -> None:
    """The owner's chirp record ``chirp/<kind>/<pk>`` (what the page's Follow and Block buttons write)."""
    await node.node.save(f"/~/chirp/{kind}/{pk}", {"at": 1})


def inbox_of(node: RunningNode, sender: str) -> list[str]:
    """The names of the notices ``sender`` has in ``node``'s inbox."""
    return list(node.node.children(f"/~/inbox/chirp/{sender}/", limit=1000))


def posts_of(node: RunningNode, pk: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in node.node.children(f"/{pk}/chirp/posts/", limit=1000):
        change = node.node.fetch_or_none(f"/{pk}/chirp/posts/{name}")
        if change is not None and change.exists:
            out[name] = change.value
    return out


def follow_state(node: RunningNode, pattern: str) -> dict[str, Any]:
    """The federation's state record of ``node``'s follow of ``pattern`` (``/~/.federation/follows/``)."""
    for name in node.node.children("/~/.federation/follows/", limit=100):
        change = node.node.fetch_or_none(f"/~/.federation/follows/{name}")
        if change is not None and change.exists and change.value.get("pattern") == pattern:
            return dict(change.value)
    return {}


@pytest.mark.timeout(300)  # 35-65 s here; eight Chromium runs on three nodes, on a loaded CI machine
async def test_chirp_across_three_nodes_in_chromium(devnet: Cluster, tmp_path: Path) -> None:
    a, b, c = await devnet.add("a"), await devnet.add("b"), await devnet.add("c")
    shots = tmp_path / "shots"
    shots.mkdir()
    for n in (a, b, c):
        await install_chirp(n.url, n.token, tmp_path)
        await n.share("/~/chirp/")
    await b.follow(f"/{a.pubkey}/chirp/", via=[a.url])
    await mark(b, "follows", a.pubkey)
    await a.follow(f"/{b.pubkey}/chirp/", via=[b.url])
    await mark(a, "follows", b.pubkey)
    await c.follow(f"/{b.pubkey}/chirp/", via=[b.url])
    await mark(c, "follows", b.pubkey)
    await a.node.save("/~/.acl/inbox", {"write": "signed"})  # A's inbox takes notices signed by anyone

    # A posts while B's page is open: B sees it live, likes it and replies with the keyboard.
    blobs_before = a.node.blob_refs()
    b_run = asyncio.create_task(browse(b, B_LIVE, shots, "chirp-timeline"))
    await wait_until(
        lambda: b.node.fetch_or_none("/~/chirp/profile") is not None or b_run.done(),
        what="B's page",
        timeout=90,
    )
    if b_run.done():
        await b_run  # B's page failed before it was there: its error
    png = json.dumps(base64.b64encode(PNG).decode())
    posted = await browse(a, A_POST.replace("%(png)s", png), shots, "chirp-compose")
    assert "hello from A" in posted["texts"], posted
    assert posted["avatarBytes"] > 64 * 1024, posted  # a blob (over blob_threshold_bytes)
    assert len(a.node.blob_refs() - blobs_before) == 1, a.node.blob_refs()  # the avatar: one blob on A
    assert posted["refused"].startswith("app chirp refused chirp/posts/"), posted  # the sandbox's reason
    assert "at most 280 characters, not 281" in posted["refused"] and posted["left"] == "-1", posted
    live = await b_run
    assert "hello from A" not in live["before"] and live["live"] == ["hello from A"], live
    assert live["after"] == ["nice one, A", "hello from A"], live
    assert "↩ replying to ann" in live["ctx"], live
    assert live["quoted"] == ["ann: hello from A"], live  # the quote post shows the post it quotes
    assert "⟲ 1" in live["reposts"], live
    assert live["avatar"] == 200, live  # A's avatar, a blob fetched by B's node, shown on B's page
    assert live["badge"] == " ✓ signed" and live["unverified"] == 0, live["dropped"]  # checked in B's browser

    # C, whom A does not follow, replies to A's post: C's node delivers a notice to A's open inbox.
    first = next(f"/{a.pubkey}/chirp/posts/{k}" for k, v in posts_of(a, a.pubkey).items())
    await c.node.save(
        "/~/chirp/posts/zz-stranger", {"text": "a stranger says hi", "at": 8e12, "reply_to": first}
    )

    # A's notifications: B's reply and like crossed to A's node (A follows B's chirp/), C's by the inbox.
    notes_run = asyncio.create_task(browse(a, A_NOTES, shots, "chirp-notifications", "#notifications"))
    # the page has seen C's notice once it mutes bob; then C deletes its reply, retracting the notice
    await wait_until(
        lambda: a.node.fetch_or_none(f"/~/chirp/mutes/{b.pubkey}") is not None or notes_run.done(),
        what="A's page muting bob",
        timeout=90,
    )
    await c.node.delete("/~/chirp/posts/zz-stranger")
    notes = await notes_run
    assert any(n.endswith("replieda stranger says hi") for n in notes["notes"]), notes
    assert any(n.startswith("bob replied") for n in notes["notes"]), notes
    assert any(n.startswith("bob liked your post") for n in notes["notes"]), notes
    assert any(n.startswith("bob quoted your post") for n in notes["notes"]), notes
    assert any(n.startswith("bob reposted your post") for n in notes["notes"]), notes
    assert "nice one, A" not in notes["muted"] and "hello from A" in notes["muted"], notes  # muted
    assert "nice one, A" in notes["afterDelete"] and "oops" not in notes["afterDelete"], notes
    assert not any("a stranger says hi" in n for n in notes["retracted"]), notes  # retracted live
    assert any(n.startswith("bob replied") for n in notes["retracted"]), notes
    assert inbox_of(a, c.pubkey) == []  # the notice is gone from A's node too
    assert all(p.get("text") != "oops" for p in posts_of(a, a.pubkey).values())  # deleted on A's node

    # A blocks B: B's next reply is refused by A's node (the store enforces it) and never shows.
    await mark(a, "blocks", b.pubkey)
    reply_to = next(f"/{a.pubkey}/chirp/posts/{k}" for k, v in posts_of(a, a.pubkey).items())
    async with httpx.AsyncClient(base_url=b.url, headers={"Authorization": f"Bearer {b.token}"}) as http:
        r = await http.put(
            "/~/chirp/posts/zz-blocked",
            json={"text": "you cannot block me", "at": 9e12, "reply_to": reply_to},
        )
        assert r.status_code == 200, r.text
    await wait_until(
        lambda: "is blocked here" in follow_state(a, f"/{b.pubkey}/chirp/").get("last_rejection", ""),
        what="A's node refusing B's reply",
    )
    await wait_until(lambda: "zz-blocked" in posts_of(c, b.pubkey), what="the same reply at C")
    assert "zz-blocked" not in posts_of(a, b.pubkey)
    thread = await browse(a, THREAD, shots, "chirp-thread")
    assert thread["thread"] == ["hello from A"] and thread["replies"] == "Replies (0)", thread

    # A goes offline: B's page still shows A's posts, from B's replica.
    await devnet.stop("a")
    offline = await browse(b, B_OFFLINE, shots, "chirp-offline-owner")
    assert "hello from A" in offline["texts"] and "ann" in offline["names"], offline

    # C follows B only: B's posts, none of A's.
    seen = await browse(c, C_VIEW, shots, "chirp-c")
    assert "nice one, A" in seen["texts"] and "hello from A" not in seen["texts"], seen

    # B's node without chirp takes a forged 300-character post under B's key; C's validator refuses it.
    async with httpx.AsyncClient(base_url=b.url, headers={"Authorization": f"Bearer {b.token}"}) as http:
        (await http.delete("/.well-known/statebus/apps/chirp")).raise_for_status()
        forged = await http.put("/~/chirp/posts/zz-forged", json={"text": "x" * 300, "at": 9e12 + 1})
        assert forged.status_code == 200, forged.text
        (
            await http.put("/~/chirp/posts/zz-after", json={"text": "after the forgery", "at": 9e12 + 2})
        ).raise_for_status()
    await wait_until(lambda: "zz-after" in posts_of(c, b.pubkey), what="B's later post at C")
    assert "zz-forged" not in posts_of(c, b.pubkey)
    seen = await browse(c, C_VIEW.replace("nice one, A", "after the forgery"), shots, "chirp-c-forged")
    assert "x" * 300 not in seen["texts"] and "after the forgery" in seen["texts"], seen

    # C goes down while its page is open: the page says so and keeps showing what it has. B posts
    # meanwhile; C, started again on its data, catches up with every post.
    c_run = asyncio.create_task(browse(c, C_OFFLINE, shots, "chirp-offline-page"))
    await wait_until(lambda: has_key(c, "/~/chirp/profile") or c_run.done(), what="C's page", timeout=90)
    if c_run.done():
        await c_run
    await devnet.stop("c")
    dropped = await c_run
    assert dropped["conn"].startswith("offline") and "after the forgery" in dropped["texts"], dropped
    async with httpx.AsyncClient(base_url=b.url, headers={"Authorization": f"Bearer {b.token}"}) as http:
        for i in range(5):
            post = {"text": f"while C was down {i}", "at": 9e12 + 10 + i}
            (await http.put(f"/~/chirp/posts/zz-down{i}", json=post)).raise_for_status()
    c = await devnet.add("c")
    await wait_until(
        lambda: all(f"zz-down{i}" in posts_of(c, b.pubkey) for i in range(5)), what="C catching up"
    )
    assert "zz-forged" not in posts_of(c, b.pubkey)

    target = os.environ.get("STATEBUS_SCREENSHOTS")
    if target:
        for png in shots.glob("*.png"):
            shutil.copy(png, Path(target) / png.name)


IMAGES = (
    HELPERS
    + """
(async () => {
  await statebus.ready;
  await until('the post', () => article('a picture'));
  const img = () => article('a picture').querySelector('img.img');
  const bad = () => img().classList.contains('unverified');
  await until('the image checked', () => img() && (bad() || (img().complete && img().naturalWidth === 1)));
  window.__result = {unverified: chirp.unverified, dropped: chirp.dropped, bad: bad(), alt: img().alt,
                     src: img().getAttribute('src') || '', width: img().naturalWidth};
  window.__done = true;
})().catch(fail)
"""
)

# Between the node and the page, flip one bit of every image's bytes (a tampering proxy or host): the
# signature material (?proof) is left alone, so the page's check must catch the change itself.
TAMPER = """
const realFetch = window.fetch.bind(window);
window.fetch = async (input, init) => {
  const res = await realFetch(input, init);
  const u = String(input && input.url || input);
  if (!u.includes('/chirp/images/') || u.includes('proof')) return res;
  const b = new Uint8Array(await res.arrayBuffer());
  b[b.length - 1] ^= 1;
  return new Response(b, {status: res.status, statusText: res.statusText, headers: res.headers});
};
"""


@pytest.mark.timeout(120)
async def test_chirp_shows_an_image_only_if_its_author_signed_its_bytes(
    devnet: Cluster, tmp_path: Path
) -> None:
    a = await devnet.add("a")
    await install_chirp(a.url, a.token, tmp_path)
    async with httpx.AsyncClient(base_url=a.url, headers={"Authorization": f"Bearer {a.token}"}) as http:
        r = await http.put("/~/chirp/images/dot.png", content=PNG, headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
        post = {"text": "a picture", "at": 1, "images": ["chirp/images/dot.png"]}
        assert (await http.put("/~/chirp/posts/p1", json=post)).status_code == 200
    runs = []
    for extra in ((), ("--init-script", TAMPER)):
        out = await asyncio.to_thread(
            run_browser,
            chirp_url(a.port),
            IMAGES,
            timeout=60,
            before=launch(a.url, a.token),
            extra_args=extra,
        )
        assert out["ok"] and not out["page_errors"], json.dumps(out)[:3000]
        runs.append(out["result"])
    honest, tampered = runs
    assert not honest["bad"] and honest["width"] == 1 and honest["src"].startswith("blob:"), honest
    assert honest["unverified"] == 0, honest
    assert tampered["bad"] and tampered["src"] == "" and tampered["unverified"] == 1, tampered
    assert "the bytes differ from the ones their author signed" in tampered["alt"], tampered


# A's page: 60 posts, 50 at first and "Load more" for the rest; a post mentioning @bob (by name) and C
# (by pubkey); then, once the page has saved its view, a reload with the node's data unreachable.
A_MORE = (
    HELPERS
    + """
(async () => {
  const r = {};
  await statebus.ready;
  await until('the streams', () => document.getElementById('conn').textContent === 'live');
  await until('the first page', () => texts().length === 50);
  r.first = texts().length;
  r.moreShown = !document.getElementById('more').hidden;
  document.getElementById('more').click();
  await until('the next page', () => texts().length > 50);
  r.after = texts().length;
  r.moreHidden = document.getElementById('more').hidden;
  await until('bob\\'s profile', () => [...chirp.profiles.values()].some(p => p && p.name === 'bob'));
  compose('hi @bob and @%(c)s');
  await until('the mention', () => texts().some(t => t.startsWith('hi @bob')));
  r.mentions = [...chirp.posts.values()].find(p => (p.text || '').startsWith('hi @bob')).mentions;
  // the owner narrows the inbox from the profile view
  location.hash = '#me';
  await until('the inbox setting', () => document.getElementById('inbox'));
  const select = document.getElementById('inbox');
  r.inboxBefore = select.value;
  select.value = 'follows';
  select.dispatchEvent(new Event('change'));
  await until('the setting saved', () => chirp.settings.inbox === 'follows');
  location.hash = '#home';
  await until('the saved view', () => (localStorage.getItem('chirp-cache-v1') || '').includes('hi @bob'));
  sessionStorage.setItem('cut', '1');
  sessionStorage.setItem('before', JSON.stringify(r));
  location.reload();
})().catch(fail)
"""
)

# Runs before the page's own scripts on every load: after the reload above, the node answers none of
# the page's data requests (fetch fails as with no network; no stream can open). What the page shows
# then comes from what it saved, painted at load.
CUT = """
if (sessionStorage.getItem('cut') === '1') {
  window.fetch = () => Promise.reject(new TypeError('Failed to fetch'));
  window.EventSource = class { constructor() { throw new Error('the node is unreachable') } };
  window.addEventListener('load', () => requestAnimationFrame(() => requestAnimationFrame(() => {
    const texts = [...document.querySelectorAll('#view article .text')].map(e => e.textContent);
    window.__result = {...JSON.parse(sessionStorage.getItem('before')), offline: texts,
                       conn: document.getElementById('conn').textContent};
    window.__done = true;
  })));
}
"""

C_MENTIONED = (
    HELPERS
    + """
(async () => {
  await statebus.ready;
  await until('the streams', () => document.getElementById('conn').textContent === 'live');
  location.hash = '#notifications';
  const notes = () => [...document.querySelectorAll('#view .note')].map(e => e.textContent);
  const before = notes();
  await statebus.put('chirp/profile', {name: 'carol'});  // tells the test this page is open
  await until('the mention', () => notes().some(n => n.includes('mentioned you')), 80000);
  window.__result = {before, notes: notes()};
  window.__done = true;
})().catch(fail)
"""
)


@pytest.mark.timeout(180)
async def test_chirp_load_more_mentions_and_offline_first_paint(devnet: Cluster, tmp_path: Path) -> None:
    a, b, c = await devnet.add("a"), await devnet.add("b"), await devnet.add("c")
    for n in (a, b, c):
        await install_chirp(n.url, n.token, tmp_path)
        await n.share("/~/chirp/")
        await n.node.save("/~/.acl/inbox", {"write": "signed"})
    await b.node.save("/~/chirp/profile", {"name": "bob"})
    await a.follow(f"/{b.pubkey}/chirp/", via=[b.url])
    await mark(a, "follows", b.pubkey)
    for i in range(60):
        await a.node.save(f"/~/chirp/posts/p{i:02d}", {"text": f"post {i}", "at": 1_000 + i})
    await wait_until(lambda: has_key(a, f"/{b.pubkey}/chirp/profile"), what="bob's profile on A")
    # C's notifications are open before A mentions C: the mention shows there live
    c_run = asyncio.create_task(browse(c, C_MENTIONED, tmp_path, "chirp-mention"))
    await wait_until(lambda: has_key(c, "/~/chirp/profile") or c_run.done(), what="C's page", timeout=90)
    if c_run.done():
        await c_run  # C's page failed before it was there: its error
    out = await asyncio.to_thread(
        run_browser,
        chirp_url(a.port),
        A_MORE.replace("%(c)s", c.pubkey),
        timeout=90,
        before=launch(a.url, a.token),
        extra_args=("--init-script", CUT),
    )
    assert out["ok"] and not out["page_errors"], json.dumps(out)[:3000]
    r = out["result"]
    assert r["first"] == 50 and r["moreShown"] and r["after"] == 60 and r["moreHidden"], r
    assert sorted(r["mentions"]) == sorted([b.pubkey, c.pubkey]), r  # @bob by name, C by pubkey
    assert r["inboxBefore"] == "anyone" and a.node.fetch("/~/chirp/settings").value == {"inbox": "follows"}, r
    # the reload with the node unreachable: the saved view, painted at load, newest first
    assert r["offline"][:2] == [f"hi @bob and @{c.pubkey}", "post 59"] and len(r["offline"]) == 50, r
    assert r["conn"] == "offline: showing what this page saved", r
    # C, a stranger to A, gets the mention through its inbox; so does B, who does not follow A
    await wait_until(
        lambda: bool(b.node.children(f"/~/inbox/chirp/{a.pubkey}/", limit=10)), what="B's notice"
    )
    notes = await c_run
    assert not any("mentioned you" in n for n in notes["before"]), notes
    assert any(
        n.startswith(a.pubkey[:8]) and n.endswith("mentioned you" + f"hi @bob and @{c.pubkey}")
        for n in notes["notes"]
    ), notes
