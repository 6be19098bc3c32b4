"""The REAL npm braid-http client against statebus (research/braid-http-wire.md §7: 1–6 + optional)."""

from __future__ import annotations

import json

import httpx
import pytest

from statebus.testing.live_server import LiveServer
from tests.support.node_harness import node_available, run_braid_client, start_braid_client, updates

pytestmark = pytest.mark.skipif(not node_available(), reason="needs node and `npm ci` in tests/js")


def owner(srv: LiveServer) -> list[str]:
    return ["--header", f"Authorization: Bearer {srv.token}"]


def response(lines: list[dict[str, object]]) -> dict[str, object]:
    first = lines[0]
    assert first["type"] == "response", lines
    return first


def test_1_2_put_then_get(srv: LiveServer) -> None:
    url = srv.url + "/~/interop/one"
    lines = run_braid_client([url, "--put", '{"a": 1}', "--version", '"x1"', *owner(srv)], timeout=10)
    res = response(lines)
    assert 200 <= int(str(res["status"])) < 300, lines
    lines = run_braid_client([url, *owner(srv)], timeout=10)
    res = response(lines)
    headers = res["headers"]
    assert isinstance(headers, dict)
    assert res["status"] == 200 and "json" in headers["content-type"]
    assert json.loads(str(res["body"])) == {"a": 1}
    assert headers["version"] == '"x1"'
    missing = response(run_braid_client([srv.url + "/~/interop/never", *owner(srv)], timeout=10))
    assert missing["status"] == 404


def test_3_4_subscribe_snapshot_then_live_versions(srv: LiveServer) -> None:
    url = srv.url + "/~/interop/live"
    httpx.put(url, json={"n": 0}, headers={**srv.auth, "Version": '"l0"'})
    with start_braid_client(
        [url, "--subscribe", "--max-updates", "3", "--timeout-ms", "10000", *owner(srv)]
    ) as sub:
        res = sub.wait_for(lambda line: line["type"] == "response", 10)
        assert res["status"] == 209 and "subscribe" in res["headers"]
        first = sub.wait_for(lambda line: line["type"] == "update", 10)
        assert first["version"] == ["l0"] and json.loads(first["body"]) == {"n": 0}
        httpx.put(url, json={"n": 1}, headers={**srv.auth, "Version": '"l1"'})
        second = sub.wait_for(lambda line: line["type"] == "update", 10)
        assert second["version"] == ["l1"] and second["parents"] == ["l0"]
        assert json.loads(second["body"]) == {"n": 1}
        httpx.put(url, json={"n": 2}, headers=srv.auth)  # no Version: the server mints one
        third = sub.wait_for(lambda line: line["type"] == "update", 10)
        assert json.loads(third["body"]) == {"n": 2} and len(third["version"]) == 1
        assert sub.wait_for(lambda line: line["type"] in ("end", "error"), 10)["type"] == "end"


def test_5_resume_with_parents(srv: LiveServer) -> None:
    url = srv.url + "/~/interop/resume"
    for i in range(1, 4):
        httpx.put(url, json=i, headers={**srv.auth, "Version": f'"r{i}"'})
    lines = run_braid_client(
        [url, "--subscribe", "--parents", '"r2"', "--max-updates", "1", *owner(srv)], timeout=10
    )
    assert response(lines)["status"] == 209
    got = updates(lines)
    assert [u["version"] for u in got] == [["r3"]] and json.loads(got[0]["body"]) == 3
    # nothing older is ever re-sent: with the newest version as parent, the stream stays quiet
    lines = run_braid_client(
        [url, "--subscribe", "--parents", '"r3"', "--timeout-ms", "1500", *owner(srv)], timeout=10
    )
    assert updates(lines) == [] and lines[-1] == {"type": "end", "reason": "timeout"}


def test_6_single_patch_put(srv: LiveServer) -> None:
    url = srv.url + "/~/interop/patch"
    httpx.put(url, json={"a": 1, "b": 2}, headers={**srv.auth, "Version": '"p1"'})
    with start_braid_client([url, "--subscribe", "--max-updates", "2", *owner(srv)]) as sub:
        sub.wait_for(lambda line: line["type"] == "update", 10)
        patch = json.dumps([{"unit": "json", "range": ".b", "content": '"two"'}])
        lines = run_braid_client(
            [url, "--patches", patch, "--version", '"p2"', "--parents", '"p1"', *owner(srv)], timeout=10
        )
        assert 200 <= int(response(lines)["status"]) < 300, lines  # type: ignore[call-overload]
        upd = sub.wait_for(lambda line: line["type"] == "update", 10)
        assert upd["version"] == ["p2"]
        assert upd["patches"] == [{"unit": "json", "range": ".b", "content": '"two"'}]
    assert httpx.get(url, headers=srv.auth).json() == {"a": 1, "b": "two"}


def test_optional_two_patches_heartbeats_and_creation(srv: LiveServer) -> None:
    url = srv.url + "/~/interop/opt"
    with start_braid_client([url, "--subscribe", "--max-updates", "3", *owner(srv)]) as sub:
        first = sub.wait_for(lambda line: line["type"] == "update", 10)
        assert first["status"] == "404"  # subscribed before the key exists
        httpx.put(url, json={"a": 0, "c": 0}, headers=srv.auth)
        created = sub.wait_for(lambda line: line["type"] == "update", 10)
        assert json.loads(created["body"]) == {"a": 0, "c": 0}
        patches = json.dumps(
            [
                {"unit": "json", "range": ".a", "content": "10"},
                {"unit": "json", "range": ".c", "content": '{"z":true}'},
            ]
        )
        lines = run_braid_client([url, "--patches", patches, *owner(srv)], timeout=10)
        assert 200 <= int(response(lines)["status"]) < 300, lines  # type: ignore[call-overload]
        both = sub.wait_for(lambda line: line["type"] == "update", 10)
        assert [p["range"] for p in both["patches"]] == [".a", ".c"]
    assert httpx.get(url, headers=srv.auth).json() == {"a": 10, "c": {"z": True}}
    # Heartbeats: echoed, and blank lines keep braid_fetch from timing out (it errors after 1.2*N+3 s)
    lines = run_braid_client(
        [url, "--subscribe", "--heartbeats", "0.5", "--timeout-ms", "4500", *owner(srv)], timeout=10
    )
    res = response(lines)
    assert res["headers"]["heartbeats"] == "0.5s"  # type: ignore[index]
    assert lines[-1] == {"type": "end", "reason": "timeout"}, lines


def test_optional_peer_and_unknown_headers(srv: LiveServer) -> None:
    url = srv.url + "/~/interop/peer"
    httpx.put(url, json=0, headers=srv.auth)
    with start_braid_client([url, "--subscribe", "--peer", "me", "--max-updates", "2", *owner(srv)]) as sub:
        sub.wait_for(lambda line: line["type"] == "update", 10)
        lines = run_braid_client(
            [url, "--put", "1", "--peer", "me", "--header", "put-order: 1", *owner(srv)], timeout=10
        )
        assert 200 <= int(response(lines)["status"]) < 300, lines  # type: ignore[call-overload]
        httpx.put(url, json=2, headers=srv.auth)
        upd = sub.wait_for(lambda line: line["type"] == "update", 10)
        assert json.loads(upd["body"]) == 2  # our own write (same Peer) was not echoed


def test_missing_parents_is_410(srv: LiveServer) -> None:
    url = srv.url + "/~/interop/gone"
    httpx.put(url, json=1, headers=srv.auth)
    lines = run_braid_client([url, "--subscribe", "--parents", '"unknown"', *owner(srv)], timeout=10)
    assert response(lines)["status"] == 410
    assert lines[-1]["type"] == "error"  # braid_fetch refuses anything but 209 for a subscription
