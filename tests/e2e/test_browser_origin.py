"""Defect 2 of issue 9, in real headless Chromium: a page on another port of 127.0.0.1 cannot use the
owner's login through the websocket, and two nodes on one host keep separate logins.

Both attacks worked before: the websocket handshake never checked ``Origin`` (127.0.0.1:<other port>
is the same *site*, so the SameSite=Strict cookie went along), and every node set the same cookie
name, ``statebus_token``, holding the raw owner token, so logging in to a second node replaced the
first one's login and sent its token to every node on the host.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from statebus.http.auth import cookie_name
from statebus.http.websocket import WS_PATH
from statebus.testing.live_server import LiveServer, live_server
from tests.support.node_harness import browser_available, run_browser

pytestmark = pytest.mark.skipif(not browser_available(), reason="needs node, tests/js and /usr/bin/chromium")


@contextlib.contextmanager
def other_site() -> Iterator[str]:
    """A plain page on another port of 127.0.0.1 (the attacker's, or any other local web app)."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>elsewhere</title><p>another site on this host</p>"
            self.send_response(200)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def hijack_script(node: LiveServer) -> str:
    """Open the node's websocket, read a secret, write a key, ask who we are; then try a simple
    (no-preflight) cross-origin POST with the cookie."""
    ws = node.url.replace("http://", "ws://") + WS_PATH
    return f"""
(async () => {{
  const r = {{opened: false, messages: [], closed: null, post: null}};
  await new Promise(resolve => {{
    let ws;
    try {{ ws = new WebSocket({ws!r}); }} catch (e) {{ r.error = String(e); resolve(); return; }}
    const timer = setTimeout(() => {{ try {{ ws.close(); }} catch (e) {{}} resolve(); }}, 10000);
    ws.onopen = () => {{
      r.opened = true;
      ws.send(JSON.stringify({{get: 'secret/x'}}));
      ws.send(JSON.stringify({{set: {{key: 'pwned', val: 'by another site'}}}}));
      ws.send(JSON.stringify({{get: 'current_user'}}));
    }};
    ws.onmessage = e => {{
      r.messages.push(JSON.parse(e.data));
      const has = k => r.messages.some(m => m.set && m.set.key === k);
      if (has('current_user') && has('secret/x')) {{
        clearTimeout(timer); ws.close(); resolve();
      }}
    }};
    ws.onclose = e => {{ r.closed = e.code; clearTimeout(timer); resolve(); }};
  }});
  try {{
    await fetch({node.url + "/~/pwned2"!r}, {{method: 'POST', mode: 'no-cors', credentials: 'include',
                                             headers: {{'content-type': 'text/plain'}}, body: '"x"'}});
    r.post = 'sent';
  }} catch (e) {{ r.post = String(e); }}
  window.__result = r;
  window.__done = true;
}})()
"""


def test_a_page_on_another_port_cannot_use_the_owners_websocket(tmp_path: Path) -> None:
    with live_server(tmp_path / "a") as node, other_site() as elsewhere:
        httpx.put(f"{node.url}/~/secret/x", json={"s": "top secret"}, headers=node.auth).raise_for_status()
        login = f"{node.url}/login?token={node.token}"
        script = hijack_script(node)
        attack = run_browser(f"{elsewhere}/", script, timeout=60, before=[login])
        pwned = httpx.get(f"{node.url}/~/pwned", headers=node.auth)
        pwned2 = httpx.get(f"{node.url}/~/pwned2", headers=node.auth)
        # the same script from the node's own page works: the check is on the origin, not the socket
        own = run_browser(f"{node.url}/", script, timeout=60, before=[login])
    assert attack["ok"], attack
    assert attack["before"][0]["status"] == 200 and attack["before"][0]["final"] == f"{node.url}/"
    got = attack["result"]
    assert got["opened"] is False and got["messages"] == [], got  # refused before it was accepted
    assert "top secret" not in str(got)
    assert pwned.status_code == 404, pwned.text  # nothing was written as the owner
    assert pwned2.status_code == 404, pwned2.text
    assert own["ok"], own
    mine = own["result"]
    assert mine["opened"] is True, mine
    secret = [m for m in mine["messages"] if m.get("set", {}).get("key") == "secret/x"]
    assert secret and secret[0]["set"]["val"] == {"s": "top secret"}, mine
    assert any(
        m.get("set", {}).get("val", {}) == {"client": m["set"]["val"].get("client"), "owner": True}
        for m in mine["messages"]
        if m.get("set", {}).get("key") == "current_user"
    ), mine


ROLE_SCRIPT = """
(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  for (let i = 0; i < 600 && !['owner', 'guest'].includes(document.getElementById('role').textContent); i++)
    await sleep(50);
  const info = await (await fetch('/.well-known/statebus')).json();
  let put = null;
  try { await statebus.put('/~/written-from-the-page', 'still logged in'); put = 'ok'; }
  catch (e) { put = String(e); }
  window.__result = {role: document.getElementById('role').textContent, owner: info.owner, put};
  window.__done = true;
})()
"""


def test_two_nodes_on_one_host_keep_separate_logins(tmp_path: Path) -> None:
    with live_server(tmp_path / "a") as a, live_server(tmp_path / "b") as b:
        out = run_browser(
            f"{a.url}/",
            ROLE_SCRIPT,
            timeout=60,
            before=[f"{a.url}/login?token={a.token}", f"{b.url}/login?token={b.token}"],
            cookies=True,
        )
        assert out["ok"], out
        jar = {c["name"]: c for c in out["cookies"]}
        name_a, name_b = cookie_name(a.local, secure=False), cookie_name(b.local, secure=False)

        def owner_with(node: LiveServer, name: str) -> bool:
            cookie = f"{name}={jar[name]['value']}" if name in jar else ""
            r = httpx.get(f"{node.url}/.well-known/statebus", headers={"Cookie": cookie})
            return bool(r.json()["owner"])

        a_with_a, a_with_b = owner_with(a, name_a), owner_with(a, name_b)
        b_with_b, b_with_a = owner_with(b, name_b), owner_with(b, name_a)
        written = httpx.get(f"{a.url}/~/written-from-the-page", headers=a.auth)
    # logging in to B did not log the browser out of A: A's page is still the owner's and writes
    assert out["result"] == {"role": "owner", "owner": True, "put": "ok"}, out["result"]
    assert written.json() == "still logged in"
    # one cookie per node, each named for its node; neither holds a token
    assert sorted(jar) == sorted([name_a, name_b]), jar
    for cookie in jar.values():
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/", cookie
        assert a.token not in cookie["value"] and b.token not in cookie["value"], cookie
    # each node's cookie logs in to that node only (the browser sends both to both: same host)
    assert a_with_a and b_with_b
    assert not a_with_b and not b_with_a
