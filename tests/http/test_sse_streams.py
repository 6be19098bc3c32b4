"""SSE streams against a real server: snapshots, live changes, exact resume, many keys, reset, pings."""

from __future__ import annotations

import httpx

from statebus.testing.live_server import LiveServer, SseReader, sse_headers


def put(srv: LiveServer, key: str, value: object) -> int:
    r = httpx.put(srv.url + key, json=value, headers=srv.auth)
    assert r.status_code == 200, r.text
    seq: int = r.json()["seq"]
    return seq


def test_snapshot_then_updates_with_cursor_ids(srv: LiveServer) -> None:
    put(srv, "/~/k", {"n": 0})
    with httpx.stream("GET", srv.url + "/~/k", headers=sse_headers(srv), timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-accel-buffering"] == "no"
        sse = SseReader(r)
        first = sse.next_event()
        assert first["event"] == "snapshot" and first["data"]["value"] == {"n": 0} and first["id"] == "1"
        assert sse.retry is not None
        seq = put(srv, "/~/k", {"n": 1})
        ev = sse.next_event()
        assert ev["event"] == "update" and ev["id"] == str(seq) and ev["data"]["value"] == {"n": 1}
        assert ev["data"]["parents"] == first["data"]["version"]
        httpx.patch(srv.url + "/~/k", content=b"2", headers={**srv.auth, "Content-Range": "json .n"})
        ev = sse.next_event()
        assert ev["data"]["patches"] == [[".n", 2]]
        httpx.delete(srv.url + "/~/k", headers=srv.auth)
        ev = sse.next_event()
        assert ev["event"] == "delete" and ev["data"]["deleted"] is True


def test_missing_key_snapshot_then_creation(srv: LiveServer) -> None:
    with httpx.stream("GET", srv.url + "/~/later", headers=sse_headers(srv), timeout=10) as r:
        sse = SseReader(r)
        first = sse.next_event()
        assert first["event"] == "snapshot" and first["data"]["deleted"] is True
        put(srv, "/~/later", 5)
        assert sse.next_event()["data"]["value"] == 5


def test_resume_with_last_event_id_no_gap_no_duplicate(srv: LiveServer) -> None:
    put(srv, "/~/r", 0)
    with httpx.stream("GET", srv.url + "/~/r", headers=sse_headers(srv), timeout=10) as r:
        sse = SseReader(r)
        sse.next_event()
        put(srv, "/~/r", 1)
        assert sse.next_event()["data"]["value"] == 1
        last = sse.last_id
    assert last is not None
    seqs = [put(srv, "/~/r", v) for v in (2, 3, 4)]
    with httpx.stream("GET", srv.url + "/~/r", headers=sse_headers(srv, last), timeout=10) as r:
        sse = SseReader(r)
        events = sse.events(3)
        assert [e["data"]["value"] for e in events] == [2, 3, 4]
        assert [e["id"] for e in events] == [str(s) for s in seqs]
        assert all(e["event"] == "update" for e in events)
        put(srv, "/~/r", 5)
        assert sse.next_event()["data"]["value"] == 5
    # ?since= does the same for clients that cannot set headers
    with httpx.stream("GET", srv.url + f"/~/r?since={seqs[1]}", headers=sse_headers(srv), timeout=10) as r:
        assert [e["data"]["value"] for e in SseReader(r).events(2)] == [4, 5]


def test_subtree_stream_resume_across_keys(srv: LiveServer) -> None:
    put(srv, "/~/t/a", "a0")
    put(srv, "/~/t/b/deep", "b0")
    put(srv, "/~/other", "x")
    with httpx.stream("GET", srv.url + "/~/t/", headers=sse_headers(srv), timeout=10) as r:
        sse = SseReader(r)
        snaps = sse.events(2)
        assert {e["data"]["key"].split("/t/")[1] for e in snaps} == {"a", "b/deep"}
        assert all(e["event"] == "snapshot" for e in snaps)
        assert snaps[0]["id"] is None and snaps[1]["id"] is not None  # one cursor for the whole state
        put(srv, "/~/t/a", "a1")
        assert sse.next_event()["data"]["value"] == "a1"
        last = sse.last_id
    writes = [("/~/t/b/deep", "b1"), ("/~/other", "y"), ("/~/t/c", "c1"), ("/~/t/a", "a2")]
    seqs = [put(srv, k, v) for k, v in writes]
    with httpx.stream("GET", srv.url + "/~/t/", headers=sse_headers(srv, last), timeout=10) as r:
        sse = SseReader(r)
        events = sse.events(3)
        assert [e["data"]["value"] for e in events] == ["b1", "c1", "a2"]
        assert [e["id"] for e in events] == [str(seqs[0]), str(seqs[2]), str(seqs[3])]
        put(srv, "/~/t/new", "n")
        assert sse.next_event()["data"]["value"] == "n"


def test_empty_subtree_sends_a_bare_cursor(srv: LiveServer) -> None:
    put(srv, "/~/x", 1)
    with httpx.stream("GET", srv.url + "/~/empty/", headers=sse_headers(srv), timeout=10) as r:
        sse = SseReader(r)
        put(srv, "/~/empty/k", 1)
        ev = sse.next_event()
        assert ev["data"]["value"] == 1 and ev["id"] == "2"


def test_one_stream_many_keys(srv: LiveServer) -> None:
    put(srv, "/~/m/x", "x0")
    url = srv.url + "/?keys=/~/m/x,/~/m/y&key=/~/m/z/"
    with httpx.stream("GET", url, headers=sse_headers(srv), timeout=10) as r:
        sse = SseReader(r)
        snaps = sse.events(2)
        assert [e["data"].get("value") for e in snaps] == ["x0", None]
        assert snaps[1]["data"]["deleted"] is True
        assert snaps[0]["id"] is None and snaps[1]["id"] is not None  # one cursor for the whole state
        put(srv, "/~/m/other", 0)
        put(srv, "/~/m/y", "y1")
        put(srv, "/~/m/z/1", "z1")
        put(srv, "/~/m/x", "x1")
        assert [e["data"]["value"] for e in sse.events(3)] == ["y1", "z1", "x1"]
    # overlapping patterns deliver each change once
    with httpx.stream(
        "GET", srv.url + "/~/m/?keys=/~/m/x", headers=sse_headers(srv, str(srv.node.seq)), timeout=10
    ) as r:
        sse = SseReader(r)
        put(srv, "/~/m/x", "x2")
        put(srv, "/~/m/y", "y2")
        assert [e["data"]["value"] for e in sse.events(2)] == ["x2", "y2"]


def test_stale_cursor_gets_reset_then_snapshots(srv: LiveServer) -> None:
    put(srv, "/~/z", 1)
    with httpx.stream("GET", srv.url + "/~/z", headers=sse_headers(srv, "999999"), timeout=10) as r:
        sse = SseReader(r)
        reset = sse.next_event()
        assert reset["event"] == "reset" and reset["data"]["reason"]
        snap = sse.next_event()
        assert snap["event"] == "snapshot" and snap["data"]["value"] == 1


def test_pings_and_bad_cursor(srv: LiveServer) -> None:
    with httpx.stream("GET", srv.url + "/~/idle", headers=sse_headers(srv), timeout=10) as r:
        sse = SseReader(r)
        sse.next_event()
        sse.wait_comment("ping")
    r2 = httpx.get(srv.url + "/~/idle", headers=sse_headers(srv, "abc"))
    assert r2.status_code == 400 and r2.json()["error"] == "invalid_value"
    r3 = httpx.get(srv.url + "/", headers=sse_headers(srv))
    assert r3.status_code == 400 and r3.json()["error"] == "invalid_key"
