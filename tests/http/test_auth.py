"""Owner access over HTTP: bearer token, login cookie, anonymous public reads, no token leaks."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from statebus.errors import CLIENT_DOCS
from statebus.http.auth import ANONYMOUS, OWNER, OwnerAuth, can_read, can_write, is_public
from statebus.testing.live_server import LiveServer


def test_policy_functions() -> None:
    ns = "a" * 51 + "q"
    assert is_public(f"/{ns}/public/x") and is_public(f"/{ns}/public/")
    assert not is_public(f"/{ns}/public") and not is_public(f"/{ns}/private/public/x")
    assert can_read(ANONYMOUS, f"/{ns}/public/x") and not can_read(ANONYMOUS, f"/{ns}/x")
    assert not can_write(ANONYMOUS, f"/{ns}/public/x")
    assert can_read(OWNER, f"/{ns}/x") and can_write(OWNER, f"/{ns}/x")
    auth = OwnerAuth("secret-token")
    assert auth.check_token("secret-token") and not auth.check_token("secret-tokex")
    assert not auth.check_token("") and "secret" not in repr(auth)
    assert not OwnerAuth(None).check_token("anything")


def test_refusals_tell_a_new_client_how_to_sign_in_and_how_keys_begin(srv: LiveServer) -> None:
    """A stock client's first 401 and 400 (issue 20, item 4): one sentence on what to do, and the docs."""
    with httpx.Client(base_url=srv.url) as anon:
        for method in ("GET", "PUT"):
            r = anon.request(method, "/~/notes/1", content=b"1")
            assert r.status_code == 401 and r.json()["error"] == "unauthorized", method
            assert "Authorization: Bearer" in r.json()["detail"] and CLIENT_DOCS in r.json()["detail"]
        r = anon.get("/~/x", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized" and "wrong" not in r.text
    with httpx.Client(base_url=srv.url, headers=srv.auth) as owner:
        r = owner.put("/notes/1", json=1)  # no namespace: the key's first segment is not a pubkey
        assert r.status_code == 400 and r.json()["error"] == "invalid_key"
        assert "/~/" in r.json()["detail"] and CLIENT_DOCS in r.json()["detail"]
    assert (Path(__file__).parents[2] / CLIENT_DOCS.split("#")[0]).read_text().count(
        "## Using a generic Braid or statebus client"
    ) == 1


def test_anonymous_reads_public_only_and_writes_nothing(srv: LiveServer) -> None:
    owner = httpx.Client(base_url=srv.url, headers=srv.auth)
    anon = httpx.Client(base_url=srv.url)
    with owner, anon:
        assert owner.put("/~/public/hello", json="hi").status_code == 200
        assert owner.put("/~/secret", json="psst").status_code == 200
        assert anon.get("/~/public/hello").json() == "hi"
        assert anon.get("/~/public/").json()["children"] == ["hello"]
        r = anon.get("/~/secret")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "psst" not in r.text
        for method in ("PUT", "PATCH", "DELETE"):
            w = anon.request(method, "/~/public/hello", content=b'"x"', headers={"Content-Range": "json"})
            assert w.status_code == 401, method
        assert anon.get("/~/", headers={"Accept": "text/event-stream"}).status_code == 401
        assert anon.get("/~/secret", headers={"Subscribe": "true"}).status_code == 401
        assert (
            anon.get(
                "/~/public/hello", params={"keys": "/~/secret"}, headers={"Accept": "text/event-stream"}
            ).status_code
            == 401
        )
        assert owner.get("/~/public/hello").json() == "hi"


def test_wrong_token_is_401_and_never_echoed(srv: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bad = srv.token[:-3] + "zzz"
    with httpx.Client(base_url=srv.url) as c:
        r = c.get("/~/public/x", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and bad not in r.text
        r = c.get("/~/x", headers={"Authorization": f"Basic {srv.token}"})
        assert r.status_code == 401 and srv.token not in r.text
        r = c.get("/login", params={"token": bad}, follow_redirects=False)
        assert r.status_code == 401 and bad not in r.text and "set-cookie" not in r.headers
        # a stale cookie is ignored: the client is anonymous
        for name in srv.cookie:
            c.cookies.set(name, bad)
        r = c.get("/~/x")
        assert r.status_code == 401
    server_logs = [r.getMessage() for r in caplog.records if r.name.startswith(("statebus", "uvicorn"))]
    assert not any(srv.token in m or bad in m for m in server_logs)


def test_access_log_redacts_tokens() -> None:
    from statebus.server import RedactTokens

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/login?token=s3cret&x=1", "1.1", 303),
        None,
    )
    assert RedactTokens().filter(record)
    assert "s3cret" not in record.getMessage() and "token=***&x=1" in record.getMessage()


def test_login_sets_cookie_and_redirects(srv: LiveServer) -> None:
    with httpx.Client(base_url=srv.url) as c:
        r = c.get("/login", params={"token": srv.token}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        ((name, value),) = srv.cookie.items()
        assert cookie.startswith(f"{name}={value};") and name == "statebus_" + srv.local[:16]
        assert srv.token not in cookie  # the cookie holds a value derived from the token
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "Secure" not in cookie and "Domain" not in cookie and "Path=/" in cookie
        c.cookies.set(name, value)
        assert c.put("/~/by-cookie", json=1).status_code == 200
        assert c.get("/~/by-cookie").json() == 1
        root = c.get("/")
        assert root.status_code == 200
