"""A signed op and a PUT naming the same unknown ``Parents`` get the same answer (issue 9, defect 9).

Before, the signed-op route stored an op whose parents the node never saw (200) while the owner's PUT
with the same ``Parents`` got 400: a client could graft a write onto a history nobody has.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from statebus.access.limits import parse_rate
from statebus.identity import Identity, sign_op, sign_request
from statebus.oplog import Op, encode_op, mint_version
from statebus.testing.live_server import LiveServer, live_server

OP_TYPE = "application/vnd.statebus.op+json"
CLOCK = itertools.count(1_000)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("parents")) as s:
        yield s


@pytest.fixture
def owner(srv: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as c:
        yield c


def send_op(srv: LiveServer, who: Identity, key: str, value: Any, parents: tuple[str, ...]) -> httpx.Response:
    op = Op(key, "", parents, who.pubkey, next(CLOCK), "lww", "set", value)
    body = encode_op(sign_op(dataclasses.replace(op, version=mint_version(op)), who))
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        req = c.build_request("PUT", key.replace(f"/{srv.local}/", "/~/"), content=body)
        req.headers["content-type"] = OP_TYPE
        req.headers.update(sign_request(req.method, str(req.url), req.headers, req.content, who))
        return c.send(req)


@pytest.mark.parametrize("exists", [True, False], ids=["key with history", "new key"])
def test_unknown_parents_are_400_on_both_routes(srv: LiveServer, owner: httpx.Client, exists: bool) -> None:
    alice = Identity.generate()
    path = f"p{int(exists)}"
    assert owner.put(f"/~/.acl/{path}", json={"read": "signed", "write": [alice.pubkey]}).status_code == 200
    key = f"/{srv.local}/{path}/k"
    if exists:
        assert owner.put(f"/~/{path}/k", json="first").status_code == 200
    seq = srv.node.bus.seq
    by_put = owner.put(f"/~/{path}/k", json="grafted", headers={"Parents": '"9-neverseen"'})
    by_op = send_op(srv, alice, key, "grafted", ("9-neverseen",))
    assert by_put.status_code == by_op.status_code == 400, by_op.text
    assert by_put.json()["error"] == by_op.json()["error"] == "invalid_op"
    assert by_put.json()["detail"] == by_op.json()["detail"]
    assert "unknown parents" in by_op.json()["detail"]
    assert srv.node.bus.seq == seq  # nothing stored
    assert srv.node.bus.fetch_or_none(key) is None or srv.node.bus.fetch(key).value == "first"


def test_known_parents_and_a_resent_op_still_pass(srv: LiveServer, owner: httpx.Client) -> None:
    alice = Identity.generate()
    assert owner.put("/~/.acl/q", json={"read": "signed", "write": [alice.pubkey]}).status_code == 200
    key = f"/{srv.local}/q/k"
    version = owner.put("/~/q/k", json="first").headers["version"].strip('"')
    op = Op(key, "", (version,), alice.pubkey, next(CLOCK), "lww", "set", "second")
    body = encode_op(sign_op(dataclasses.replace(op, version=mint_version(op)), alice))
    for _ in range(2):  # the second time it is stored already: a retry, not an error
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            req = c.build_request("PUT", "/~/q/k", content=body, headers={"content-type": OP_TYPE})
            req.headers.update(sign_request(req.method, str(req.url), req.headers, req.content, alice))
            r = c.send(req)
        assert r.status_code == 200, r.text
    assert srv.node.bus.fetch(key).value == "second"
    assert send_op(srv, alice, key, "third", ()).status_code == 200  # no parents named: on top, as before


def test_a_writer_the_rule_names_is_a_collaborator_not_a_guest(srv: LiveServer, owner: httpx.Client) -> None:
    """Guest limits (per-key rate, quota, "changes only what it wrote") are for keys a ``"signed"``
    rule admits, such as chirp's inbox; a key the rule names may overwrite the owner's value, and
    more often than ``guest_write_rate`` allows a guest."""
    alice, mallory = Identity.generate(), Identity.generate()
    assert owner.put("/~/.acl/team", json={"read": "signed", "write": [alice.pubkey]}).status_code == 200
    assert owner.put("/~/.acl/open", json={"read": "signed", "write": "signed"}).status_code == 200
    for path, who in (("team", alice), ("open", mallory)):
        assert owner.put(f"/~/{path}/doc", json="by the owner").status_code == 200
        head = owner.get(f"/~/{path}/doc").headers["version"].strip('"')
        answer = send_op(srv, who, f"/{srv.local}/{path}/doc", "edited", (head,))
        assert answer.status_code == (200 if who is alice else 403), answer.text
    rate = parse_rate(srv.settings.guest_write_rate).amount  # what one guest key may write per window
    statuses = {send_op(srv, alice, f"/{srv.local}/team/k{i}", i, ()).status_code for i in range(rate + 5)}
    assert statuses == {200}
