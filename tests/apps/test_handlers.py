"""The handler kinds on a real node over HTTP: validate (+ JSON Schema), derive, on_write, failures."""

from __future__ import annotations

import asyncio
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from statebus.apps.patterns import Grants
from statebus.apps.spec import AppSpec
from statebus.testing.live_server import LiveServer, live_server

from .support import SOURCE, gb_spec

GET_P99_BOUND = 0.25
"""Seconds: another client's GET p99 while a hostile handler spins through a 1 s call budget on every
write stays under a quarter of that budget: a GET never waits for a handler (docs/apps.md). Measured
here: 4-17 ms at a 100 ms budget (load average 8-12). With the handler run on the event loop instead,
each spin blocks every request for the whole budget (at 100 ms: p99 244 ms, median 110 ms)."""


def on_loop(srv: LiveServer, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on the server's event loop (AppHost.load must be called there)."""
    assert srv.running.task is not None

    async def run() -> Any:
        return fn()

    return asyncio.run_coroutine_threadsafe(run(), srv.running.task.get_loop()).result(30)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


RELAXED = {"app_call_timeout": 1.0}
"""For the tests that are not about budgets: a loaded CI machine never fails a correct handler."""


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path, **RELAXED) as s:
        on_loop(s, lambda: s.running.apps.load(gb_spec(s.local)))
        yield s


@pytest.fixture
def owner(srv: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=30) as c:
        yield c


def test_validate_refuses_a_local_write_with_the_apps_reason(srv: LiveServer, owner: httpx.Client) -> None:
    assert owner.put("/~/gb/entries/1", json={"text": "hello"}).status_code == 200
    r = owner.put("/~/gb/entries/2", json={"text": "x" * 10_000})
    assert r.status_code == 422
    assert r.json()["error"] == "app_rejected"
    assert "at most 280 characters, not 10000" in r.json()["detail"]
    assert owner.get("/~/gb/entries/2").status_code == 404  # nothing changed
    r = owner.put("/~/gb/entries/3", json={"text": "throw"})
    assert (r.status_code, r.json()["error"]) == (422, "app_rejected")
    assert "validateEntry threw: asked to throw" in r.json()["detail"]
    # the JSON Schema covers the common cases without code
    r = owner.put("/~/gb/entries/4", json={"text": 5})
    assert (r.status_code, r.json()["error"]) == (422, "app_rejected")
    assert "does not match its schema at text" in r.json()["detail"]
    # a validated key is written whole: a patch would make a value the validator never saw
    r = owner.patch("/~/gb/entries/1", content=b'"x"', headers={"Content-Range": "json .text"})
    assert r.status_code == 422 and "write it whole" in r.json()["detail"]
    r = owner.put("/~/gb/entries/1", content=b"<b>hi</b>", headers={"Content-Type": "text/html"})
    assert r.status_code == 422 and r.json()["detail"].endswith("write it whole, as JSON (PUT), not as bytes")
    # keys no pattern covers are not validated
    assert owner.put("/~/other/x", json={"text": "y" * 1000}).status_code == 200
    [status] = srv.running.apps.status()
    assert status.state == "running" and status.calls >= 3 and status.rejected == 3


def test_derive_runs_again_when_an_input_changes(srv: LiveServer, owner: httpx.Client) -> None:
    def count() -> Any:
        r = owner.get("/~/gb/count")
        return r.json() if r.status_code == 200 else None

    wait_for(lambda: count() == {"count": 0, "chars": 0}, "the first run")
    assert owner.put("/~/gb/entries/a", json={"text": "hey"}).status_code == 200
    wait_for(lambda: count() == {"count": 1, "chars": 3}, "a new entry (a listed subtree changed)")
    assert owner.put("/~/gb/entries/a", json={"text": "hello"}).status_code == 200
    wait_for(lambda: count() == {"count": 1, "chars": 5}, "an input key changed")
    assert owner.delete("/~/gb/entries/a").status_code == 200
    wait_for(lambda: count() == {"count": 0, "chars": 0}, "the entry deleted")
    r = owner.put("/~/gb/count", json=7)
    assert r.status_code == 405  # a derived key is computed, not written


def test_on_write_writes_inside_its_grants_only(tmp_path: Path) -> None:
    with (
        live_server(tmp_path, **RELAXED) as srv,
        httpx.Client(base_url=srv.url, headers=srv.auth, timeout=30) as owner,
    ):
        spec = gb_spec(srv.local, derive={}, on_write={"gb/entries/*": "onEntry", "gb/bad/*": "writeOutside"})
        on_loop(srv, lambda: srv.running.apps.load(spec))
        assert owner.put("/~/gb/entries/7", json={"text": "hi"}).status_code == 200
        wait_for(lambda: owner.get("/~/gb/last").status_code == 200, "the on_write put")
        assert owner.get("/~/gb/last").json() == {"key": "gb/entries/7", "by": srv.local[:8]}
        assert owner.put("/~/gb/bad/1", json=1).status_code == 200
        wait_for(lambda: srv.running.apps.status()[0].denied >= 1, "the refused put")
        assert owner.get("/~/private/diary").status_code == 404


HOSTILE = {
    "h/spin/*": ("spin", "app_failed", "ran past its time budget"),
    "h/grow/*": ("grow", "app_failed", "ran out of memory"),
    "h/deep/*": ("deep", "app_failed", "recursed too deep"),
    "h/nonjson/*": ("nonJson", "app_failed", "not JSON"),
    "h/huge/*": ("huge", "app_failed", "huge failed"),
    "h/secret/*": ("readSecret", "app_rejected", "outside the app's read grant"),
    "h/put/*": ("putInValidate", "app_rejected", "only on_write handlers write"),
}


def hostile_spec(author: str) -> AppSpec:
    return AppSpec(
        "hostile",
        "0.0.1",
        "sha256-test",
        author,
        Grants.parse(read=["h/"], write=["h/"]),
        SOURCE,
        validate={pattern: fn for pattern, (fn, _, _) in HOSTILE.items()},
    )


def test_hostile_validators_are_stopped_and_the_node_keeps_serving(tmp_path: Path) -> None:
    with live_server(tmp_path) as srv, httpx.Client(base_url=srv.url, headers=srv.auth, timeout=30) as owner:
        on_loop(srv, lambda: srv.running.apps.load(hostile_spec(srv.local)))
        assert owner.put("/~/private/diary", json="secret").status_code == 200
        for pattern, (fn, code, reason) in HOSTILE.items():
            key = "/~/" + pattern.replace("*", "1")
            r = owner.put(key, json={"text": "x"})
            assert (r.status_code, r.json()["error"]) == (422, code), (fn, r.text)
            assert reason in r.json()["detail"], (fn, r.json())
            assert owner.get(key).status_code == 404, fn
            assert owner.get("/~/private/diary").json() == "secret"  # the node keeps serving
        [status] = srv.running.apps.status()
        assert status.traps == 5 and status.restarts == 5 and status.denied == 2 and status.rejected == 2
        assert status.state == "running"  # the last call (a refused host call) ran on a fresh runtime
        metrics = owner.get("/metrics").text
        assert 'statebus_app_calls_total{app="hostile"} 7.0' in metrics
        assert 'statebus_app_traps_total{app="hostile"} 5.0' in metrics
        assert 'statebus_app_call_seconds_count{app="hostile"} 7.0' in metrics


def test_another_clients_get_p99_while_a_handler_spins(tmp_path: Path) -> None:
    with (
        live_server(tmp_path, app_call_timeout=1.0) as srv,
        httpx.Client(base_url=srv.url, headers=srv.auth, timeout=30) as owner,
    ):
        on_loop(srv, lambda: srv.running.apps.load(hostile_spec(srv.local)))
        assert owner.put("/~/plain", json={"a": 1}).status_code == 200
        stop = threading.Event()
        spins: list[int] = []

        def attack() -> None:
            with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=30) as c:
                while not stop.is_set():
                    spins.append(c.put("/~/h/spin/x", json={}).status_code)

        attacker = threading.Thread(target=attack)
        attacker.start()
        try:
            wait_for(lambda: len(spins) >= 1, "the first spin")
            times = []
            for _ in range(200):
                t = time.perf_counter()
                assert owner.get("/~/plain").status_code == 200
                times.append(time.perf_counter() - t)
        finally:
            stop.set()
            attacker.join(30)
        p99 = statistics.quantiles(times, n=100)[98]
        median = statistics.median(times)
        print(f"GET p99 while a handler spins: {p99 * 1000:.1f} ms (median {median * 1000:.1f} ms)")
        assert set(spins) == {422} and len(spins) >= 2
        assert p99 < GET_P99_BOUND


def test_host_log_is_rate_limited_and_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a budget of 1 s (the app_call_timeout setting): 50 host calls fit in it even on a loaded machine
    with (
        live_server(tmp_path, app_call_timeout=1.0) as srv,
        httpx.Client(base_url=srv.url, headers=srv.auth) as owner,
    ):
        spec = AppSpec(
            "talk",
            "1.0.0",
            "sha256-test",
            srv.local,
            Grants.parse(write=["talk/"]),
            SOURCE,
            validate={"talk/*": "chatty"},
        )
        on_loop(srv, lambda: srv.running.apps.load(spec))
        caplog.set_level(logging.INFO, logger="statebus.apps")
        assert owner.put("/~/talk/x", json=1).status_code == 200
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("app talk: line")]
        assert 20 <= len(lines) < 30  # the burst of 20 (and 5 a second after it); the rest are dropped
        assert all("\n" not in line for line in lines) and lines[0] == "app talk: line 0?forged: entry"
        assert srv.running.apps.apps["talk"].logs_dropped == 50 - len(lines)


def test_unloading_an_app_mid_call_never_blocks_the_node(tmp_path: Path) -> None:
    with live_server(tmp_path) as srv, httpx.Client(base_url=srv.url, headers=srv.auth, timeout=30) as owner:
        on_loop(srv, lambda: srv.running.apps.load(hostile_spec(srv.local)))
        assert owner.put("/~/h/secret/1", json=1).status_code == 422  # the runtime is up
        answers: list[int] = []
        writer = threading.Thread(target=lambda: answers.append(owner.put("/~/h/spin/1", json=1).status_code))
        writer.start()
        wait_for(lambda: srv.running.apps.apps["hostile"].runner._running_since is not None, "the spin")
        t = time.monotonic()
        on_loop(srv, lambda: srv.running.apps.unload("hostile"))
        assert time.monotonic() - t < 0.5
        writer.join(30)
        assert answers == [422]
        assert srv.running.apps.status() == []
        assert owner.put("/~/h/spin/2", json=1).status_code == 200  # no validator any more


def test_stopping_the_node_mid_derive_leaves_no_pending_task(tmp_path: Path) -> None:
    # a derive that is still running when the node stops: the host cancels it and waits for it, so the
    # loop never closes over a task still cancelling ("Task was destroyed but it is pending!")
    with live_server(tmp_path, app_call_timeout=2.0) as srv:
        host = srv.running.apps
        on_loop(srv, lambda: host.load(gb_spec(srv.local, derive={"gb/slow": "spin"}, on_write={})))
        wait_for(lambda: host.apps["gb"].runner._running_since is not None, "the derive to start")
        tasks = list(host._tasks)
        assert tasks and not any(t.done() for t in tasks)
    assert all(t.done() for t in tasks), tasks
    assert host._tasks == set()
