"""Derived (reactive) keys over HTTP and SSE on a live node: read rules, resume, writes, failures."""

from __future__ import annotations

from typing import Any

import httpx

from statebus.testing.live_server import LiveServer, SseReader, sse_headers


def put(srv: LiveServer, key: str, value: object) -> int:
    r = httpx.put(srv.url + key, json=value, headers=srv.auth)
    assert r.status_code == 200, r.text
    seq: int = r.json()["seq"]
    return seq


def test_a_derived_key_carries_the_read_rules_of_its_inputs(srv: LiveServer) -> None:
    put(srv, "/~/private/salary", 8)
    put(srv, "/~/public/greeting", "hi")
    srv.node.reactive("/~/public/leak", lambda key, get: {"salary": get("/~/private/salary")})
    srv.node.reactive("/~/public/fine", lambda key, get: {"greeting": get("/~/public/greeting")})
    srv.node.reactive("/~/public/chained", lambda key, get: {"via": get("/~/public/leak")})
    anonymous = httpx.get(srv.url + "/~/public/leak")
    assert anonymous.status_code == 401 and "8" not in anonymous.text
    assert anonymous.json()["error"] == "unauthorized"
    assert httpx.get(srv.url + "/~/public/chained").status_code == 401  # through a derived input too
    assert httpx.get(srv.url + "/~/public/fine").json() == {"greeting": "hi"}
    owner = httpx.get(srv.url + "/~/public/leak", headers=srv.auth)
    assert owner.status_code == 200 and owner.json() == {"salary": 8}
    sse = httpx.get(srv.url + "/~/public/leak", headers={"Accept": "text/event-stream"}, timeout=10)
    assert sse.status_code == 401


def test_a_resumed_stream_gets_the_derived_value_that_changed_while_away(srv: LiveServer) -> None:
    put(srv, "/~/a", 3)
    put(srv, "/~/b", 5)
    srv.node.reactive("/~/sum", lambda key, get: (get("/~/a") or 0) + (get("/~/b") or 0))
    with httpx.stream("GET", srv.url + "/~/sum", headers=sse_headers(srv), timeout=10) as r:
        reader = SseReader(r)
        assert reader.next_event()["data"]["value"] == 8
        last = reader.last_id
    assert last is not None
    put(srv, "/~/b", 12)  # while the client is away
    assert httpx.get(srv.url + "/~/sum", headers=srv.auth).json() == 15
    with httpx.stream("GET", srv.url + "/~/sum", headers=sse_headers(srv, last), timeout=10) as r:
        reader = SseReader(r)
        ev = reader.next_event()
        assert ev["data"]["value"] == 15
        last = reader.last_id
        put(srv, "/~/a", 4)
        assert reader.next_event()["data"]["value"] == 16
        last = reader.last_id
    # resuming from the newest cursor repeats nothing: the next event is the next change
    with httpx.stream("GET", srv.url + "/~/sum", headers=sse_headers(srv, last), timeout=10) as r:
        reader = SseReader(r)
        put(srv, "/~/a", 5)
        assert reader.next_event()["data"]["value"] == 17


def test_writes_to_a_derived_key_answer_405_and_change_nothing(srv: LiveServer) -> None:
    put(srv, "/~/in", 2)
    srv.node.reactive("/~/out", lambda key, get: {"double": get("/~/in") * 2})
    writes: list[tuple[str, dict[str, Any]]] = [
        ("PUT", {"json": {"double": 99}}),
        ("PATCH", {"content": b"99", "headers": {**srv.auth, "Content-Range": "json .double"}}),
        ("DELETE", {}),
    ]
    for method, kw in writes:
        kw.setdefault("headers", srv.auth)
        r = httpx.request(method, srv.url + "/~/out", **kw)
        assert r.status_code == 405, (method, r.text)
        assert r.json()["error"] == "derived_key" and "derived" in r.json()["detail"]
        assert "GET" in r.headers["allow"]
    assert httpx.get(srv.url + "/~/out", headers=srv.auth).json() == {"double": 4}


def test_a_function_that_raises_answers_500_reactive_failed(srv: LiveServer) -> None:
    put(srv, "/~/d", 0)

    def inverse(key: str, get: Any) -> Any:
        if get("/~/d") == 0:
            raise ZeroDivisionError("secret-token-123")
        return 1 / get("/~/d")

    srv.node.reactive("/~/inv", inverse)
    r = httpx.get(srv.url + "/~/inv", headers=srv.auth)
    assert r.status_code == 500 and r.json()["error"] == "reactive_failed"
    assert "ZeroDivisionError" in r.json()["detail"] and "secret" not in r.text
    put(srv, "/~/d", 4)
    assert httpx.get(srv.url + "/~/inv", headers=srv.auth).json() == 0.25
