"""GET /metrics against a live node: who may read it, and that writes move the counters."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from statebus.http.metrics import NodeMetrics
from statebus.testing.live_server import LiveServer, live_server


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_a_write_moves_the_counters(srv: LiveServer, client: httpx.Client) -> None:
    before = scrape(client)
    for i in range(5):
        assert client.put(f"/~/metrics/{i}", json={"i": i}).status_code in (200, 201, 204)
    after = scrape(client)
    assert value(after, "statebus_seq") >= value(before, "statebus_seq") + 5
    assert value(after, "statebus_durable_seq") == value(after, "statebus_seq")
    assert value(after, "statebus_commit_ops_total") >= value(before, "statebus_commit_ops_total") + 5
    assert value(after, "statebus_commit_batches_total") > value(before, "statebus_commit_batches_total")
    puts = value(after, "statebus_http_requests_total", method="PUT", code="2xx")
    assert puts - value(before, "statebus_http_requests_total", method="PUT", code="2xx") == 5
    # the scrape itself was counted as a GET 2xx
    assert value(after, "statebus_http_requests_total", method="GET", code="2xx") >= 1
    assert value(after, "statebus_store_bytes", file="db") > 0
    assert value(after, "statebus_event_streams") == srv.node.stream_count
    assert ("process_resident_memory_bytes", ()) in after


def test_errors_are_counted_by_status_class(client: httpx.Client) -> None:
    client.get("/~/no/such/key")
    with httpx.Client(base_url=str(client.base_url)) as anon:
        anon.put("/~/metrics/x", json=1)
    samples = scrape(client)
    assert value(samples, "statebus_http_requests_total", method="GET", code="4xx") >= 1
    assert value(samples, "statebus_http_requests_total", method="PUT", code="4xx") >= 1


def test_an_open_stream_is_counted(srv: LiveServer, client: httpx.Client) -> None:
    client.put("/~/metrics/a", json=1)
    with client.stream("GET", "/~/metrics/", headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200
        seen = b""
        chunks = response.iter_raw()  # keep the iterator: dropping it closes the response
        for chunk in chunks:  # the stream is open once its snapshot arrives
            seen += chunk
            if b"id: " in seen:
                break
        samples = scrape(client)
        assert value(samples, "statebus_event_streams") >= 1
        assert value(samples, "statebus_http_streams") >= 1


def test_anonymous_clients_get_401(srv: LiveServer) -> None:
    with httpx.Client(base_url=srv.url) as anon:
        response = anon.get("/metrics")
        assert response.status_code == 401
        assert "statebus_seq" not in response.text
        assert anon.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_metrics_public_serves_anonymous_clients(tmp_path: Path) -> None:
    with live_server(tmp_path / "node", metrics_public=True) as srv, httpx.Client(base_url=srv.url) as anon:
        samples = scrape(anon)
        assert ("statebus_seq", ()) in samples
        assert srv.token not in anon.get("/metrics").text


def test_nodes_in_one_process_have_their_own_registries(tmp_path: Path) -> None:
    with live_server(tmp_path / "a") as a, live_server(tmp_path / "b") as b:
        with (
            httpx.Client(base_url=a.url, headers=a.auth) as ca,
            httpx.Client(base_url=b.url, headers=b.auth) as cb,
        ):
            ca.put("/~/only-a", json=1)
            sa, sb = scrape(ca), scrape(cb)
        puts_a = value(sa, "statebus_http_requests_total", method="PUT", code="2xx")
        assert puts_a == 1
        assert value(sb, "statebus_http_requests_total", method="PUT", code="2xx") == 0
        metrics_a: NodeMetrics = a.server.statebus_app.state.metrics
        assert metrics_a.registry is not b.server.statebus_app.state.metrics.registry


def test_the_store_can_be_backed_up_while_the_node_runs(
    srv: LiveServer, client: httpx.Client, tmp_path: Path
) -> None:
    """The backup recipe of docs/operations.md: sqlite3's online backup of a live node's store."""
    for i in range(20):
        client.put(f"/~/backup/{i}", json={"i": i})
    copy = tmp_path / "backup.sqlite3"
    source = sqlite3.connect(f"file:{srv.settings.data_dir / 'store.sqlite3'}?mode=ro", uri=True)
    target = sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    client.put("/~/backup/after", json="still writable")
    restored = tmp_path / "restored"
    restored.mkdir()
    (restored / "store.sqlite3").write_bytes(copy.read_bytes())
    for name in ("identity",):
        src = srv.settings.data_dir / name
        dst = restored / name
        dst.mkdir(mode=0o700)
        for f in src.iterdir():
            (dst / f.name).write_bytes(f.read_bytes())
            (dst / f.name).chmod(f.stat().st_mode & 0o777)
    with live_server(restored) as again, httpx.Client(base_url=again.url, headers=again.auth) as c2:
        assert again.local == srv.local
        assert c2.get("/~/backup/7").json() == {"i": 7}
        assert c2.get("/~/backup/after").status_code == 404
