"""A real ``statebus serve --log-format json`` (with its DHT and a follow): every log line is one JSON
object and none holds the owner token; /metrics exports every metric deploy/grafana-dashboard.json
queries (requests, subscribers, ops/s, fan-out lag, follows by status, DHT peers, …)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from statebus.identity import keystore
from statebus.keys import encode_pubkey
from tests.deploy.conftest import DEPLOY, wait_until

DASHBOARD = DEPLOY / "grafana-dashboard.json"
METRIC = re.compile(r"\b((?:statebus|process)_[a-z_]+)\b")


def dashboard_metrics() -> set[str]:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in board["panels"] for t in panel["targets"]]
    exprs += [v["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    return {m for expr in exprs for m in METRIC.findall(expr)}


def test_the_dashboard_is_valid_json_with_panels() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert board["uid"] == "statebus-node" and len(board["panels"]) >= 10
    wanted = {
        "statebus_http_requests_total",  # requests
        "statebus_event_streams",  # subscribers
        "statebus_commit_ops_total",  # ops/s
        "statebus_fanout_queued_events",  # fan-out lag
        "statebus_follows_by_status",  # follows and their state
        "statebus_dht_neighbours",  # DHT peers
        "statebus_app_traps_total",  # sandbox traps (hosted apps' handlers)
        "statebus_app_calls_total",
        "statebus_app_call_seconds_bucket",
    }
    assert wanted <= dashboard_metrics()


def test_json_logs_hold_no_secret_and_metrics_cover_the_dashboard(tmp_path: Path) -> None:
    data = tmp_path / "node"
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEBUS_")}
    cmd = [sys.executable, "-m", "statebus", "serve", "--port", "0", "--dht-port", "0", "--json"]
    cmd += ["--log-format", "json", "--log-level", "debug", "--data", str(data)]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr, env=env)
    try:
        wait_until(lambda: b"\n" in out.read_bytes() or proc.poll() is not None, 60, "the node to start")
        assert proc.poll() is None, err.read_text()[-2000:]
        banner = json.loads(out.read_text().splitlines()[0])
        url, token = banner["url"], keystore.load_owner_token(data)
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.get(f"/login?token={token}").status_code < 400  # the login link, logged
            assert http.put("/~/notes/a", json={"n": 1}, headers=auth).status_code == 200
            assert http.get("/~/notes/a", headers={"Cookie": f"statebus_login={token}"}).status_code < 500
            assert http.get("/~/notes/a", headers={"Authorization": "Bearer wrong-" + token}).status_code in (
                401,
                403,
            )
            stranger = encode_pubkey(bytes(31) + b"\x07")
            follow = {"pattern": f"/{stranger}/x/", "added": time.time()}
            assert http.put("/~/.follows/f1", json=follow, headers=auth).status_code == 200
            with http.stream("GET", "/~/notes/", headers={**auth, "Accept": "text/event-stream"}) as sse:
                assert sse.status_code == 200  # a subscriber while we scrape
                time.sleep(0.3)
                scrape = http.get("/metrics", headers=auth)
            assert scrape.status_code == 200
        families = list(text_string_to_metric_families(scrape.text))
        exported = {sample.name for family in families for sample in family.samples}
        # a labelled counter with no sample yet (no connection closed) is still declared
        exported |= {f"{f.name}_total" for f in families if f.type == "counter"}
        exported |= {f.name for f in families if f.type == "gauge"}  # the apps' gauges (no app loaded)
        exported |= {
            f"{f.name}_{s}" for f in families if f.type == "histogram" for s in ("bucket", "count", "sum")
        }
        missing = dashboard_metrics() - exported
        assert not missing, f"the dashboard queries metrics /metrics does not export: {sorted(missing)}"
        subscribers = re.search(r"^statebus_event_streams (\S+)$", scrape.text, re.MULTILINE)
        assert subscribers is not None and float(subscribers.group(1)) >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    lines = out.read_text().splitlines()[1:] + err.read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    assert entries and all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
    everything = "\n".join(lines)
    assert token not in everything, "the owner token reached the logs"
    logins = [e for e in entries if e["logger"] == "uvicorn.access" and e["path"].startswith("/login")]
    assert logins and logins[0]["path"] == "/login?token=***" and logins[0]["status"] < 400
    assert any("recovery phrase" in e["message"] and e["level"] == "warning" for e in entries)
