"""The JS harnesses work: the real braid-http client and headless Chromium against braid-http's own server.

These tests are the baseline for the HTTP interop tests: if they fail, the harness (not statebus) is broken.
They need `npm ci` in tests/js and /usr/bin/chromium, which `.ci/run` provides; they never skip.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.node_harness import (
    ref_server,
    run_braid_client,
    run_browser,
    start_braid_client,
    updates,
)


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with ref_server() as url:
        yield url


def put(url: str, *args: str) -> dict[str, object]:
    lines = run_braid_client([url, *args], timeout=10)
    assert lines[0]["type"] == "response", lines
    return lines[0]


def test_put_then_get_roundtrip(base: str) -> None:
    res = put(f"{base}/roundtrip", "--put", '{"a": 1}', "--version", '"v1"')
    assert res["status"] == 200
    lines = run_braid_client([f"{base}/roundtrip"], timeout=10)
    assert [line["type"] for line in lines] == ["response", "end"]
    assert lines[0]["status"] == 200
    assert json.loads(lines[0]["body"]) == {"a": 1}
    assert lines[0]["headers"]["version"] == '"v1"'


def test_get_missing_key_is_404(base: str) -> None:
    lines = run_braid_client([f"{base}/nothing"], timeout=10)
    assert lines[0]["status"] == 404


def test_subscribe_snapshot_live_update_and_resume(base: str) -> None:
    put(f"{base}/live", "--put", '{"a": 1, "list": [1, 2]}', "--version", '"v1"')
    with start_braid_client(
        [f"{base}/live", "--subscribe", "--heartbeats", "0.5", "--timeout-ms", "8000"]
    ) as sub:
        first = sub.wait_for(lambda line: line["type"] == "response", timeout=8)
        assert first["status"] == 209
        assert first["headers"]["subscribe"] == "true"
        assert first["headers"]["heartbeats"] == "0.5s"
        snap = sub.wait_for(lambda line: line["type"] == "update", timeout=8)
        assert snap["version"] == ["v1"]
        assert json.loads(snap["body"]) == {"a": 1, "list": [1, 2]}

        # One patch: braid-http sends it as Content-Range; two: as Patches: 2.
        put(f"{base}/live", "--patches", '[{"unit":"json","range":".a","content":"2"}]', "--version", '"v2"')
        two = [
            {"unit": "json", "range": ".b", "content": '"x"'},
            {"unit": "json", "range": ".list[1:1]", "content": "9"},
        ]
        put(f"{base}/live", "--patches", json.dumps(two), "--version", '"v3"')
        u2 = sub.wait_for(lambda line: line["type"] == "update", timeout=8)
        u3 = sub.wait_for(lambda line: line["type"] == "update", timeout=8)
    assert (u2["version"], u2["parents"]) == (["v2"], ["v1"])
    assert u2["patches"] == [{"unit": "json", "range": ".a", "content": "2"}]
    assert (u3["version"], u3["parents"], u3["patches"]) == (["v3"], ["v2"], two)

    resumed = run_braid_client(
        [f"{base}/live", "--subscribe", "--parents", '"v2"', "--max-updates", "1"], timeout=10
    )
    assert [u["version"] for u in updates(resumed)] == [["v3"]]
    assert resumed[-1] == {"type": "end", "reason": "max-updates"}

    final = run_braid_client([f"{base}/live"], timeout=10)
    assert json.loads(final[0]["body"]) == {"a": 2, "list": [1, 9, 2], "b": "x"}


def test_missing_updates_are_reported_as_error(base: str) -> None:
    # the client's clock starts before its request: leave the response time to arrive on a slow machine
    lines = run_braid_client(
        [f"{base}/empty", "--subscribe", "--max-updates", "1", "--timeout-ms", "4000"], timeout=20
    )
    assert lines[0]["status"] == 209, lines
    assert lines[-1]["type"] == "error"
    assert "got 0 of 1 updates" in lines[-1]["error"]


def test_hung_client_is_killed_on_timeout(base: str) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"did not finish"):
        run_braid_client([f"{base}/x", "--subscribe", "--timeout-ms", "60000"], timeout=1.5)
    assert time.monotonic() - started < 8


def test_ref_server_process_is_stopped() -> None:
    with ref_server() as url:
        assert url.startswith("http://127.0.0.1:")
    lines = run_braid_client([f"{url}/k"], timeout=10)
    assert lines[-1]["type"] == "error"


def test_browser_runs_real_braid_fetch_in_chromium(base: str, tmp_path: Path) -> None:
    put(f"{base}/browser", "--put", '{"a": 1}', "--version", '"v1"')
    script = """
    (async () => {
      const got = []
      const res = await braid_fetch('/browser', {subscribe: true})
      res.subscribe(u => {
        got.push({version: u.version, body: u.body_text ?? null,
                  patches: (u.patches || []).map(p => [p.range, p.content_text])})
        if (got.length === 1)
          braid_fetch('/browser', {method: 'PUT', version: ['v2'],
                               patches: [{unit: 'json', range: '.a', content: '5'}]})
        if (got.length === 2) { console.log('two updates'); window.__result = got; window.__done = true }
      }, e => { window.__result = {error: String(e)}; window.__done = true })
    })()
    """
    shot = tmp_path / "page.png"
    out = run_browser(f"{base}/browser", script, timeout=30, inject_braid=True, screenshot=shot)
    assert out["ok"], out
    assert out["result"] == [
        {"version": ["v1"], "body": '{"a":1}', "patches": []},
        {"version": ["v2"], "body": None, "patches": [[".a", "5"]]},
    ]
    assert {"type": "log", "text": "two updates"} in out["console"]
    assert shot.read_bytes().startswith(b"\x89PNG")
    final = run_braid_client([f"{base}/browser"], timeout=10)
    assert json.loads(final[0]["body"]) == {"a": 5}


def test_browser_reports_page_errors(base: str) -> None:
    out = run_browser(f"{base}/nothing", "window.__done = true; throw new Error('boom')", timeout=20)
    assert out["ok"], out
    assert any("boom" in e for e in out["page_errors"]), out


def test_browser_reports_timeout(base: str) -> None:
    started = time.monotonic()
    # The harness's own limit is 1.5 s (the last --timeout-ms wins); the 60 s outer kill only
    # catches a harness that hangs: starting node and Chromium alone can take seconds on a busy machine.
    out = run_browser(
        f"{base}/nothing", "window.__result = 'partial'", timeout=60, extra_args=["--timeout-ms", "1500"]
    )
    assert out["ok"] is False
    assert "Timeout" in out["error"]
    assert time.monotonic() - started < 30  # it stopped at its 1.5 s limit, not the outer one (57 s)
