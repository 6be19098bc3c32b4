"""A data folder encrypted at rest (`statebus init --encrypt`): a real `statebus serve` process writes
planted key names, values and blob bytes, deletes and compacts some, and is killed with SIGKILL (its WAL
left behind). None of the planted strings is then anywhere in the folder, while the same run on a plain
folder (the control) shows them. The node comes back with every acknowledged write; a wrong key or no
key is refused with one line and changes nothing; export works with the key and refuses without it."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest

from statebus.cli import main
from statebus.identity import atrest, keystore
from statebus.storage.sqlite import STORE_FILE
from tests.support.served import ServedNode

KEY_NAME = "plantedkeyname"
VALUE = "planted-value-c0ffee"
BLOB = b"planted-blob-bytes-d00d" * 5000  # 115 KB: over blob_threshold_bytes, several 64 KiB chunks
DELETED = "planted-deleted-value-5eed"


def make_folder(tmp: Path, encrypted: bool) -> tuple[Path, Path | None]:
    data = tmp / "node"
    if not encrypted:
        keystore.init(data)
        return data, None
    key_file = tmp / "keys" / "node.key"
    _, _, key = keystore.init_encrypted(data)
    atrest.write_key_file(key_file, key, data)
    atrest.forget(data)  # this test process holds no key: only the node does
    return data, key_file


def folder_bytes(data: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}


def cli(*args: str, env: dict[str, str], data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "statebus", *args, "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **env},
    )


def write_and_kill(data: Path) -> list[str]:
    """Plant, delete and compact through a served node, then SIGKILL it; return the keys acknowledged."""
    node = ServedNode(data)
    acked: list[str] = []
    try:
        auth = {"Authorization": f"Bearer {keystore.load_owner_token(data)}"}
        with httpx.Client(base_url=node.url, headers=auth, timeout=30) as c:
            for i in range(12):
                for round_ in range(6):  # history_keep_ops = 2: compaction folds (and frees) old ops
                    r = c.put(f"/~/{KEY_NAME}/{i}", json={"text": f"{VALUE}-{i}-{round_}"})
                    assert r.status_code in (200, 201, 204), r.text
                acked.append(f"/~/{KEY_NAME}/{i}")
            for i in range(4):
                assert c.put(f"/~/gone/{i}", json={"text": f"{DELETED}-{i}"}).status_code < 300
                assert c.delete(f"/~/gone/{i}").status_code < 300
            r = c.put("/~/files/photo", content=BLOB, headers={"Content-Type": "application/octet-stream"})
            assert r.status_code < 300, r.text
            r = c.get("/~/files/photo", headers={"Range": "bytes=65530-65560"})  # across a chunk edge
            assert r.status_code == 206 and r.content == BLOB[65530:65561]
            assert c.get("/~/files/photo").content == BLOB
    finally:
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(10)
        node.close()
    return acked


@pytest.fixture
def small_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATEBUS_HISTORY_KEEP_OPS", "2")
    monkeypatch.setenv("STATEBUS_DURABILITY", "process")  # acknowledged writes sit in the WAL


@pytest.mark.usefixtures("small_history")
@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain-control"])
def test_planted_strings_are_absent_from_an_encrypted_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encrypted: bool
) -> None:
    data, key_file = make_folder(tmp_path, encrypted)
    if key_file is not None:
        monkeypatch.setenv("STATEBUS_AT_REST_KEY_FILE", str(key_file))
    acked = write_and_kill(data)
    if key_file is not None:  # the node's log (its stderr, beside the folder) never shows the key
        assert key_file.read_text().strip() not in (tmp_path / "node-stderr.txt").read_text()
    files = folder_bytes(data)
    assert f"{STORE_FILE}-wal" in files and len(files[f"{STORE_FILE}-wal"]) > 0  # the kill left a WAL
    blob_hash = hashlib.sha256(BLOB).hexdigest()
    planted = [KEY_NAME.encode(), VALUE.encode(), DELETED.encode(), BLOB[:23], blob_hash.encode()]
    found = {
        p.decode(): [name for name, body in files.items() if p in body or p.decode() in name] for p in planted
    }
    if encrypted:
        assert all(not where for where in found.values()), found
        assert files[STORE_FILE][:16] != b"SQLite format 3\x00"
    else:  # the control: the same run on a plain folder shows every planted string
        assert all(found.values()), found

    if not encrypted:
        return
    node = ServedNode(data)  # kill -9 lost nothing that was acknowledged
    try:
        auth = {"Authorization": f"Bearer {keystore.load_owner_token(data)}"}
        with httpx.Client(base_url=node.url, headers=auth, timeout=30) as c:
            for i, key in enumerate(acked):
                assert c.get(key).json() == {"text": f"{VALUE}-{i}-5"}
            assert c.get("/~/files/photo").content == BLOB
            assert c.get("/~/gone/0").status_code == 404
    finally:
        node.close()


def test_a_wrong_or_missing_key_is_refused_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, key_file = make_folder(tmp_path, encrypted=True)
    assert key_file is not None
    monkeypatch.setenv("STATEBUS_AT_REST_KEY_FILE", str(key_file))
    node = ServedNode(data)
    try:
        auth = {"Authorization": f"Bearer {keystore.load_owner_token(data)}"}
        assert httpx.put(f"{node.url}/~/{KEY_NAME}", json=VALUE, headers=auth).status_code < 300
    finally:
        node.close()
    before = folder_bytes(data)

    wrong = tmp_path / "keys" / "wrong.key"
    wrong.write_text(os.urandom(32).hex())
    wrong.chmod(0o600)
    inside = data / "node.key"
    inside.write_text(key_file.read_text())
    inside.chmod(0o600)
    before[inside.name] = inside.read_bytes()
    serve = ["serve", "--port", "0", "--dht-port", "0", "--data", str(data)]
    export = ["export", str(tmp_path / "refused.tar"), "--data", str(data)]  # a reader beside the node
    cases = [
        (serve, str(wrong), "does not open the encrypted data folder"),
        (serve, "", "is encrypted at rest and locked"),
        (export, "", "is encrypted at rest and locked"),
        (export, str(inside), "inside the data folder"),
    ]
    for command, given, reason in cases:  # the CLI's own entry point, in this process (no key here)
        monkeypatch.setenv("STATEBUS_AT_REST_KEY_FILE", given)
        with pytest.raises(SystemExit) as exited:
            main(command)
        err = capsys.readouterr().err
        assert exited.value.code == 1, (command, given, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("statebus: error:") and reason in lines[0], lines
        assert key_file.read_text().strip() not in err
    assert folder_bytes(data) == before  # nothing read past the marker, nothing changed
    assert not (tmp_path / "refused.tar").exists()

    done = cli(
        "export", str(tmp_path / "good.tar"), env={"STATEBUS_AT_REST_KEY_FILE": str(key_file)}, data=data
    )
    assert done.returncode == 0, done.stderr
    assert "exported 1 ops" in done.stdout
    with tarfile.open(tmp_path / "good.tar") as tar:  # an archive is plaintext by design (docs/storage.md)
        ops = tar.extractfile("ops.bin")
        assert ops is not None and VALUE.encode() in ops.read()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_statebus_encrypt_copies_a_stopped_plain_node_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from statebus.blobs import BLOB_TYPE, BlobPointer
    from statebus.config import Settings
    from statebus.server import build_node

    old, new, key_file = tmp_path / "old", tmp_path / "new", tmp_path / "keys" / "new.key"
    keystore.init(old)
    node = build_node(Settings(data_dir=old, history_keep_ops=2))
    try:
        for round_ in range(6):  # compacted: snapshots that an export would not carry
            for i in range(4):
                await node.save(f"/~/{KEY_NAME}/{i}", {"text": f"{VALUE}-{i}-{round_}"})
        assert node.blobs is not None
        info = node.blobs.put_bytes(BLOB)
        await node.save(
            "/~/files/photo", BlobPointer(info.hash, info.size, "image/png").encode(), content_type=BLOB_TYPE
        )
        before = {k: node.fetch(k).value for k in node.walk(f"/{node.local}/", 100)}
        history = node.scan(f"/{node.local}/", 0, 1000)
        command = ["encrypt", "--data", str(old), "--to", str(new), "--at-rest-key-file", str(key_file)]
        with pytest.raises(SystemExit):  # the node is running on it (here, in this process)
            main(command)
        assert "is open in process" in capsys.readouterr().err and not new.exists()
    finally:
        await node.aclose()
    assert main(command) == 0
    out = capsys.readouterr().out
    assert f"{len(history)} ops, 4 snapshots, 1 blobs" in out, out
    assert not [
        p for p in (KEY_NAME.encode(), VALUE.encode(), BLOB[:23]) if p in b"".join(folder_bytes(new).values())
    ]
    assert VALUE.encode() in folder_bytes(old)[STORE_FILE]  # the source is left as it was: plaintext

    atrest.forget(new)
    copy = build_node(Settings(data_dir=new, at_rest_key_file=key_file, history_keep_ops=2))
    try:
        assert {k: copy.fetch(k).value for k in copy.walk(f"/{copy.local}/", 100)} == before
        assert copy.scan(f"/{copy.local}/", 0, 1000) == history  # every stored op, byte for byte
        assert copy.blobs is not None and copy.blobs.sealed and copy.blobs.read(info.hash) == BLOB
        await copy.save(f"/~/{KEY_NAME}/0", {"text": "after"})  # and it carries on
    finally:
        await copy.aclose()
        atrest.forget(new)


def test_the_store_refuses_a_wrong_missing_or_needless_key(tmp_path: Path) -> None:
    from statebus.errors import StoreLocked
    from statebus.storage.base import StoredOp
    from statebus.storage.sqlite import SqliteStorage, StoreSnapshot

    key = os.urandom(32)
    sealed, plain = tmp_path / "sealed.sqlite3", tmp_path / "plain.sqlite3"
    for path, k in ((sealed, key), (plain, None)):
        store = SqliteStorage(path, key=k)
        store.append([StoredOp(seq=1, key=f"/ns/{KEY_NAME}", version="1-a", data=VALUE.encode())])
        store.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for path, k, reason in (
        (sealed, None, "encrypted at rest"),
        (sealed, os.urandom(32), "does not open with the key given"),
        (plain, key, "is not encrypted, but a key was given"),
    ):
        with pytest.raises(StoreLocked, match=reason):
            SqliteStorage(path, key=k)
        with pytest.raises(StoreLocked, match=reason):
            StoreSnapshot(path, key=k)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    with StoreSnapshot(sealed, key=key) as snap:
        assert [op.data for op in snap.ops("")] == [VALUE.encode()]
    assert VALUE.encode() not in sealed.read_bytes() and VALUE.encode() in plain.read_bytes()
