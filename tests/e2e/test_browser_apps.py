"""An installed app's page in real headless Chromium, on its own origin (``<name>.localhost``): it works
with its capability (statebus.js over HTTP and SSE, the websocket) and can do nothing else. It cannot
read the owner's cookie or token, reach the node's origin, write outside its grants, run a value it
stored as HTML, or keep a stream after its capability is revoked (docs/apps.md, "Origins and
capabilities")."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from statebus.apps.bundle import pack, sign
from statebus.apps.registry import record_key
from statebus.http.apps import APPS_PATH, BUNDLE_TYPE, SIGNATURE_HEADER
from statebus.http.auth import cookie_name
from statebus.http.websocket import WS_PATH
from statebus.testing.live_server import LiveServer, live_server
from statebus.testing.planted import SANDBOXED, visit_args
from tests.apps.bundles import MAX, app_copy, author_key
from tests.support.apps import FolderApps, install_guestbook, write_app
from tests.support.node_harness import browser_available, run_browser

pytestmark = pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium")

GUESTBOOK = {"read": ["guestbook/"], "write": ["guestbook/"], "read_others": ["guestbook/"]}

PLANTED = """<!doctype html><title>planted</title><script>
window.__planted = 'started';
fetch('/~/guestbook/pwned', {method: 'PUT', credentials: 'include',
      headers: {'Content-Type': 'application/json'}, body: JSON.stringify({cookie: document.cookie})})
  .finally(() => { window.__planted = 'done' });
</script>"""

APP_SCRIPT = """
(async () => {
  const r = {};
  const sleep = ms => new Promise(res => setTimeout(res, ms));
  const attempt = async f => {
    try { return await f() } catch (e) { return {status: e.status, code: e.code, error: String(e)} }
  };
  const status = async u => (await fetch(NODE + u, {credentials: 'include'})).status;
  r.origin = location.origin;
  r.cookie = document.cookie;
  r.info = await statebus.ready;
  r.inline = window.__inline_ran === true;
  r.app_js = window.__app_ran === true;
  const seen = [], statuses = [];
  const stop = statebus.subscribe('guestbook/entries/', (k, v, e) => seen.push(k + ' ' + e.type),
                                  {onstatus: s => statuses.push(s)});
  for (let i = 0; i < 200 && !statuses.includes('open'); i++) await sleep(50);
  r.put_in = await attempt(() => statebus.put('guestbook/entries/0', {text: 'hello'}));
  for (let i = 0; i < 200 && !seen.some(s => s.includes('entries/0 update')); i++) await sleep(50);
  r.seen = seen;
  r.get_in = await attempt(() => statebus.get('guestbook/entries/0'));
  r.put_out = await attempt(() => statebus.put('secret/x', 'pwned'));
  r.get_out = await attempt(() => statebus.get('secret/x'));
  r.put_acl = await attempt(() => statebus.put('.acl/guestbook', {read: ['*']}));
  r.node_fetch = await attempt(() => status('/~/secret/x'));
  r.node_info = await attempt(() => status('/.well-known/statebus'));
  r.ws = await new Promise(resolve => {
    const got = [];
    const ws = new WebSocket('ws://' + location.host + WS);
    ws.onopen = () => {
      ws.send(JSON.stringify({get: 'guestbook/entries/0'}));
      ws.send(JSON.stringify({set: {key: 'secret/ws', val: 'pwned'}}));
    };
    ws.onmessage = e => { got.push(JSON.parse(e.data)); if (got.length >= 2) { ws.close(); resolve(got) } };
    ws.onerror = () => resolve(['error']);
    setTimeout(() => resolve(got), 8000);
  });
  r.sw = await navigator.serviceWorker.register('/app.js').then(() => 'registered', e => String(e));
  r.html = await attempt(async () => (await fetch('/~/guestbook/page', {method: 'PUT',
                                          headers: {'content-type': 'text/html'}, body: PAGE})).status);
  stop();
  window.__result = r;
  window.__done = true;
})()
"""

REVOKE_SCRIPT = """
(async () => {
  const r = {};
  const sleep = ms => new Promise(res => setTimeout(res, ms));
  const statuses = [];
  const stop = statebus.subscribe('guestbook/entries/', () => {}, {onstatus: s => statuses.push(s)});
  for (let i = 0; i < 200 && !statuses.includes('open'); i++) await sleep(50);
  r.opened = statuses.slice();
  await statebus.put('guestbook/revoke-now', true);   // the test revokes the app when it sees this
  for (let i = 0; i < 200 && statuses.length === r.opened.length; i++) await sleep(50);
  r.after = statuses.slice(r.opened.length);
  try { await statebus.get('guestbook/entries/0'); r.get = 'read' } catch (e) { r.get = e.status }
  stop();
  window.__result = r;
  window.__done = true;
})()
"""


def _setup(tmp_path: Path, srv: LiveServer) -> str:
    apps = FolderApps()
    apps.add(write_app(tmp_path / "apps", "guestbook", GUESTBOOK))
    srv.server.statebus_app.state.app_origins.use(apps)
    httpx.put(f"{srv.url}/~/secret/x", json={"s": "owner only"}, headers=srv.auth).raise_for_status()
    return f"http://guestbook.localhost:{srv.url.rsplit(':', 1)[1]}"


def test_an_apps_page_works_inside_its_grants_and_nothing_more(tmp_path: Path) -> None:
    with live_server(tmp_path / "node", timeout=60) as srv:
        app = _setup(tmp_path, srv)
        script = (
            APP_SCRIPT.replace("NODE", json.dumps(srv.url))
            .replace("WS)", json.dumps(WS_PATH) + ")")
            .replace("body: PAGE", "body: " + json.dumps(PLANTED))
        )
        before = [f"{srv.url}/login?token={srv.token}", f"{srv.url}/launch/guestbook"]
        urls = [f"{app}/~/guestbook/page", f"{app}/~/guestbook/page?view"]
        out = run_browser(
            f"{app}/", script, timeout=120, before=before, cookies=True, extra_args=visit_args(urls)
        )
        with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as owner:
            secret = owner.get("/~/secret/x").json()
            pwned = [
                owner.get(k).status_code for k in ("/~/guestbook/pwned", "/~/secret/ws", "/~/.acl/guestbook")
            ]
            entry = owner.get("/~/guestbook/entries/0").json()
    assert out["ok"], out
    assert out["before"][1]["final"] == f"{app}/", out["before"]  # the launch landed on the app's origin
    r = out["result"]
    assert r["sw"] != "registered" and "403" in r["sw"], r["sw"]  # no service worker outlives the app
    assert r["origin"] == app and r["app_js"] is True and r["inline"] is True, r  # hashed inline script ran
    # statebus.js from the app's origin: GET, PUT and SSE inside the grants, as the owner's writes
    assert r["info"]["node"] == srv.local and r["info"]["owner"] is False, r
    assert "version" in r["put_in"] and r["get_in"] == {"text": "hello"}, r
    assert any("guestbook/entries/0 update" in s for s in r["seen"]), r
    assert entry == {"text": "hello"}
    # outside the grants: refused; the node's origin: unreachable from the app's page
    for what in ("put_out", "get_out", "put_acl"):
        assert r[what]["status"] == 403 and r[what]["code"] == "outside_grant", (what, r[what])
    assert "TypeError" in r["node_fetch"]["error"] and "TypeError" in r["node_info"]["error"], r
    assert secret == {"s": "owner only"} and pwned == [404, 404, 404], pwned
    # the websocket: reads inside the grant, refuses a write outside it
    assert any(m.get("set", {}).get("val") == {"text": "hello"} for m in r["ws"]), r["ws"]
    assert any(m.get("error") == "outside_grant" for m in r["ws"]), r["ws"]
    # no cookie or token is readable by the page; the capability is HttpOnly, on the app's host only
    assert r["cookie"] == "" and srv.token not in json.dumps(r)
    jar = {c["name"]: c for c in out["cookies"]}
    capability = [c for n, c in jar.items() if n.startswith("statebus_app_")]
    assert (
        len(capability) == 1
        and capability[0]["httpOnly"]
        and capability[0]["domain"] == "guestbook.localhost"
    )
    assert capability[0]["sameSite"] == "Strict", capability
    assert jar[cookie_name(srv.local, secure=False)]["domain"] == "127.0.0.1"
    # the HTML value the app stored is data on the app's origin too: a download, or a sandboxed view
    assert r["html"] == 200, r
    plain, view = out["visits"]
    assert plain["download"] is True, plain
    assert view["status"] == 200 and view["waited"] is False and view["probe"] == SANDBOXED, view


def test_a_revoked_capability_stops_at_once(tmp_path: Path) -> None:
    with live_server(tmp_path / "node", timeout=60) as srv:
        app = _setup(tmp_path, srv)
        flag = f"/{srv.local}/guestbook/revoke-now"
        stop = threading.Event()

        def revoke_when_asked() -> None:  # what `statebus app remove` does: the install record changes
            while not stop.is_set():
                if srv.node.fetch_or_none(flag) is not None:
                    httpx.delete(f"{srv.url}/~/.apps/guestbook", headers=srv.auth)
                    httpx.put(f"{srv.url}/~/.apps/guestbook", json={"removed": True}, headers=srv.auth)
                    return
                time.sleep(0.05)

        thread = threading.Thread(target=revoke_when_asked, daemon=True)
        thread.start()
        before = [f"{srv.url}/login?token={srv.token}", f"{srv.url}/launch/guestbook"]
        try:
            out = run_browser(f"{app}/", REVOKE_SCRIPT, timeout=90, before=before)
        finally:
            stop.set()
            thread.join(5)
    assert out["ok"], out
    r = out["result"]
    assert r["opened"] == ["open"], r
    assert r["after"] and r["after"][0] in ("connecting", "closed"), r  # the stream was cut
    assert r["get"] == 401, r


NODE_PAGE_SCRIPT = """
(async () => {
  const sleep = ms => new Promise(res => setTimeout(res, ms));
  for (let i = 0; i < 200 && document.querySelectorAll('#apps-list tr').length < 2; i++) await sleep(50);
  const rows = [...document.querySelectorAll('#apps-list tr')];
  window.__result = {
    hidden: document.getElementById('apps').hidden,
    rows: rows.map(row => [...row.children].map(td => td.textContent)),
    href: rows.length ? rows[0].querySelector('a').getAttribute('href') : null,
  };
  window.__done = true;
})()
"""

SPINNER = """
function validateEntry(op, current) { for (;;) {} }
function countEntries(key) { return 0; }
"""

GUESTBOOK_PROBE = """(() => ({origin: location.origin, cookie: document.cookie,
  entries: [...document.querySelectorAll('#entries li')]
    .map(li => [...li.children].map(c => c.textContent))}))()"""


def test_the_node_page_lists_apps_and_launches_the_real_guestbook(tmp_path: Path) -> None:
    with live_server(tmp_path / "node", timeout=60) as srv:
        grant = {"read": ["guestbook/"], "write": ["guestbook/"], "read_others": []}
        install_guestbook(srv.url, srv.auth, tmp_path, grant)
        entry = {"name": "Ann", "text": "hello from the owner"}
        httpx.put(
            f"{srv.url}/~/guestbook/entries/a", json=entry, headers=srv.auth, timeout=30
        ).raise_for_status()
        # a second app whose validator never returns: it traps, the write is refused, the page says why
        install_guestbook(srv.url, srv.auth, tmp_path, grant, name="spinner", handlers=SPINNER)
        refused = httpx.put(f"{srv.url}/~/guestbook/entries/b", json=entry, headers=srv.auth, timeout=30)
        assert 400 <= refused.status_code < 500, refused.text
        app = f"http://guestbook.localhost:{srv.url.rsplit(':', 1)[1]}"
        visits = [
            f"{srv.url}/launch/guestbook",
            "--visit-wait",
            "document.querySelectorAll('#entries li .badge').length > 0",
            "--visit-wait-ms",
            "15000",
            "--visit-probe",
            GUESTBOOK_PROBE,
        ]
        out = run_browser(
            f"{srv.url}/login?token={srv.token}",
            NODE_PAGE_SCRIPT,
            timeout=90,
            extra_args=["--visit", *visits],
        )
    assert out["ok"], out
    r = out["result"]
    assert r["hidden"] is False and r["href"] == "/launch/guestbook", r
    rows = {cells[0].split(" ", 1)[0]: cells for cells in r["rows"]}
    name, granted, state, calls, cost = rows["guestbook"]
    assert name.startswith("guestbook 1.0.0") and app in name, name
    assert granted == "read guestbook/; write guestbook/", granted
    assert state == "running" and int(calls) >= 1, rows  # its validator and derive ran
    assert re.fullmatch(r"[0-9.]+ ms / [0-9.]+ ms", cost), cost
    name, granted, state, calls, cost = rows["spinner"]
    assert state.startswith("trapped: ") and "validateEntry" in state, rows
    (seen,) = out["visits"]
    assert seen["error"] is None and seen["waited"] is True, seen
    assert seen["probe"]["origin"] == app and seen["probe"]["cookie"] == "", seen
    assert seen["probe"]["entries"] == [["Ann", "verified", "hello from the owner"]], seen


INSTALL_SCRIPT = """
(async () => {
  const sleep = ms => new Promise(res => setTimeout(res, ms));
  const $ = id => document.getElementById(id);
  const until = async f => { for (let i = 0; i < 400 && !f(); i++) await sleep(50); return f() };
  const status = () => $('app-check-status').textContent;
  const choose = list => {
    const dt = new DataTransfer();
    for (const [name, b64] of list)
      dt.items.add(new File([Uint8Array.from(atob(b64), c => c.charCodeAt(0))], name));
    $('app-files').files = dt.files;
  };
  const check = async () => {
    $('app-check-form').requestSubmit();
    await until(() => !$('app-consent').hidden || (status() !== '' && status() !== 'Checking…'));
    return {shown: !$('app-consent').hidden, title: $('app-consent-title').textContent,
            more: $('app-consent-more').hidden ? null : $('app-consent-more').textContent,
            permissions: $('app-consent-permissions').textContent,
            button: $('app-consent-yes').textContent, status: status()};
  };
  const consent = async word => {
    $('app-consent-yes').click();
    await until(() => status().startsWith(word) || $('app-check-status').className.includes('error'));
    return status();
  };
  const r = {};
  await until(() => !$('apps').hidden);
  choose(V1); r.v1 = await check();
  $('app-consent-no').click(); r.cancelled = status();
  choose(V1); await check(); r.installed = await consent('Installed');
  choose(V1); r.again = await check();
  choose(V2); r.v2 = await check(); r.upgraded = await consent('Upgraded');
  $('app-source').value = SOURCE; r.source = await check(); r.source_installed = await consent('Installed');
  await until(() => document.querySelectorAll('#apps-list tr').length >= 2);
  r.rows = [...document.querySelectorAll('#apps-list tr')].map(row => row.dataset.app);
  window.__result = r;
  window.__done = true;
})()
"""


def test_the_node_page_installs_and_upgrades_with_consent(tmp_path: Path) -> None:
    """The node's page shows what an app asks for and installs only on the owner's click, from a
    bundle file or a published key; an upgrade asking for more says so and asks again."""
    wider = {"read": ["guestbook/"], "write": ["guestbook/", "profile/"], "read_others": ["guestbook/"]}
    author = author_key()
    bundles = []
    for version, perms in (("1.0.0", None), ("2.0.0", wider)):
        changes: dict[str, object] = {"version": version} | ({"permissions": perms} if perms else {})
        data = pack(app_copy(tmp_path / version, author, **changes), MAX)
        sig = json.dumps(sign(data, author).to_json()).encode()
        bundles.append(
            [["gb.sbx", base64.b64encode(data).decode()], ["gb.sbx.sig", base64.b64encode(sig).decode()]]
        )
    with live_server(tmp_path / "node", timeout=60) as srv:
        own = srv.running.identity  # an app this node's owner wrote and published: installed by its key
        data = pack(app_copy(tmp_path / "board", own, name="board"), MAX)
        sig = base64.b64encode(json.dumps(sign(data, own).to_json()).encode()).decode()
        published = httpx.post(
            srv.url + APPS_PATH + "/publish",
            content=data,
            headers={**srv.auth, "content-type": BUNDLE_TYPE, SIGNATURE_HEADER: sig},
        )
        assert published.status_code == 200, published.text
        source = f"/{srv.local}/.apps/board"
        script = (
            f"const V1 = {json.dumps(bundles[0])}, V2 = {json.dumps(bundles[1])};"
            + f"const SOURCE = {json.dumps(source)};"
            + INSTALL_SCRIPT
        )
        out = run_browser(f"{srv.url}/login?token={srv.token}", script, timeout=90)
        record = srv.node.fetch(record_key("guestbook")).value
        board = srv.node.fetch(record_key("board")).value
    assert out["ok"], out
    r = out["result"]
    assert r["v1"]["shown"] and r["v1"]["title"] == f"guestbook 1.0.0 by {author.pubkey}", r
    assert r["v1"]["permissions"].splitlines() == [
        "It asks to:",
        "read   your guestbook/",
        "write  your guestbook/",
        "read   other people's guestbook/",
    ], r
    assert r["v1"]["more"] is None and r["v1"]["button"] == "Install", r
    assert r["cancelled"] == "Not installed: you did not consent", r
    assert r["installed"] == "Installed guestbook 1.0.0", r
    assert r["again"]["shown"] is False and r["again"]["status"] == "guestbook 1.0.0 is installed already", r
    assert r["v2"]["more"] == "guestbook 2.0.0 asks for more than you granted 1.0.0.", r
    assert (
        "write  your profile/" in r["v2"]["permissions"] and r["v2"]["button"] == "Upgrade 1.0.0 → 2.0.0"
    ), r
    assert r["upgraded"] == "Upgraded guestbook 2.0.0", r
    assert record["version"] == "2.0.0" and record["granted"]["write"] == ["guestbook/", "profile/"]
    assert (
        r["source"]["title"] == f"board 1.0.0 by {srv.local}"
        and r["source_installed"] == "Installed board 1.0.0"
    )
    assert board["granted"]["write"] == ["guestbook/"] and board["published"] is True
    assert sorted(r["rows"]) == ["board", "guestbook"], r
