"""The composition root: identity on first start, signed durable writes, the app's lifespan."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path

import httpx
import pytest

from statebus.config import Settings
from statebus.identity import keystore
from statebus.identity.signing import check_signature
from statebus.oplog import decode_op
from statebus.server import RedactTokens, build_node, create_app, login_url, start


def test_first_start_creates_identity_and_token_then_reuses_them(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", port=0)
    shown: list[str] = []

    async def first() -> str:
        node = build_node(settings, on_new_identity=lambda ident, phrase: shown.append(phrase))
        try:
            await node.save("/~/a", {"x": 1})
            return node.local
        finally:
            await node.aclose()

    pubkey = asyncio.run(first())
    assert len(shown) == 1 and len(shown[0].split()) == 24
    assert keystore.load(settings.data_dir).pubkey == pubkey
    token_file = keystore.identity_dir(settings.data_dir) / keystore.TOKEN_FILE
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = keystore.load_owner_token(settings.data_dir)
    assert login_url(settings, token, 1234) == f"http://{settings.host}:1234/login?token={token}"

    async def second() -> tuple[str, object]:
        node = build_node(settings, on_new_identity=lambda ident, phrase: shown.append(phrase))
        try:
            return node.local, node.fetch("/~/a").value
        finally:
            await node.aclose()

    assert asyncio.run(second()) == (pubkey, {"x": 1})
    assert len(shown) == 1  # no new identity on a restart


def test_writes_are_stored_signed_by_the_node(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", port=0)

    async def run() -> str:
        node = build_node(settings)
        try:
            await asyncio.gather(*(node.save(f"/~/k{i}", i) for i in range(5)))
            return node.local
        finally:
            await node.aclose()

    local = asyncio.run(run())
    from statebus.storage.sqlite import SqliteStorage

    storage = SqliteStorage(settings.data_dir / "store.sqlite3")
    try:
        ops = [decode_op(s.data) for s in storage.scan(f"/{local}/", 0, 100)]
    finally:
        storage.close()
    assert len(ops) == 5
    for op in ops:
        assert op.author == local
        check_signature(op)


def test_app_lifespan_closes_the_node(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "d", port=0))
    node = app.state.node

    async def run() -> None:
        async with app.router.lifespan_context(app):
            await node.save("/~/x", 1)
        assert node.closing and app.state.streams.closing

    asyncio.run(run())


def test_redaction_filter_masks_message_text() -> None:
    record = logging.LogRecord(
        "uvicorn", logging.INFO, __file__, 1, "open /login?token=abc123 now", None, None
    )
    RedactTokens().filter(record)
    assert "abc123" not in record.getMessage()


def test_a_phrase_nobody_saw_is_kept_and_the_node_says_how_to_see_it(tmp_path: Path) -> None:
    from statebus.server import ensure_identity, phrase_reminder

    shown, unseen = tmp_path / "shown", tmp_path / "unseen"
    ensure_identity(shown, lambda ident, phrase: True)  # a terminal showed it
    assert not keystore.phrase_pending(shown) and phrase_reminder(Settings(data_dir=shown)) is None
    seen: list[str] = []
    ensure_identity(unseen, lambda ident, phrase: bool(seen.append(phrase)))  # no terminal
    reminder = phrase_reminder(Settings(data_dir=unseen))
    assert reminder is not None and f"statebus phrase --data {unseen}" in reminder
    assert seen[0] not in reminder  # the reminder never holds the phrase itself
    assert keystore.take_phrase(unseen) == seen[0]
    assert phrase_reminder(Settings(data_dir=unseen)) is None


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    import subprocess
    import sys

    script = (
        "import resource; from statebus.server import raise_open_file_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "got = raise_open_file_limit()\n"
        "assert got == resource.getrlimit(resource.RLIMIT_NOFILE)[0], got\n"
        "print(got, hard)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    got, hard = (int(x) for x in out.stdout.split())
    assert got > 256 and (got == hard or hard == -1)


def test_start_reads_the_token_once_and_hands_one_access_control_to_every_transport(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[object] = []
    real = keystore.load_owner_token
    monkeypatch.setattr(keystore, "load_owner_token", lambda data: reads.append(data) or real(data))
    settings = Settings(data_dir=tmp_path / "n", host="127.0.0.1", port=0, log_level="warning")

    async def main() -> None:
        running = await start(settings, dht=False)
        try:
            app = running.server.statebus_app
            assert app.state.auth.access is running.access
            assert running.endpoints.access is running.access and running.federation.access is running.access
            async with httpx.AsyncClient() as client:
                owner = {"Authorization": f"Bearer {running.token}"}
                info = await client.get(f"{running.url}/.well-known/statebus", headers=owner)
                peer = await client.get(f"{running.url}/.well-known/statebus/node")
            assert info.json()["owner"] is True and peer.status_code == 200
        finally:
            await running.stop()

    asyncio.run(main())
    assert len(reads) == 1
