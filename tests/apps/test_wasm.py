"""The raw-wasm path: a module speaking the JSON ABI as an app's handler module, with the same limits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from statebus.apps.patterns import Grants
from statebus.apps.sandbox import GuestError, HostDenied, Limits, Trap
from statebus.apps.sandbox.wasm import WasmSandbox, compile_module
from statebus.apps.spec import AppSpec
from statebus.testing.live_server import LiveServer, live_server
from statebus.types import JSON

from .test_handlers import on_loop

WAT = (Path(__file__).parent / "validate.wat").read_text()
FUNCTIONS = ["validate", "spin", "grow", "peek"]


class Host:
    def __init__(self, allowed: dict[str, JSON]) -> None:
        self.allowed = allowed

    def get(self, key: str) -> JSON:
        if key not in self.allowed:
            raise HostDenied(f"host.get: {key} is outside the app's read grant")
        return self.allowed[key]

    def put(self, key: str, value: JSON) -> None:
        raise HostDenied("no")

    def list(self, prefix: str) -> list[str]:
        raise HostDenied("no")

    def log(self, message: str) -> None:
        pass


@pytest.fixture
def sandbox() -> Iterator[WasmSandbox]:
    sb = WasmSandbox(compile_module(WAT), FUNCTIONS, Limits(fuel=5_000_000, call_seconds=1.0))
    yield sb
    sb.close()


def test_validate_answers_and_rejects(sandbox: WasmSandbox) -> None:
    assert sandbox.call("validate", [{"text": "hi"}], 1, Host({})) is True
    with pytest.raises(GuestError, match="validate rejected it"):
        sandbox.call("validate", [{"text": "x" * 1000}], 1, Host({}))


def test_fuel_stops_a_loop_and_the_memory_cap_stops_growth(sandbox: WasmSandbox) -> None:
    with pytest.raises(Trap, match="ran out of fuel"):
        sandbox.call("spin", [], 1, Host({}))
    with pytest.raises(Trap, match="wasm trap"):
        sandbox.call("grow", [], 1, Host({}))
    assert sandbox.memory_bytes() <= 16 << 20


def test_host_get_goes_through_the_grants(sandbox: WasmSandbox) -> None:
    assert sandbox.call("peek", [], 1, Host({})) == "denied"
    assert sandbox.call("peek", [], 1, Host({"private/diary": {"a": 1}})) == {"a": 1}


def test_a_module_asking_for_wasi_or_anything_else_is_refused() -> None:
    wasi = '(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))))'
    with pytest.raises(Trap, match=r"imports wasi_snapshot_preview1\.fd_write: only host\.get"):
        compile_module(wasi)
    with pytest.raises(Trap, match="does not export 'memory'"):
        compile_module('(module (func (export "in_buf") (result i32) (i32.const 0)))')
    with pytest.raises(Trap, match="does not compile"):
        compile_module("(module (func")
    with pytest.raises(Trap, match="over 8388608"):
        compile_module(b"\0asm" + bytes(8 << 20))


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path) as s:
        spec = AppSpec(
            "rawgb",
            "1.0.0",
            "sha256-test",
            s.local,
            Grants.parse(read=["gb/"], write=["gb/"]),
            wasm=WAT,
            validate={"gb/entries/*": "validate", "gb/spin/*": "spin"},
        )
        on_loop(s, lambda: s.running.apps.load(spec))
        yield s


def test_a_wasm_module_validates_an_apps_writes(srv: LiveServer) -> None:
    with httpx.Client(base_url=srv.url, headers=srv.auth, timeout=30) as owner:
        assert owner.put("/~/gb/entries/1", json={"text": "hi"}).status_code == 200
        r = owner.put("/~/gb/entries/2", json={"text": "x" * 1000})
        assert (r.status_code, r.json()["error"]) == (422, "app_rejected")
        r = owner.put("/~/gb/spin/1", json=1)
        assert (r.status_code, r.json()["error"]) == (422, "app_failed")
        assert "ran out of fuel" in r.json()["detail"] or "time budget" in r.json()["detail"]
        assert owner.put("/~/gb/entries/3", json={"text": "still serving"}).status_code == 200
