"""The bus against a plain dict model: random local writes, flushes, compactions and restarts."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from statebus.bus import Bus, Change
from statebus.errors import StatebusError
from statebus.keys import encode_pubkey
from statebus.oplog import DELETE, Patch
from statebus.storage.base import Storage
from statebus.storage.memory import MemoryStorage
from statebus.storage.sqlite import SqliteStorage

ME = encode_pubkey(bytes(31) + b"\x09")
KEYS = [f"/{ME}/m/{name}" for name in ("a", "b", "c/d")]

actions = st.lists(
    st.tuples(
        st.sampled_from(["save", "save", "patch", "unset", "delete", "flush", "compact", "restart"]),
        st.integers(0, len(KEYS) - 1),
        st.integers(0, 5),
    ),
    max_size=40,
)


@settings(max_examples=80, deadline=None)
@given(plan=actions)
def test_bus_matches_a_dict_model(plan: list[tuple[str, int, int]]) -> None:
    check_model(MemoryStorage(), plan)


@settings(max_examples=25, deadline=None)
@given(plan=actions)
def test_bus_on_sqlite_matches_a_dict_model(plan: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        storage = SqliteStorage(Path(tmp) / "store.sqlite3")
        try:
            check_model(storage, plan)
        finally:
            storage.close()


def check_model(storage: Storage, plan: list[tuple[str, int, int]]) -> None:
    bus = Bus(storage, ME, keep_ops=2)
    model: dict[str, Any] = {}
    heard: list[Change] = []
    bus.observe(f"/{ME}/m/", heard.append, snapshot=False)
    live_since = 0
    for i, (action, k, arg) in enumerate(plan):
        key = KEYS[k]
        if action == "save":
            bus.save(key, {"n": i, f"f{arg}": arg})
            model[key] = {"n": i, f"f{arg}": arg}
        elif action == "patch":
            try:
                bus.patch(key, [Patch(f".f{arg}", [i])])
            except StatebusError:
                assert key not in model
            else:
                model[key] = {**model[key], f"f{arg}": [i]}
        elif action == "unset":
            try:
                bus.patch(key, [Patch(f".f{arg}", DELETE)])
            except StatebusError:
                assert key not in model
            else:
                model[key] = {f: v for f, v in model[key].items() if f != f"f{arg}"}
        elif action == "delete":
            try:
                bus.delete(key)
            except StatebusError:
                assert key not in model
            else:
                del model[key]
        elif action == "flush":
            bus.flush()
        elif action == "compact":
            bus.flush()
            bus.compact(key, keep=arg % 3)
        else:
            bus.flush()
            bus = Bus(storage, ME, keep_ops=2)
            heard_before = len(heard)
            bus.observe(f"/{ME}/m/", heard.append, snapshot=False)
            live_since = heard_before
        for kk in KEYS:
            snap = bus.fetch_or_none(kk)
            got = snap.value if snap is not None and snap.exists else None
            assert got == model.get(kk)
    # every change was heard once, in order, and the last one per key matches the model
    seqs = [c.seq for c in heard]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    last: dict[str, Any] = {}
    for c in heard[live_since:]:
        last[c.key] = c.value if c.exists else None
    for kk, v in last.items():
        assert model.get(kk) == v
    bus.flush()
    again = Bus(storage, ME)
    assert again.seq == bus.seq
    assert sorted(again.walk(f"/{ME}/", 100)) == sorted(model)
