"""The DHT record over HTTP (statebus.http.dht): a node's own record as published, with when and to how
many DHT nodes it was stored, and lookups of another node's record, on real nodes in one DHT."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path

import httpx
import pytest

from statebus.federation.dht_record import verify_record
from statebus.federation.dht_view import MAX_LOOKUPS
from statebus.keys.paths import encode_pubkey
from statebus.server import Cluster
from statebus.testing.live_server import live_server

pytestmark = pytest.mark.anyio

DHT = "/.well-known/statebus/dht"


def checked(doc: dict[str, object], dht: str) -> None:
    """The document's wire bytes verify, and say what its fields say."""
    signed = base64.b64decode(str(doc["signed"]))
    record = verify_record(signed, time.time(), dht)
    assert base64.b64decode(str(doc["signature"])) == signed[:64]
    assert [record.pubkey, list(record.addrs), record.seq, record.expires] == [
        doc["pubkey"],
        doc["addrs"],
        doc["seq"],
        doc["expires"],
    ]


async def test_own_record_and_a_lookup_over_http(cluster: Cluster) -> None:
    a = await cluster.add("a")
    before = time.time()
    b = await cluster.add("b")  # b publishes into a DHT where a already is
    async with httpx.AsyncClient() as http:
        own = (await http.get(b.url + DHT)).json()  # no login: the record is public in the DHT anyway
        found = await http.get(f"{a.url}{DHT}/{b.pubkey}")
        bad = await http.get(f"{a.url}{DHT}/not-a-key")
        nobody = await http.get(f"{a.url}{DHT}/{'a' * 52}")
    assert own["dht"] == "devnet" and own["pubkey"] == b.pubkey, own
    assert own["record"]["addrs"] == [b.url] and own["stored_on"] == 1, own  # a took it
    assert before - 1 <= own["published"] <= time.time() and own["neighbours"] >= 1, own
    checked(own["record"], "devnet")
    assert found.status_code == 200, found.text
    assert found.json() == own["record"]  # what a finds in the DHT is what b published, signature and all
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_key", bad.text
    assert nobody.status_code == 404 and "no record of" in nobody.json()["detail"], nobody.text


async def test_lookups_are_capped_and_rate_limited(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    a = await cluster.add("a", rate_limit_per_ip="8/minute")
    assert a.directory is not None
    release = asyncio.Event()

    async def slow(pubkey: str) -> None:  # a DHT that answers only when told
        await release.wait()

    monkeypatch.setattr(a.directory, "resolve", slow)
    url = f"{a.url}{DHT}/{encode_pubkey(os.urandom(32))}"
    async with httpx.AsyncClient(timeout=30) as http:
        running = [asyncio.ensure_future(http.get(url)) for _ in range(MAX_LOOKUPS)]
        await asyncio.sleep(0.5)
        over_cap = await http.get(url)
        release.set()
        done = await asyncio.gather(*running)
        statuses = [(await http.get(url)).status_code for _ in range(4)]
    assert over_cap.status_code == 429 and "DHT lookups are running" in over_cap.json()["detail"], (
        over_cap.text
    )
    assert [r.status_code for r in done] == [404] * MAX_LOOKUPS
    assert statuses[-1] == 429 and statuses[0] == 404, statuses  # 8 a minute from one address


def test_a_node_in_no_dht_says_so(tmp_path: Path) -> None:
    with live_server(tmp_path / "solo") as srv:  # started without a DHT
        own = httpx.get(srv.url + DHT)
        lookup = httpx.get(f"{srv.url}{DHT}/{srv.node.local}")
    assert own.status_code == 200 and own.json() == {"dht": None, "record": None}, own.text
    assert lookup.status_code == 404 and "in no DHT" in lookup.json()["detail"], lookup.text
