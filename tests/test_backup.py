"""``statebus export`` / ``statebus import``: a round trip through a self-verifying archive, taken
while the node serves and writes; an archive that was tampered with is refused whole."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import httpx
import pytest

from statebus.errors import ArchiveInvalid
from statebus.identity import Identity, keystore
from statebus.oplog import decode_op, encode_op
from statebus.server.archive import canonical, read_archive
from statebus.storage.sqlite import STORE_FILE, SqliteStorage
from statebus.testing.live_server import live_server


def statebus(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEBUS_")}
    return subprocess.run(
        [sys.executable, "-m", "statebus", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=env,
        timeout=60,
    )


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def write_members(path: Path, content: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in content.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, object]]:
    """A node with data, exported while a writer keeps writing; its data folder, the archive and
    the values the archive must hold."""
    tmp = tmp_path_factory.mktemp("backup")
    data, archive = tmp / "a", tmp / "a.tar"
    values: dict[str, object] = {}
    with live_server(data) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        http.headers["Authorization"] = f"Bearer {srv.token}"
        for i in range(30):
            values[f"/~/notes/{i}"] = {"n": i, "text": "é" * i}
            assert http.put(f"/~/notes/{i}", json=values[f"/~/notes/{i}"]).status_code == 200
        assert http.put("/~/notes/3", json={"n": 33}).status_code == 200
        values["/~/notes/3"] = {"n": 33}
        assert http.put("/~/gone", json=1).status_code == 200
        assert http.delete("/~/gone").status_code == 200
        assert http.put("/~/other/x", json="not in the subtree").status_code == 200
        stop = threading.Event()
        writes = []

        def writer() -> None:  # keeps the node busy writing during the export
            with httpx.Client(base_url=srv.url, headers=dict(http.headers), timeout=10) as w:
                n = 0
                while not stop.is_set():
                    assert w.put(f"/~/busy/{n}", json=n).status_code == 200
                    writes.append(n)
                    n += 1

        t = threading.Thread(target=writer)
        t.start()
        try:
            done = statebus("export", "--data", str(data), "--subtree", "/~/notes/", str(archive))
        finally:
            stop.set()
            t.join(30)
        assert done.returncode == 0, done.stderr
        assert writes, "the writer wrote nothing during the export"
        pubkey = srv.running.pubkey
    assert done.stdout.startswith("exported 31 ops (")
    assert f"of /{pubkey}/notes/ at seq " in done.stdout
    return data, archive, values


def test_the_archive_is_documented_and_signed(exported: tuple[Path, Path, dict[str, object]]) -> None:
    data, archive, _ = exported
    content = members(archive)
    assert sorted(content) == ["manifest.json", "ops.bin"]
    manifest = json.loads(content["manifest.json"])
    node = keystore.load(data).pubkey
    assert manifest["format"] == "statebus-archive" and manifest["format_version"] == 1
    assert manifest["node"] == node and manifest["subtree"] == f"/{node}/notes/"
    assert manifest["ops"]["count"] == 31 and manifest["blobs"] == [] and manifest["compacted"] == []
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    checked = read_archive(archive)
    assert all(decode_op(raw).key.startswith(f"/{node}/notes/") for raw in checked.ops)


def test_round_trip_into_a_recovered_node_and_into_another_node(
    exported: tuple[Path, Path, dict[str, object]], tmp_path: Path
) -> None:
    data, archive, values = exported
    node = keystore.load(data).pubkey
    # 1. the same identity on a new machine: the phrase recovers it, the import brings the data back
    words = keystore.take_phrase(data)  # what `statebus phrase` shows the owner once
    fresh = tmp_path / "b"
    recovered = statebus("init", "--recover", "--data", str(fresh), stdin=words)
    assert recovered.returncode == 0 and node in recovered.stdout, recovered.stderr
    done = statebus("import", "--data", str(fresh), str(archive))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"imported 31 ops of node {node} (0 already here, 0 refused)")
    again = statebus("import", "--data", str(fresh), str(archive))  # repeatable: all duplicates now
    assert again.stdout.startswith(f"imported 0 ops of node {node} (31 already here, 0 refused)")
    with live_server(fresh) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        http.headers["Authorization"] = f"Bearer {srv.token}"
        for key, value in values.items():
            assert http.get(key).json() == value, key
        assert http.get("/~/other/x").status_code == 404  # outside the exported subtree
        assert http.put("/~/notes/after", json="writes go on").status_code == 200
    # 2. an existing node with another identity: the ops are verified against their author
    other = tmp_path / "c"
    assert statebus("init", "--data", str(other)).returncode == 0
    done = statebus("import", "--data", str(other), str(archive))
    assert done.returncode == 0 and "(0 already here, 0 refused)" in done.stdout, done.stdout + done.stderr
    with live_server(other) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        http.headers["Authorization"] = f"Bearer {srv.token}"
        assert http.get(f"/{node}/notes/3").json() == {"n": 33}


def _refused(archive: Path, target: Path, reason: str) -> None:
    store = target / STORE_FILE
    before = store.read_bytes() if store.exists() else None
    done = statebus("import", "--data", str(target), str(archive))
    assert done.returncode == 1, done.stdout
    line = done.stderr.strip()
    assert line.startswith("statebus: error: ") and reason in line and "\n" not in line, line
    assert (store.read_bytes() if store.exists() else None) == before  # nothing changed


def test_a_tampered_archive_is_refused_whole(
    exported: tuple[Path, Path, dict[str, object]], tmp_path: Path
) -> None:
    _, archive, _ = exported
    target = tmp_path / "t"
    assert statebus("init", "--data", str(target)).returncode == 0
    content = members(archive)
    manifest = json.loads(content["manifest.json"])
    ops = bytearray(content["ops.bin"])

    # a flipped byte in the ops: the manifest's hash no longer matches
    flipped = bytearray(ops)
    flipped[len(flipped) // 2] ^= 0x01
    write_members(tmp_path / "flip.tar", {**content, "ops.bin": bytes(flipped)})
    _refused(tmp_path / "flip.tar", target, "does not match the manifest's size and SHA-256")

    # the hash fixed up in the manifest: its signature no longer verifies
    forged = {**manifest, "ops": {**manifest["ops"], "sha256": hashlib.sha256(flipped).hexdigest()}}
    write_members(
        tmp_path / "hash.tar", {"manifest.json": json.dumps(forged).encode(), "ops.bin": bytes(flipped)}
    )
    _refused(tmp_path / "hash.tar", target, "manifest's signature does not verify")

    # an op's value changed and the manifest re-signed by another key: the op's own signature fails
    (size,) = struct.unpack_from(">I", ops, 0)
    op = decode_op(bytes(ops[4 : 4 + size]))
    altered = encode_op(dataclasses.replace(op, body={"n": 666}))
    new_ops = struct.pack(">I", len(altered)) + altered + bytes(ops[4 + size :])
    thief = Identity.generate()
    resigned = {
        **manifest,
        "node": thief.pubkey,
        "ops": {**manifest["ops"], "bytes": len(new_ops), "sha256": hashlib.sha256(new_ops).hexdigest()},
    }
    resigned["signature"] = base64.b64encode(thief.sign(canonical(resigned))).decode()
    write_members(tmp_path / "op.tar", {"manifest.json": json.dumps(resigned).encode(), "ops.bin": new_ops})
    with pytest.raises(ArchiveInvalid, match=r"op 1 of 31 is refused \(bad_signature"):
        read_archive(tmp_path / "op.tar")
    _refused(tmp_path / "op.tar", target, "op 1 of 31 is refused (bad_signature")

    # a member that is no part of the format, and a file that is no archive at all
    write_members(tmp_path / "extra.tar", {**content, "../../etc/passwd": b"x"})
    _refused(tmp_path / "extra.tar", target, "unexpected member '../../etc/passwd'")
    (tmp_path / "junk.tar").write_bytes(b"not a tar file at all" * 100)
    _refused(tmp_path / "junk.tar", target, "is not a statebus archive")
    # the untouched archive still imports
    assert statebus("import", "--data", str(target), str(archive)).returncode == 0


def test_export_refuses_to_overwrite_and_needs_a_subtree(
    exported: tuple[Path, Path, dict[str, object]],
) -> None:
    data, archive, _ = exported
    done = statebus("export", "--data", str(data), str(archive))
    assert done.returncode == 1 and "exists: choose a new file name" in done.stderr
    done = statebus("export", "--data", str(data), "--subtree", "/~/notes", str(archive) + ".2")
    assert done.returncode == 1 and "a pattern is a subtree: it ends in '/'" in done.stderr
    assert not Path(str(archive) + ".2").exists()


def test_import_needs_the_node_stopped(
    exported: tuple[Path, Path, dict[str, object]], tmp_path: Path
) -> None:
    _, archive, _ = exported
    with live_server(tmp_path / "busy"):
        done = statebus("import", "--data", str(tmp_path / "busy"), str(archive))
    assert done.returncode == 1 and "stop that node first" in done.stderr
    SqliteStorage.open_folder(tmp_path / "busy").close()  # and the store is fine


def test_blob_members_are_checked_by_their_sha256_name(
    exported: tuple[Path, Path, dict[str, object]], tmp_path: Path
) -> None:
    """Blob members are ``blobs/<sha256>``: one whose bytes do not match its name, or one present but
    not in the signed manifest, is refused; so is one listed that no op's pointer names."""
    data, archive, _ = exported
    identity = keystore.load(data)
    content = members(archive)
    manifest = json.loads(content["manifest.json"])
    blob = b"a blob's bytes"
    name = f"blobs/{hashlib.sha256(blob).hexdigest()}"

    def signed(blobs: dict[str, bytes]) -> dict[str, bytes]:
        m = {**manifest, "blobs": [{"member": n, "bytes": len(b)} for n, b in blobs.items()]}
        m["signature"] = base64.b64encode(identity.sign(canonical(m))).decode()
        return {"manifest.json": json.dumps(m).encode(), "ops.bin": content["ops.bin"], **blobs}

    write_members(tmp_path / "blob.tar", signed({name: blob}))
    with pytest.raises(ArchiveInvalid, match="is named by no op's pointer"):
        read_archive(tmp_path / "blob.tar")
    write_members(tmp_path / "badblob.tar", signed({name: b"other bytes, same length"[: len(blob)]}))
    with pytest.raises(ArchiveInvalid, match="does not match its SHA-256 name"):
        read_archive(tmp_path / "badblob.tar")
    unlisted = signed({})
    unlisted[name] = blob  # present but not in the signed manifest
    write_members(tmp_path / "unlisted.tar", unlisted)
    with pytest.raises(ArchiveInvalid, match="do not match the manifest's list"):
        read_archive(tmp_path / "unlisted.tar")


def test_a_blob_value_round_trips_and_a_tampered_blob_is_refused(tmp_path: Path) -> None:
    """Export copies the bytes of every blob an exported pointer names (``blobs/<sha256>``, listed in
    the signed manifest); import stores them before the ops, so the restored key serves its bytes."""
    data, archive, fresh = tmp_path / "a", tmp_path / "a.tar", tmp_path / "b"
    clip = os.urandom(200_000)  # over blob_threshold_bytes (64 KiB): stored as a blob
    digest = hashlib.sha256(clip).hexdigest()
    with live_server(data) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        http.headers["Authorization"] = f"Bearer {srv.token}"
        r = http.put("/~/media/clip", content=clip, headers={"Content-Type": "video/mp4"})
        assert r.status_code == 200, r.text
        assert http.put("/~/media/title", json="a clip").status_code == 200
        done = statebus("export", "--data", str(data), "--subtree", "/~/media/", str(archive))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("exported 2 ops (") and f"and 1 blobs ({len(clip)} bytes)" in done.stdout
    content = members(archive)
    assert content[f"blobs/{digest}"] == clip
    manifest = json.loads(content["manifest.json"])
    assert manifest["blobs"] == [{"member": f"blobs/{digest}", "bytes": len(clip)}]
    assert manifest["blobs_missing"] == []

    # tampered: the blob's bytes changed (same length), the signed manifest kept: refused, nothing applied
    words = keystore.take_phrase(data)
    assert statebus("init", "--recover", "--data", str(fresh), stdin=words).returncode == 0
    bad = dict(content)
    bad[f"blobs/{digest}"] = bytes([clip[0] ^ 1]) + clip[1:]
    write_members(tmp_path / "bad.tar", bad)
    done = statebus("import", "--data", str(fresh), str(tmp_path / "bad.tar"))
    assert done.returncode == 1 and f"blob blobs/{digest} does not match its SHA-256 name" in done.stderr
    # a blob no op points to, even under a manifest the node signed, is refused too
    identity = keystore.load(fresh)
    stray = b"no pointer names me"
    stray_name = f"blobs/{hashlib.sha256(stray).hexdigest()}"
    m = {**manifest, "blobs": [*manifest["blobs"], {"member": stray_name, "bytes": len(stray)}]}
    m["signature"] = base64.b64encode(identity.sign(canonical(m))).decode()
    write_members(
        tmp_path / "stray.tar", {**content, "manifest.json": json.dumps(m).encode(), stray_name: stray}
    )
    with pytest.raises(ArchiveInvalid, match="is named by no op's pointer"):
        read_archive(tmp_path / "stray.tar")

    done = statebus("import", "--data", str(fresh), str(archive))
    assert done.returncode == 0, done.stderr
    assert "(0 already here, 0 refused) and 1 blobs from" in done.stdout
    with live_server(fresh) as srv, httpx.Client(base_url=srv.url, timeout=10) as http:
        http.headers["Authorization"] = f"Bearer {srv.token}"
        r = http.get("/~/media/clip")
        assert (r.status_code, r.headers["content-type"]) == (200, "video/mp4")
        assert r.content == clip
        r = http.get("/~/media/clip", headers={"Range": "bytes=-10"})
        assert (r.status_code, r.content) == (206, clip[-10:])
        assert http.get("/~/media/title").json() == "a clip"
