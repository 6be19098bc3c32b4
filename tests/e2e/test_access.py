"""Access control against a live node: real RFC 9421-signed requests (httpx), signed ops, ACL rules,
delegations, and forged / replayed / tampered / misdirected requests that must change nothing."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from statebus.identity import Identity, delegate, revoke, sign_op, sign_request
from statebus.oplog import Op, encode_op, mint_version
from statebus.testing.live_server import LiveServer, live_server

OP_TYPE = "application/vnd.statebus.op+json"
CLOCK = itertools.count(1)
"""Lamport clocks of the ops made here (a remote op may run at most 2^32 ahead of a key's history)."""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("acl"), sse_ping_interval=0.2) as s:
        yield s


@pytest.fixture
def owner(srv: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as c:
        yield c


@pytest.fixture
def anon(srv: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        yield c


def signed(
    c: httpx.Client, who: Identity, method: str, path: str, *, tamper: Any = None, **kw: Any
) -> httpx.Response:
    """Send a request signed by ``who``; ``tamper(request)`` may change it after signing."""
    sign_kw = {k: kw.pop(k) for k in ("created", "nonce") if k in kw}
    req = c.build_request(method, path, **kw)
    req.headers.update(sign_request(req.method, str(req.url), req.headers, req.content, who, **sign_kw))
    if tamper is not None:
        req = tamper(req)
    return c.send(req)


def make_op(
    who: Identity, key: str, value: Any, *, kind: str = "set", parents: tuple[str, ...] = ()
) -> bytes:
    op = Op(key, "", parents, who.pubkey, next(CLOCK), "lww", kind, value if kind == "set" else None)
    return encode_op(sign_op(dataclasses.replace(op, version=mint_version(op)), who))


def put_rule(owner: httpx.Client, path: str, rule: Any) -> None:
    r = owner.put(f"/~/.acl/{path}", json=rule)
    assert r.status_code == 200, r.text


def store_state(srv: LiveServer) -> tuple[int, list[str]]:
    bus = srv.node.bus
    return bus.seq, bus.walk(f"/{bus.local}/", 10_000)


def test_signed_reads_follow_the_rules(srv: LiveServer, owner: httpx.Client, anon: httpx.Client) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    assert owner.put("/~/r1/post", json={"t": "hi"}).status_code == 200
    # private by default: signed or not, nobody but the owner reads
    assert anon.get("/~/r1/post").status_code == 401
    r = signed(anon, alice, "GET", "/~/r1/post")
    assert r.status_code == 403 and "private by default" in r.json()["detail"]
    put_rule(owner, "r1", {"read": [alice.pubkey]})
    assert signed(anon, alice, "GET", "/~/r1/post").json() == {"t": "hi"}
    assert signed(anon, bob, "GET", "/~/r1/post").status_code == 403
    put_rule(owner, ".lists/friends", [bob.pubkey])
    put_rule(owner, "r1", {"read": ["@friends"]})
    assert signed(anon, bob, "GET", "/~/r1/post").status_code == 200
    assert signed(anon, alice, "GET", "/~/r1/post").status_code == 403
    # the owner signing with the node key is the owner; anyone may read .keys, nobody else .acl
    assert signed(anon, bob, "GET", "/~/.acl/r1").status_code == 403
    assert anon.get("/~/.acl/r1").status_code == 401


def test_listing_hides_what_the_client_may_not_read(owner: httpx.Client, anon: httpx.Client) -> None:
    alice = Identity.generate()
    for k in ("l1/open/a", "l1/open/b", "l1/closed/c", "l1/top"):
        assert owner.put(f"/~/{k}", json=1).status_code == 200
    put_rule(owner, "l1", {"read": [alice.pubkey]})
    put_rule(owner, "l1/closed", {"read": "owner"})
    assert owner.get("/~/l1/").json()["children"] == ["closed/", "open/", "top"]
    assert signed(anon, alice, "GET", "/~/l1/").json()["children"] == ["open/", "top"]
    page = signed(anon, alice, "GET", "/~/l1/?limit=1").json()
    assert isinstance(page.pop("seq"), int)  # the node's cursor, for a stream that sends changes only
    assert page == {
        "key": signed(anon, alice, "GET", "/~/l1/").json()["key"],
        "children": ["open/"],
        "next": "open/",
    }
    assert signed(anon, alice, "GET", "/~/l1/closed/").status_code == 403
    assert anon.get("/~/l1/").status_code == 401


@pytest.mark.parametrize("attack", ["forged", "replayed", "body", "path", "host", "stale", "unsigned-body"])
def test_bad_signatures_are_401_and_change_nothing(
    srv: LiveServer, owner: httpx.Client, anon: httpx.Client, attack: str
) -> None:
    writer = Identity.generate()
    put_rule(owner, f"a-{attack}", {"read": [writer.pubkey], "write": [writer.pubkey]})
    key = f"/{srv.local}/a-{attack}/x"
    body = make_op(writer, key, {"n": 1})
    headers = {"content-type": OP_TYPE}
    kw: dict[str, Any] = {"content": body, "headers": headers}
    tamper = None
    if attack == "forged":

        def tamper(req: httpx.Request) -> httpx.Request:
            sig = req.headers["signature"]
            req.headers["signature"] = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
            return req
    elif attack == "body":
        other = make_op(writer, key, {"n": 2})

        def tamper(req: httpx.Request) -> httpx.Request:
            return httpx.Request(req.method, req.url, headers=req.headers, content=other)
    elif attack == "path":

        def tamper(req: httpx.Request) -> httpx.Request:
            return httpx.Request(req.method, str(req.url) + "y", headers=req.headers, content=req.content)
    elif attack == "host":

        def tamper(req: httpx.Request) -> httpx.Request:
            req.headers["host"] = "evil.example:80"
            return req

        kw["headers"] = {**headers, "host": "evil.example:80"}
    elif attack == "stale":
        kw["created"] = time.time() - 3600
    elif attack == "unsigned-body":

        def tamper(req: httpx.Request) -> httpx.Request:
            del req.headers["content-digest"]
            return req

    before = store_state(srv)
    if attack == "replayed":
        first = signed(anon, writer, "PUT", f"/~/a-{attack}/x", nonce="n-1", **kw)
        assert first.status_code == 200, first.text
        before = store_state(srv)
        again = signed(anon, writer, "PUT", f"/~/a-{attack}/x", nonce="n-1", **kw)
        assert again.status_code == 401 and "replay" in again.json()["detail"]
    else:
        r = signed(anon, writer, "PUT", f"/~/a-{attack}/x", tamper=tamper, **kw)
        assert r.status_code == 401, (attack, r.text)
        assert r.json()["error"] == "bad_signature"
    assert store_state(srv) == before


def test_signed_ops_from_granted_keys(srv: LiveServer, owner: httpx.Client, anon: httpx.Client) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    put_rule(owner, "w1", {"read": "signed", "write": [alice.pubkey]})
    key = f"/{srv.local}/w1/post"
    r = signed(
        anon,
        alice,
        "PUT",
        "/~/w1/post",
        content=make_op(alice, key, "hello"),
        headers={"content-type": OP_TYPE},
    )
    assert r.status_code == 200, r.text
    assert signed(anon, bob, "GET", "/~/w1/post").json() == "hello"
    change = srv.node.bus.changes_since(key, 0)[-1]
    assert change.op is not None and change.op.author == alice.pubkey
    before = store_state(srv)
    # bob may not write; an op signed by bob but submitted by alice is refused; plain JSON is refused
    r = signed(
        anon, bob, "PUT", "/~/w1/post", content=make_op(bob, key, "x"), headers={"content-type": OP_TYPE}
    )
    assert r.status_code == 403
    r = signed(
        anon, alice, "PUT", "/~/w1/post", content=make_op(bob, key, "x"), headers={"content-type": OP_TYPE}
    )
    assert r.status_code == 403 and "author" in r.json()["detail"]
    r = signed(anon, alice, "PUT", "/~/w1/post", json="plain")
    assert r.status_code == 400 and OP_TYPE in r.json()["detail"]
    # an op for another key than the URL; an op whose signature is broken
    r = signed(
        anon,
        alice,
        "PUT",
        "/~/w1/post",
        content=make_op(alice, key + "2", "x"),
        headers={"content-type": OP_TYPE},
    )
    assert r.status_code == 400
    bad = make_op(alice, key, "y").replace(b'"s":"', b'"s":"AAAA')
    r = signed(anon, alice, "PUT", "/~/w1/post", content=bad, headers={"content-type": OP_TYPE})
    assert r.status_code in (400, 401)
    forged = dataclasses.replace(
        sign_op(
            dataclasses.replace(Op(key, "v9", (), alice.pubkey, 9, "lww", "set", "a"), version="v9"), alice
        ),
        body="b",
    )
    r = signed(anon, alice, "PUT", "/~/w1/post", content=encode_op(forged), headers={"content-type": OP_TYPE})
    assert r.status_code == 401 and r.json()["error"] == "bad_signature"
    # the owner may not write .acl as a delegate would, and anonymous clients cannot write at all
    assert anon.put("/~/w1/post", json="anon").status_code == 401
    assert store_state(srv) == before
    # a delete is an op too
    r = signed(
        anon,
        alice,
        "PUT",
        "/~/w1/post",
        content=make_op(alice, key, None, kind="delete"),
        headers={"content-type": OP_TYPE},
    )
    assert r.status_code == 200, r.text
    assert owner.get("/~/w1/post").status_code == 404


def test_delegated_keys_write_in_scope_until_revoked(
    srv: LiveServer, owner: httpx.Client, anon: httpx.Client
) -> None:
    from statebus.identity import keystore

    root = keystore.load(srv.settings.data_dir)
    phone = Identity.generate()
    rec = delegate(root, phone.pubkey, [f"/{root.pubkey}/d1/"], issued=1)
    assert owner.put(rec.key.replace(root.pubkey, "~", 1), json=rec.to_json()).status_code == 200
    key = f"/{root.pubkey}/d1/note"
    r = signed(
        anon, phone, "PUT", "/~/d1/note", content=make_op(phone, key, 1), headers={"content-type": OP_TYPE}
    )
    assert r.status_code == 200, r.text
    assert signed(anon, phone, "GET", "/~/d1/note").json() == 1  # delegates read their scope
    outside = f"/{root.pubkey}/d2/note"
    r = signed(
        anon,
        phone,
        "PUT",
        "/~/d2/note",
        content=make_op(phone, outside, 1),
        headers={"content-type": OP_TYPE},
    )
    assert r.status_code == 403
    # the delegate may not write delegation records (not even its own)
    forged = delegate(root, phone.pubkey, [f"/{root.pubkey}/"], issued=5)
    r = signed(
        anon,
        phone,
        "PUT",
        f"/~/.keys/{phone.pubkey}",
        content=make_op(phone, forged.key, forged.to_json()),
        headers={"content-type": OP_TYPE},
    )
    assert r.status_code == 403
    # garbage records are refused even from the owner
    assert owner.put(f"/~/.keys/{phone.pubkey}", json={"type": "nope"}).status_code == 400
    assert (
        owner.put(
            rec.key.replace(root.pubkey, "~", 1), json=revoke(root, phone.pubkey, issued=2).to_json()
        ).status_code
        == 200
    )
    before = store_state(srv)
    r = signed(
        anon, phone, "PUT", "/~/d1/note", content=make_op(phone, key, 2), headers={"content-type": OP_TYPE}
    )
    assert r.status_code == 403 and "revoked" in r.json()["detail"]
    assert store_state(srv) == before


def test_other_namespaces(srv: LiveServer, owner: httpx.Client, anon: httpx.Client) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    mine = f"/{alice.pubkey}/blog/1"
    before = store_state(srv)
    # alice writing her own namespace here: refused until the node hosts it
    r = signed(anon, alice, "PUT", mine, content=make_op(alice, mine, "a"), headers={"content-type": OP_TYPE})
    assert r.status_code == 403 and ".host" in r.json()["detail"]
    # alice writing bob's namespace: refused (not her namespace, no delegation)
    theirs = f"/{bob.pubkey}/blog/1"
    r = signed(
        anon, alice, "PUT", theirs, content=make_op(alice, theirs, "a"), headers={"content-type": OP_TYPE}
    )
    assert r.status_code == 403
    # the node owner cannot write another namespace with its token either
    assert owner.put(theirs, json="x").status_code == 403
    assert store_state(srv) == before
    put_rule(owner, ".host", [alice.pubkey])
    r = signed(anon, alice, "PUT", mine, content=make_op(alice, mine, "a"), headers={"content-type": OP_TYPE})
    assert r.status_code == 200, r.text
    assert owner.get(mine).json() == "a"  # the node owner reads what its node stores
    assert anon.get(mine).status_code == 401  # alice's namespace is private by default here too


def test_deny_list_beats_rules(srv: LiveServer, owner: httpx.Client, anon: httpx.Client) -> None:
    mallory = Identity.generate()
    assert owner.put("/~/public/deny-test", json="hi").status_code == 200
    assert signed(anon, mallory, "GET", "/~/public/deny-test").status_code == 200
    put_rule(owner, ".deny", [mallory.pubkey])
    r = signed(anon, mallory, "GET", "/~/public/deny-test")
    assert r.status_code == 403 and "deny" in r.json()["detail"]
    assert anon.get("/~/public/deny-test").status_code == 200
    assert owner.delete("/~/.acl/.deny").status_code == 200
    assert signed(anon, mallory, "GET", "/~/public/deny-test").status_code == 200


def test_invalid_rules_are_refused(owner: httpx.Client) -> None:
    assert owner.put("/~/.acl/x", json={"read": "everyone"}).status_code == 400
    assert owner.put("/~/.acl/.nope", json={"read": "public"}).status_code == 400
    assert owner.put("/~/.acl/.deny", json={"read": "public"}).status_code == 400
    r = owner.patch("/~/.acl/x", content=b'"public"', headers={"content-range": "json .read"})
    assert r.status_code in (400, 404)
    assert owner.get("/~/.acl/x").status_code == 404


def test_openapi_document(anon: httpx.Client) -> None:
    doc = anon.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.") and "/~/{path}" in doc["paths"]
