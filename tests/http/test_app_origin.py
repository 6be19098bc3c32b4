"""One origin per installed app (statebus.http.app_origin) and its scoped capability
(statebus.access.capabilities), on a live node: Host routing, the strict policy, the launch, the
grants, and revocation."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.exceptions as websockets_exceptions

from statebus.access.capabilities import LAUNCH_TTL, MAX_PER_APP, CapabilityStore
from statebus.apps.patterns import Grants
from statebus.config import Settings
from statebus.http.app_origin import AppOrigins, inline_script_hashes
from statebus.http.apps import APPS_PATH
from statebus.http.auth import OwnerAuth
from statebus.http.origins import OriginPolicy
from statebus.http.websocket import WS_PATH
from statebus.oplog import decode_op
from statebus.server.logs import redact
from statebus.testing.live_server import LiveServer, SseReader, live_server
from tests.support.apps import FolderApps, install_guestbook, write_app

GUESTBOOK = {"read": ["guestbook/"], "write": ["guestbook/"], "read_others": ["guestbook/"]}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[LiveServer, FolderApps]]:
    apps = FolderApps()
    apps.add(write_app(tmp_path / "apps", "guestbook", GUESTBOOK))
    apps.add(write_app(tmp_path / "apps", "chat", {"read": ["chat/"], "write": ["chat/"]}))
    with live_server(tmp_path / "node") as srv:
        srv.server.statebus_app.state.app_origins.use(apps)
        yield srv, apps


def port(srv: LiveServer) -> int:
    return int(srv.url.rsplit(":", 1)[1])


def app_url(srv: LiveServer, name: str) -> str:
    return f"http://{name}.localhost:{port(srv)}"


def on_host(srv: LiveServer, name: str) -> dict[str, str]:
    """Talk to the node's address with the app's Host (what a browser at <name>.localhost sends)."""
    return {"host": f"{name}.localhost:{port(srv)}"}


def launch(srv: LiveServer, name: str) -> dict[str, str]:
    """Follow the owner's launch link: the capability cookie the app's origin sets."""
    first = httpx.get(f"{srv.url}/launch/{name}", headers=srv.auth)
    assert first.status_code == 303, first.text
    target = first.headers["location"]
    assert target.startswith(f"{app_url(srv, name)}/.statebus/launch?code="), target
    path = target[len(app_url(srv, name)) :]
    second = httpx.get(srv.url + path, headers=on_host(srv, name))
    assert second.status_code == 303 and second.headers["location"] == "/", second.text
    raw = second.headers["set-cookie"]
    assert "HttpOnly" in raw and "SameSite=strict" in raw and "Domain" not in raw, raw
    name_value = raw.split(";", 1)[0]
    cookie, _, value = name_value.partition("=")
    return {cookie: value}


def as_app(srv: LiveServer, name: str, cookies: dict[str, str], host: str | None = None) -> httpx.Client:
    headers = on_host(srv, host or name)
    return httpx.Client(base_url=srv.url, headers=headers, cookies=cookies)


def test_the_app_origin_serves_the_apps_files_under_a_strict_policy(node: tuple[LiveServer, Any]) -> None:
    srv, _ = node
    page = httpx.get(srv.url + "/", headers=on_host(srv, "guestbook"))
    assert page.status_code == 200 and "<h1>Guestbook</h1>" in page.text
    csp = page.headers["content-security-policy"]
    inline = "window.__inline_ran = true"
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}'" in csp, csp
    for part in ("connect-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"):
        assert part in csp
    assert "unsafe-inline" not in csp and page.headers["x-content-type-options"] == "nosniff"
    script = httpx.get(srv.url + "/app.js", headers=on_host(srv, "guestbook"))
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    sw = httpx.get(srv.url + "/app.js", headers={**on_host(srv, "guestbook"), "service-worker": "script"})
    assert sw.status_code == 403 and "service worker" in sw.json()["detail"]
    lib = httpx.get(srv.url + "/statebus.js", headers=on_host(srv, "guestbook"))
    assert lib.status_code == 200 and "statebus" in lib.text
    assert "content-security-policy" in lib.headers
    # the node's own page stays the node's
    assert "Guestbook" not in httpx.get(srv.url + "/").text


def test_nothing_of_the_node_is_served_on_an_app_origin(node: tuple[LiveServer, Any]) -> None:
    srv, _ = node
    host = on_host(srv, "guestbook")
    assert httpx.get(srv.url + "/login", params={"token": srv.token}, headers=host).status_code == 404
    assert httpx.get(srv.url + "/metrics", headers={**host, **srv.auth}).status_code == 404
    assert httpx.get(srv.url + "/launch/guestbook", headers={**host, **srv.auth}).status_code == 404
    # the owner token is no key to an app's origin, nor is the owner's login cookie
    r = httpx.get(srv.url + "/~/guestbook/x", headers={**host, **srv.auth})
    assert r.status_code == 401 and "capability" in r.json()["detail"]
    r = httpx.get(srv.url + "/~/guestbook/x", headers=host, cookies=srv.cookie)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    # a subdomain that names no installed app is nobody's origin
    for other in ("evil.localhost", "a.b.localhost", "Nope_.localhost"):
        r = httpx.get(srv.url + "/~/guestbook/x", headers={"host": f"{other}:{port(srv)}", **srv.auth})
        assert r.status_code == 404, (other, r.text)


def test_launch_is_the_owners_and_its_code_works_once(node: tuple[LiveServer, Any]) -> None:
    srv, _ = node
    assert httpx.get(f"{srv.url}/launch/guestbook").status_code == 401
    assert httpx.get(f"{srv.url}/launch/nothing", headers=srv.auth).status_code == 404
    first = httpx.get(f"{srv.url}/launch/guestbook", headers=srv.auth)
    path = first.headers["location"][len(app_url(srv, "guestbook")) :]
    # another app's origin cannot redeem it
    assert httpx.get(srv.url + path, headers=on_host(srv, "chat")).status_code == 401
    ok = httpx.get(srv.url + path, headers=on_host(srv, "guestbook"))
    assert ok.status_code == 401  # the code was spent by the failed attempt above: single use
    second = httpx.get(f"{srv.url}/launch/guestbook", headers=srv.auth)
    path = second.headers["location"][len(app_url(srv, "guestbook")) :]
    assert httpx.get(srv.url + path, headers=on_host(srv, "guestbook")).status_code == 303
    again = httpx.get(srv.url + path, headers=on_host(srv, "guestbook"))
    assert again.status_code == 401 and "set-cookie" not in again.headers


def test_a_capability_works_inside_its_grants_only(node: tuple[LiveServer, Any]) -> None:
    srv, _ = node
    other = "a" * 52
    httpx.put(f"{srv.url}/~/secret/x", json={"s": "owner only"}, headers=srv.auth).raise_for_status()
    cap = launch(srv, "guestbook")
    with as_app(srv, "guestbook", cap) as app:
        put = app.put("/~/guestbook/entries/1", json={"text": "hello"})
        assert put.status_code == 200, put.text
        assert app.get("/~/guestbook/entries/1").json() == {"text": "hello"}
        assert app.get("/~/guestbook/entries/").status_code == 200
        assert app.get("/.well-known/statebus").json()["owner"] is False
        stored = srv.node.scan(f"/{srv.local}/guestbook/entries/1", 0, 10)
        assert [decode_op(s.data).author for s in stored] == [srv.local]  # the node signs, as the owner
        for method, path in [
            ("GET", "/~/secret/x"),
            ("PUT", "/~/secret/x"),
            ("PUT", "/~/chat/1"),
            ("GET", "/~/"),
            ("GET", "/~/.acl/"),
            ("PUT", "/~/.acl/guestbook/x"),
            ("PUT", f"/{other}/guestbook/x"),
            ("DELETE", "/~/secret/x"),
        ]:
            r = app.request(method, path, json={"s": "pwned"} if method == "PUT" else None)
            assert r.status_code == 403 and r.json()["error"] == "outside_grant", (method, path, r.text)
        assert app.get(f"/{other}/guestbook/x").status_code == 404  # read_others: readable, absent
        # a page of another origin may not use it (the browser sends its Origin)
        r = app.put("/~/guestbook/entries/2", json=1, headers={"origin": "http://evil.localhost:1"})
        assert r.status_code == 403
    assert srv.node.fetch(f"/{srv.local}/secret/x").value == {"s": "owner only"}
    metrics = httpx.get(f"{srv.url}/metrics", headers=srv.auth).text  # its writes are attributed to it
    assert 'statebus_app_capability_requests_total{app="guestbook",outcome="write"} 1.0' in metrics, metrics
    assert 'statebus_app_capability_requests_total{app="guestbook",outcome="refused"} 8.0' in metrics
    assert 'statebus_app_capabilities{app="guestbook"} 1.0' in metrics
    # app X's capability on app Y's origin
    with as_app(srv, "guestbook", cap, host="chat") as wrong:
        r = wrong.put("/~/chat/1", json="from guestbook")
        assert r.status_code == 403 and r.json()["error"] == "outside_grant", r.text
    # and on the node's own origin it is no login at all
    r = httpx.put(f"{srv.url}/~/guestbook/entries/3", json=1, cookies=cap)
    assert r.status_code == 400 or r.status_code == 401, r.text
    assert srv.node.fetch_or_none(f"/{srv.local}/guestbook/entries/3") is None


def test_revoking_cuts_the_streams_opened_with_it(node: tuple[LiveServer, Any]) -> None:
    srv, _ = node
    cap = launch(srv, "guestbook")
    with as_app(srv, "guestbook", cap) as app:
        headers = {"accept": "text/event-stream"}
        with app.stream("GET", "/~/guestbook/", headers=headers, timeout=10) as stream:
            assert stream.status_code == 200
            reader = SseReader(stream)
            app.put("/~/guestbook/entries/1", json="first").raise_for_status()
            assert reader.next_event()["data"]["key"].endswith("guestbook/entries/1")
            # the registry (re)writes the install record: remove, upgrade, new grants
            r = httpx.put(f"{srv.url}/~/.apps/guestbook", json={"version": "2.0.0"}, headers=srv.auth)
            r.raise_for_status()
            events = []
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError, StopIteration)):
                while True:
                    events.append(reader.next_event())
            assert [e.get("event") for e in events] == ["error"], events
            assert "revoked" in json.dumps(events[0]), events
        r = app.get("/~/guestbook/entries/1")
        assert r.status_code == 401 and "capability" in r.json()["detail"]
        assert app.put("/~/guestbook/entries/2", json=2).status_code == 401
    assert srv.node.fetch_or_none(f"/{srv.local}/guestbook/entries/2") is None


def test_the_websocket_takes_the_capability_within_its_grants(node: tuple[LiveServer, Any]) -> None:
    websockets = pytest.importorskip("websockets.sync.client")
    srv, _ = node
    cap = launch(srv, "guestbook")
    cookie = "; ".join(f"{k}={v}" for k, v in cap.items())
    url = app_url(srv, "guestbook").replace("http://", "ws://") + WS_PATH
    sock = socket.create_connection(("127.0.0.1", port(srv)))  # <name>.localhost is loopback
    with websockets.connect(url, sock=sock, additional_headers={"cookie": cookie}) as ws:
        ws.send(json.dumps({"set": {"key": "guestbook/ws", "val": "over the socket"}}))
        ws.send(json.dumps({"set": {"key": "secret/ws", "val": "pwned"}}))
        ws.send(json.dumps({"get": "guestbook/ws"}))
        got = [json.loads(ws.recv(timeout=5)) for _ in range(2)]
        # revoked (the install record changes): the subscription opened with it ends, the socket closes
        httpx.put(f"{srv.url}/~/.apps/guestbook", json={"removed": True}, headers=srv.auth).raise_for_status()
        after = []
        with pytest.raises(websockets_exceptions.ConnectionClosed):
            while True:
                after.append(json.loads(ws.recv(timeout=5)))
    assert any("outside" in str(m) for m in got), got
    assert any(m.get("set", {}).get("val") == "over the socket" for m in got), got
    assert srv.node.fetch_or_none(f"/{srv.local}/secret/ws") is None
    assert after and "revoked" in str(after[-1]), after


def test_a_braid_subscription_takes_the_capability_within_its_grants(node: tuple[LiveServer, Any]) -> None:
    srv, _ = node
    cap = launch(srv, "guestbook")
    with as_app(srv, "guestbook", cap) as app:
        app.put("/~/guestbook/b", json={"n": 1}).raise_for_status()
        with app.stream("GET", "/~/guestbook/b", headers={"subscribe": "true"}, timeout=10) as sub:
            assert sub.status_code == 209
            first = next(sub.iter_raw())
            assert b'{"n":1}' in first.replace(b" ", b""), first
        r = app.get("/~/secret/b", headers={"subscribe": "true"})
        assert r.status_code == 403 and r.json()["error"] == "outside_grant"


def test_inline_script_hashes_skip_external_scripts() -> None:
    html = b'<script src="/a.js"></script><SCRIPT type="module">x()</SCRIPT >'
    digest = base64.b64encode(hashlib.sha256(b"x()").digest()).decode()
    assert inline_script_hashes(html) == [f"'sha256-{digest}'"]


def test_capability_store_codes_expire_and_capabilities_are_bounded() -> None:
    now = [0.0]
    store = CapabilityStore("b" * 52, clock=lambda: now[0])
    grants = Grants.parse(read=["g/"], write=["g/"])
    code = store.launch_code("g", "h1", grants)
    now[0] += LAUNCH_TTL + 1
    assert store.redeem(code, "g") is None
    secrets = [store.mint("g", "h1", grants) for _ in range(MAX_PER_APP + 1)]
    assert store.verify(secrets[0]) is None and store.verify(secrets[-1]) is not None
    assert store.live("g") == MAX_PER_APP
    cap = store.verify(secrets[-1])
    assert cap is not None
    key = f"/{'b' * 52}/g/"
    assert store.why_not(cap, "list", key) is None
    narrow = store.verify(store.mint("n", "h", Grants.parse(read=["g/entries/*"])))
    assert narrow is not None
    assert store.why_not(narrow, "read", f"/{'b' * 52}/g/entries/1") is None
    assert store.why_not(narrow, "list", f"/{'b' * 52}/g/entries/") is not None  # deeper keys not granted
    assert store.revoke("g") == MAX_PER_APP and store.verify(secrets[-1]) is None


def test_an_installed_bundle_is_served_on_its_origin_until_removed(tmp_path: Path) -> None:
    grant = {"read": ["guestbook/"], "write": ["guestbook/"], "read_others": []}
    with live_server(tmp_path / "node") as srv, httpx.Client(base_url=srv.url, headers=srv.auth) as owner:
        install_guestbook(srv.url, srv.auth, tmp_path, grant)
        page = httpx.get(srv.url + "/", headers=on_host(srv, "guestbook"))
        assert page.status_code == 200 and "<h1>Guestbook</h1>" in page.text, page.text
        assert "script-src 'self';" in page.headers["content-security-policy"]  # no inline script
        cap = launch(srv, "guestbook")
        with as_app(srv, "guestbook", cap) as app:
            assert app.put("/~/guestbook/hello", json="hi").status_code == 200
            # the owner grants less than asked: reading other namespaces was not granted
            r = app.get(f"/{'a' * 52}/guestbook/x")
            assert r.status_code == 403 and r.json()["error"] == "outside_grant"
        listed = owner.get("/.well-known/statebus/app-origins").json()["apps"]
        assert listed[0]["name"] == "guestbook" and listed[0]["version"] == "1.0.0", listed
        assert listed[0]["origin"] == app_url(srv, "guestbook") and listed[0]["launch"] == "/launch/guestbook"
        assert listed[0]["granted"] == grant and listed[0]["capabilities"] == 1, listed
        assert httpx.get(srv.url + "/.well-known/statebus/app-origins").status_code == 401
        assert owner.delete(APPS_PATH + "/guestbook").status_code == 200
        assert srv.server.statebus_app.state.auth.access.capabilities.live("guestbook") == 0  # revoked
        with as_app(srv, "guestbook", cap) as app:
            assert app.get("/~/guestbook/hello").status_code == 404  # no such app any more
        assert httpx.get(srv.url + "/", headers=on_host(srv, "guestbook")).status_code == 404


def test_apps_are_subdomains_of_the_public_host_too(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, public_origins=("https://node.example.org",))
    auth = OwnerAuth(None, node="c" * 52, origins=OriginPolicy.of(settings))
    origins = AppOrigins(settings, auth)

    def scope(host: str) -> dict[str, Any]:  # behind the TLS proxy: plain HTTP to port 8765
        return {
            "type": "http",
            "scheme": "http",
            "server": ("127.0.0.1", 8765),
            "headers": [(b"host", host.encode())],
        }

    assert origins.app_of(scope("guestbook.node.example.org")) == "guestbook"
    assert origins.app_of(scope("guestbook.localhost:8765")) == "guestbook"
    assert origins.app_of(scope("a.b.node.example.org")) == ""  # a subdomain, but no app's name
    for node_host in ("node.example.org", "127.0.0.1:8765", "localhost:8765", "example.org"):
        assert origins.app_of(scope(node_host)) is None, node_host
    headers = {"host": "node.example.org"}
    assert origins.origin_for(scope("node.example.org"), headers, "chat") == "https://chat.node.example.org"
    local = {"host": "127.0.0.1:8765"}
    assert origins.origin_for(scope("127.0.0.1:8765"), local, "chat") == "http://chat.localhost:8765"
    # behind the TLS proxy the app's cookie is __Host- and Secure, and its https pages are its own
    app_headers = {"host": "chat.node.example.org"}
    assert (
        auth.app_cookie_name(scope("chat.node.example.org"), app_headers) == "__Host-statebus_app_" + "c" * 16
    )


def test_launch_codes_and_capability_cookies_never_reach_the_logs() -> None:
    line = "GET /.statebus/launch?code=s3cr3t-c0de HTTP/1.1 cookie: statebus_app_abcd=s3cr3t-cap; x=1"
    out = redact(line)
    assert "s3cr3t" not in out and "/.statebus/launch?code=***" in out, out


def test_an_open_app_survives_a_node_restart(tmp_path: Path) -> None:
    """The capability's hash is kept in the data folder: the app's page goes on after a restart, with
    the grants of its install; a change of the install revokes it for good."""
    grant = {"read": ["guestbook/"], "write": ["guestbook/"], "read_others": []}
    data = tmp_path / "node"
    with live_server(data) as srv:
        install_guestbook(srv.url, srv.auth, tmp_path / "v1", grant)
        cap = launch(srv, "guestbook")
        with as_app(srv, "guestbook", cap) as app:
            assert app.put("/~/guestbook/hello", json="hi").status_code == 200
        stored = data / "app_capabilities.json"
        (secret,) = cap.values()
        assert secret not in stored.read_text() and stored.stat().st_mode & 0o777 == 0o600
    with live_server(data) as srv:
        with as_app(srv, "guestbook", cap) as app:
            assert app.get("/~/guestbook/hello").json() == "hi"
            assert app.put("/~/guestbook/again", json="after the restart").status_code == 200
            r = app.get(f"/{'a' * 52}/guestbook/x")  # the grants are the install's: no read_others
            assert r.status_code == 403 and r.json()["error"] == "outside_grant"
        install_guestbook(srv.url, srv.auth, tmp_path / "v2", {**grant, "read_others": ["guestbook/"]})
        with as_app(srv, "guestbook", cap) as app:
            assert app.get("/~/guestbook/hello").status_code == 401
        assert not stored.exists()
    with live_server(data) as srv, as_app(srv, "guestbook", cap) as app:
        assert app.get("/~/guestbook/hello").status_code == 401
