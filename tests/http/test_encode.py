"""Encoding changes for SSE and Braid: what is sent, and that fan-out encodes each change once."""

from __future__ import annotations

from statebus.bus import Bus, Change
from statebus.http.encode import EncodeCache, as_patches, braid_update, sse_event
from statebus.http.subscribe import SseEncoder
from statebus.oplog import Patch
from statebus.storage.memory import MemoryStorage
from statebus.testing.braid_stream import BraidStreamParser

NS = "a" * 51 + "q"


def bus() -> Bus:
    return Bus(MemoryStorage(), local=NS)


def test_linear_patch_goes_as_patches_else_snapshot() -> None:
    b = bus()
    b.save("/~/k", {"a": 1}, version="v1")
    c = b.patch("/~/k", [Patch(".a", 2)], version="v2")
    assert as_patches(c) == (Patch(".a", 2),)
    (u,) = BraidStreamParser().feed(braid_update(c))
    assert u.version == ("v2",) and u.parents == ("v1",) and u.patches is not None
    assert u.patches[0].range == ".a" and u.patches[0].json() == 2
    concurrent = b.patch("/~/k", [Patch(".b", 3)], version="v3", parents=["v1"])
    assert as_patches(concurrent) is None  # not on top of the frontier: send the value
    (s,) = BraidStreamParser().feed(braid_update(concurrent))
    assert s.json() == {"a": 2, "b": 3} and s.version == ("v2", "v3")
    d = b.delete("/~/k", version="v4")
    (gone,) = BraidStreamParser().feed(braid_update(d))
    assert gone.status == "404" and gone.body == b""
    assert b"event: delete\nid: " in sse_event(d, d.seq)


def test_bytes_values() -> None:
    b = bus()
    c = b.save("/~/img", b"\x89PNG", content_type="image/png")
    (u,) = BraidStreamParser().feed(braid_update(c))
    assert u.body == b"\x89PNG" and u.headers["content-type"] == "image/png"
    event = sse_event(c, None)
    assert b'"value_base64":"iVBORw=="' in event and b'"content_type":"image/png"' in event


def test_cache_encodes_once_per_format() -> None:
    b = bus()
    c = b.save("/~/k", 1)
    cache = EncodeCache(size=2)
    first = cache.live_sse(c)
    for _ in range(999):
        assert cache.live_sse(c) is first
        cache.braid(c)
    assert cache.misses == 2 and cache.hits == 999 * 2 - 1
    # bounded: old entries go, and an entry is only used for the very object it was made for
    others = [b.save(f"/~/o{i}", i) for i in range(3)]
    for o in others:
        cache.braid(o)
    assert [cache.get(o, "braid") is not None for o in others] == [False, True, True]
    assert cache.get(c, "braid") is None


def change(key: str, seq: int, *, kind: str = "op", last: bool = True, exists: bool = True) -> Change:
    return Change(f"/{NS}{key}", seq, kind, exists, seq, None, (f"v{seq}",), (), last=last)


def test_sse_backlog_cursors_only_where_resuming_loses_nothing() -> None:
    # a resume over two patterns: backlogs arrive per pattern, are sent in seq order
    enc = SseEncoder(EncodeCache(), 3, reset=False)
    out = enc([change("/a", 5), change("/a", 9), change("/b", 7)])
    ids = [line for line in out.decode().split("\n") if line.startswith("id:")]
    assert ids == ["id: 5", "id: 7", "id: 9"]
    # live duplicates through overlapping patterns are dropped
    live = change("/a", 10)
    assert enc([live, live]).count(b"event: update") == 1
    # a subtree snapshot: one cursor, after the last event (a bare id for the end marker)
    enc = SseEncoder(EncodeCache(), 3, reset=False)
    snap = [
        change("/t/x", 4, kind="snapshot", last=False),
        change("/t/y", 4, kind="snapshot", last=False),
        change("/t/", 4, kind="snapshot", exists=False),
    ]
    text = enc(snap).decode()
    assert text.count("event: snapshot") == 2 and text.count("id:") == 1
    # the cursor rides on the last event sent (clients that read ids from events see it)
    assert text.split("\n\n")[1].startswith("event: snapshot\nid: 4\n")
    # an empty subtree: the cursor goes alone, as a bare id
    enc = SseEncoder(EncodeCache(), 1, reset=False)
    assert enc([change("/t/", 4, kind="snapshot", exists=False)]) == b"id: 4\n\n"
