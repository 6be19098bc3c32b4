"""Reading a past version from a key's history (bus/history.py rule 3): concurrent branches, deletes,
compaction horizons (410) and versions never held (404), on a bare bus."""

from __future__ import annotations

import pytest

from statebus.bus import Bus
from statebus.errors import HistoryCompacted, NotFound
from statebus.keys import encode_pubkey
from statebus.storage.memory import MemoryStorage

LOCAL = encode_pubkey(bytes(31) + b"\x07")
K = f"/{LOCAL}/app/x"


def test_branches_and_merges() -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    bus.save(K, {"v": 0}, version="a")
    bus.save(K, {"v": 1}, version="b1", parents=["a"])
    bus.save(K, {"v": 2}, version="b2", parents=["a"])
    assert set(bus.fetch(K).version) == {"b1", "b2"}
    assert bus.fetch_version(K, ["a"]).value == {"v": 0}
    assert bus.fetch_version(K, ["b1"]).value == {"v": 1}
    assert bus.fetch_version(K, ["b2"]).value == {"v": 2}
    both = bus.fetch_version(K, ["b2", "b1"])
    assert both.value == bus.fetch(K).value and both.version == ("b1", "b2")
    bus.delete(K, version="d", parents=["b1", "b2"])
    with pytest.raises(NotFound):
        bus.fetch_version(K, ["d"])
    assert bus.fetch_version(K, ["b1"]).value == {"v": 1}
    with pytest.raises(NotFound):
        bus.fetch_version(K, ["zz"])
    with pytest.raises(NotFound):
        bus.fetch_version(f"/{LOCAL}/app/none", ["a"])


def test_compaction_horizon() -> None:
    bus = Bus(MemoryStorage(), LOCAL, keep_ops=1000)
    for i in range(6):
        bus.save(K, i, version=f"v{i}")
    bus.flush()
    assert bus.compact(K, keep=2) is not None
    bus.flush()
    page = bus.history_page(K)
    assert [r.version for r in page.versions] == ["v4", "v5"] and page.horizon_frontier == ("v3",)
    assert bus.fetch_version(K, ["v3"]).value == 3  # the base itself
    assert bus.fetch_version(K, ["v4"]).value == 4
    with pytest.raises(HistoryCompacted, match=r"seq 4, frontier v3"):
        bus.fetch_version(K, ["v1"])
    assert bus.history_page(K, after=page.versions[0].seq).versions[0].version == "v5"


def test_a_branch_off_a_folded_state_is_gone() -> None:
    bus = Bus(MemoryStorage(), LOCAL, keep_ops=1000)
    bus.save(K, 0, version="a")
    bus.save(K, 1, version="b1", parents=["a"])
    bus.save(K, 2, version="b2", parents=["a"])  # concurrent with b1
    bus.flush()
    assert bus.compact(K, keep=1) is not None  # a and b1 fold: the base frontier is b1
    bus.flush()
    assert bus.fetch_version(K, ["b1"]).value == 1
    assert bus.fetch_version(K, ["b1", "b2"]).value == bus.fetch(K).value
    with pytest.raises(HistoryCompacted):
        bus.fetch_version(K, ["b2"])  # b2's state without b1 is not in the history any more
    with pytest.raises(HistoryCompacted):
        bus.fetch_version(K, ["a"])


def test_a_version_on_its_way_to_disk_is_not_served_as_stored() -> None:
    bus = Bus(MemoryStorage(), LOCAL)
    bus.save(K, 0, version="a")
    bus.flush()
    bus.save(K, 1, version="b")
    bus.save(K, 2, version="c")  # b and c are not durable yet
    with pytest.raises(NotFound):
        bus.fetch_version(K, ["b"], durable=True)
    assert [r.version for r in bus.history_page(K, durable=True).versions] == ["a"]
    assert bus.fetch_version(K, ["b"]).value == 1  # the bus's own read sees it (node rule 3)
    bus.flush()
    assert bus.fetch_version(K, ["b"], durable=True).value == 1
    assert [r.version for r in bus.history_page(K, durable=True).versions] == ["a", "b", "c"]


def test_yjs_past_versions_across_compaction() -> None:
    import pycrdt

    bus = Bus(MemoryStorage(), LOCAL, keep_ops=1000)
    doc: pycrdt.Doc = pycrdt.Doc()
    text = doc.get("t", type=pycrdt.Text)
    for i in range(6):
        before = doc.get_state()
        text += str(i)
        bus.crdt_update(K, doc.get_update(before), version=f"y{i}", merge="yjs")
    bus.flush()
    assert bus.compact(K, keep=2) is not None
    bus.flush()
    assert bus.history_page(K).horizon_frontier == ("y3",)
    assert bus.fetch_version(K, ["y3"]).value == {"t": "0123"}
    assert bus.fetch_version(K, ["y4"]).value == {"t": "01234"}
    with pytest.raises(HistoryCompacted, match="frontier y3"):
        bus.fetch_version(K, ["y0"])  # folded (the log remembers it): its state is gone
