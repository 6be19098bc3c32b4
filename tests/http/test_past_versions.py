"""Past versions against a live node: GET with ``Version`` (or ``?version=``) serves the state at
that version while the key's history holds it, 410 with the horizon once compaction folded it, 404
for a version the key never had; never the current value under a past version. ``?history`` lists
a key's versions, a page at a time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from statebus.testing.live_server import LiveServer, live_server


def put(client: httpx.Client, key: str, value: object, version: str) -> None:
    r = client.put(key, json=value, headers={"Version": f'"{version}"'})
    assert r.status_code == 200, r.text


def test_version_header_and_query_serve_the_past(client: httpx.Client) -> None:
    for i in range(1, 4):
        put(client, "/~/v", {"n": i, "list": [i] * i}, f"v{i}")
    r = client.get("/~/v", headers={"Version": '"v1"'})
    assert r.status_code == 200 and r.json() == {"n": 1, "list": [1]}
    assert r.headers["version"] == '"v1"'
    assert r.headers["etag"] != client.get("/~/v").headers["etag"]
    assert client.get("/~/v", params={"version": "v2"}).json() == {"n": 2, "list": [2, 2]}
    assert client.get("/~/v", params={"version": '"v2"'}).json() == {"n": 2, "list": [2, 2]}
    current = client.get("/~/v", headers={"Version": '"v3"'})
    assert (
        current.json() == {"n": 3, "list": [3, 3, 3]}
        and current.headers["etag"] == client.get("/~/v").headers["etag"]
    )
    # a Braid range of a past version
    r = client.get("/~/v", headers={"Version": '"v2"', "Range": "json .list"})
    assert r.status_code == 206 and r.json() == [2, 2]
    # a version this key never had
    r = client.get("/~/v", headers={"Version": '"nope"'})
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_past_versions_of_patches_deletes_and_bytes(client: httpx.Client) -> None:
    put(client, "/~/p", {"a": 1}, "p1")
    client.patch("/~/p", content=b"2", headers={"Content-Range": "json .b", "Version": '"p2"'})
    client.delete("/~/p", headers={"Version": '"p3"'})
    assert client.get("/~/p").status_code == 404
    assert client.get("/~/p", headers={"Version": '"p1"'}).json() == {"a": 1}
    assert client.get("/~/p", headers={"Version": '"p2"'}).json() == {"a": 1, "b": 2}
    assert client.get("/~/p", headers={"Version": '"p3"'}).status_code == 404  # deleted at p3
    for i, data in enumerate((b"first", b"second")):
        client.put("/~/b", content=data, headers={"Content-Type": "text/plain", "Version": f'"b{i}"'})
    r = client.get("/~/b", headers={"Version": '"b0"'})
    assert r.content == b"first" and r.headers["content-type"].startswith("text/plain")
    r = client.get("/~/b", headers={"Version": '"b0"', "Range": "bytes=1-2"})
    assert r.status_code == 206 and r.content == b"ir"


def test_yjs_past_versions(client: httpx.Client) -> None:
    import pycrdt

    doc: pycrdt.Doc = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    updates = []
    for part in ("ab", "cd", "ef"):
        before = doc.get_state()
        text += part
        updates.append(doc.get_update(before))
    for i, update in enumerate(updates):
        r = client.patch(
            "/~/doc",
            content=update,
            headers={"Content-Type": "application/vnd.yjs.update", "Version": f'"y{i}"'},
        )
        assert r.status_code == 200, r.text
    assert client.get("/~/doc").json() == {"t": "abcdef"}
    assert client.get("/~/doc", headers={"Version": '"y0"'}).json() == {"t": "ab"}
    assert client.get("/~/doc", headers={"Version": '"y1"'}).json() == {"t": "abcd"}


@pytest.fixture
def compacting(tmp_path: Path) -> Iterator[tuple[LiveServer, httpx.Client]]:
    with (
        live_server(tmp_path / "node", history_keep_ops=2) as srv,
        httpx.Client(base_url=srv.url, headers=srv.auth, timeout=10) as client,
    ):
        yield srv, client


def test_compacted_versions_are_410_with_the_horizon(compacting: tuple[LiveServer, httpx.Client]) -> None:
    _, client = compacting
    for i in range(12):  # folded many times over (every 2 * keep ops)
        put(client, "/~/c", {"i": i}, f"c{i}")
    listing = client.get("/~/c", params={"history": ""}).json()
    horizon = listing["horizon"]
    assert horizon["seq"] > 0 and horizon["frontier"]
    kept = [v["version"] for v in listing["versions"]]
    assert kept and "c0" not in kept and kept[-1] == "c11"
    r = client.get("/~/c", headers={"Version": '"c0"'})
    assert r.status_code == 410, r.text
    assert r.json()["error"] == "history_compacted"
    assert f"seq {horizon['seq']}" in r.json()["detail"] and horizon["frontier"][0] in r.json()["detail"]
    for name in kept:
        assert client.get("/~/c", headers={"Version": f'"{name}"'}).json() == {"i": int(name[1:])}
    # the horizon itself is still a state the node holds
    base = horizon["frontier"][0]
    assert client.get("/~/c", headers={"Version": f'"{base}"'}).json() == {"i": int(base[1:])}


def test_history_listing_pages(client: httpx.Client, srv: LiveServer) -> None:
    for i in range(5):
        put(client, "/~/h", i, f"h{i}")
    r = client.get("/~/h", params={"history": "", "limit": 2})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    page = r.json()
    assert page["key"] == f"/{srv.local}/h"
    assert [v["version"] for v in page["versions"]] == ["h0", "h1"]
    first = page["versions"][0]
    assert first["parents"] == [] and first["author"] == srv.local and first["kind"] == "set"
    assert page["versions"][1]["parents"] == ["h0"]
    assert page["horizon"] == {"seq": 0, "frontier": []}
    seen = [v["version"] for v in page["versions"]]
    while page["next"] is not None:
        page = client.get("/~/h", params={"history": "", "limit": 2, "after": page["next"]}).json()
        seen += [v["version"] for v in page["versions"]]
    assert seen == [f"h{i}" for i in range(5)]
    seqs = [v["seq"] for v in client.get("/~/h?history").json()["versions"]]
    assert seqs == sorted(seqs)
    assert client.get("/~/never?history").status_code == 404
    assert client.get("/~/h", params={"history": "", "limit": 0}).status_code == 400
    assert client.get("/~/h", params={"history": "", "after": "x"}).status_code == 400
