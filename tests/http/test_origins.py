"""The node's own origins: websocket handshakes and cookie writes from other origins are refused;
the login cookie is the node's own, and ``__Host-`` over TLS (issue 9, defect 2)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from statebus.config import Settings
from statebus.http.auth import cookie_name, cookie_value
from statebus.http.origins import OriginPolicy, normalize_origin
from statebus.http.websocket import WS_PATH
from statebus.testing.live_server import LiveServer, live_server


def test_origins_are_normalized() -> None:
    assert normalize_origin("HTTP://LocalHost:80") == "http://localhost"
    assert normalize_origin("https://node.example.org:443/") == "https://node.example.org"
    assert normalize_origin("ws://127.0.0.1:8765") == "http://127.0.0.1:8765"
    assert normalize_origin("http://[::1]:8765") == "http://[::1]:8765"
    for bad in ("null", "", "file:///etc", "http://a/b", "http://u:p@a", "http://a:99999", "x" * 400):
        assert normalize_origin(bad) is None, bad


def test_own_foreign_and_secure() -> None:
    policy = OriginPolicy(["https://node.example.org"])
    scope = {"type": "http", "scheme": "http"}
    here = {"host": "127.0.0.1:8765"}
    assert not policy.foreign_origin(scope, {**here, "origin": "http://127.0.0.1:8765"})
    assert not policy.foreign_origin(scope, {**here, "origin": "https://node.example.org"})
    assert policy.foreign_origin(scope, {**here, "origin": "http://127.0.0.1:8766"})  # another port
    assert policy.foreign_origin(scope, {**here, "origin": "https://127.0.0.1:8765"})  # another scheme
    assert policy.foreign_origin(scope, {**here, "origin": "null"})  # a sandboxed page
    assert policy.foreign_origin(scope, {**here, "sec-fetch-site": "same-site"})
    assert not policy.foreign_origin(scope, {**here, "sec-fetch-site": "same-origin"})
    assert not policy.foreign_origin(scope, here)  # no browser page: the credentials decide
    assert not policy.is_secure(scope, here)
    assert policy.is_secure(scope, {"host": "node.example.org"})  # behind a TLS proxy
    assert policy.is_secure({"type": "websocket", "scheme": "wss"}, here)


def test_public_addresses_name_origins_too() -> None:
    policy = OriginPolicy.of(Settings(public_addresses=("node.example.org:443", "10.0.0.5:8765")))
    scope = {"type": "http", "scheme": "http"}
    assert not policy.foreign_origin(scope, {"host": "127.0.0.1:8765", "origin": "https://node.example.org"})
    assert not policy.foreign_origin(scope, {"host": "127.0.0.1:8765", "origin": "http://10.0.0.5:8765"})
    assert policy.foreign_origin(scope, {"host": "127.0.0.1:8765", "origin": "https://10.0.0.5:8765"})
    assert policy.is_secure(scope, {"host": "node.example.org"})
    assert not policy.is_secure(scope, {"host": "10.0.0.5:8765"})


def cookie_header(srv: LiveServer) -> dict[str, str]:
    ((name, value),) = srv.cookie.items()
    return {"Cookie": f"{name}={value}"}


def test_cookie_writes_from_another_origin_are_refused(srv: LiveServer) -> None:
    cookie = cookie_header(srv)
    own = {"Origin": srv.url}
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        for headers in (
            {"Origin": "http://127.0.0.1:1"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "same-site"},
            {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
        ):
            for method in ("PUT", "PATCH", "DELETE"):
                r = c.request(method, "/~/csrf", headers={**cookie, **headers}, content=b"1")
                assert r.status_code == 403, (method, headers, r.text)
                assert r.json()["error"] == "forbidden" and "origin" in r.json()["detail"]
        assert c.get("/~/csrf", headers=srv.auth).status_code == 404  # nothing changed
        assert c.put("/~/csrf", headers={**cookie, **own}, json=1).status_code == 200
        assert (
            c.put("/~/csrf", headers={**cookie, "Sec-Fetch-Site": "same-origin"}, json=2).status_code == 200
        )
        assert c.put("/~/csrf", headers=cookie, json=3).status_code == 200  # not a browser page
        # a token in a header is no ambient credential: the origin does not matter then
        assert c.put("/~/csrf", headers={**srv.auth, "Origin": "http://x"}, json=4).status_code == 200
        # reads with the cookie from elsewhere stay allowed (the browser keeps their answers from that page)
        assert c.get("/~/csrf", headers={**cookie, "Origin": "http://x"}).json() == 4


def test_websocket_handshakes_from_another_origin_are_refused(srv: LiveServer) -> None:
    url = srv.url.replace("http://", "ws://") + WS_PATH

    async def main() -> None:
        for headers in (
            {**cookie_header(srv), "Origin": "http://127.0.0.1:1"},
            {"Authorization": f"Bearer {srv.token}", "Origin": "http://127.0.0.1:1"},
            {"Origin": "null"},
        ):
            with pytest.raises(InvalidStatus) as info:
                async with connect(url, additional_headers=headers):
                    pass
            assert info.value.response.status_code == 403
        async with connect(url, additional_headers={**cookie_header(srv), "Origin": srv.url}) as ws:
            await ws.send('{"get": "current_user"}')
            assert '"owner":true' in str(await asyncio.wait_for(ws.recv(), 5))
        async with connect(url.replace("127.0.0.1", "localhost"), origin=None) as ws:  # type: ignore[arg-type]
            await ws.send('{"get": "current_user"}')
            assert '"owner":false' in str(await asyncio.wait_for(ws.recv(), 5))

    asyncio.run(main())


def test_over_tls_the_cookie_is_host_prefixed_and_secure(tmp_path: Path) -> None:
    with live_server(tmp_path / "n", public_origins=("https://node.example.org",)) as srv:
        tls = {"Host": "node.example.org"}  # as a TLS proxy in front of the node forwards it
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            r = c.get("/login", params={"token": srv.token}, headers=tls, follow_redirects=False)
            set_cookie = r.headers["set-cookie"]
            name = cookie_name(srv.local, secure=True)
            value = cookie_value(srv.token, srv.local)
            assert name.startswith("__Host-statebus_") and set_cookie.startswith(f"{name}={value};")
            assert "Secure" in set_cookie and "Path=/" in set_cookie and "Domain" not in set_cookie
            info = c.get("/.well-known/statebus", headers={**tls, "Cookie": f"{name}={value}"})
            assert info.json()["owner"] is True
            # the plain name means nothing on the TLS host (a sibling could set it over http)
            plain = cookie_name(srv.local, secure=False)
            info = c.get("/.well-known/statebus", headers={**tls, "Cookie": f"{plain}={value}"})
            assert info.json()["owner"] is False
            # local plain-HTTP access keeps the plain name
            r = c.get("/login", params={"token": srv.token}, follow_redirects=False)
            assert r.headers["set-cookie"].startswith(f"{plain}={value};")
            assert "Secure" not in r.headers["set-cookie"]


def test_login_clears_the_old_shared_cookie(srv: LiveServer) -> None:
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        r = c.get(
            "/login",
            params={"token": srv.token},
            headers={"Cookie": f"statebus_token={srv.token}"},
            follow_redirects=False,
        )
        cleared = [h for h in r.headers.get_list("set-cookie") if h.startswith("statebus_token=")]
        assert cleared and ("Max-Age=0" in cleared[0] or "expires=Thu, 01 Jan 1970" in cleared[0]), cleared
