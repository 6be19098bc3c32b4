"""An owner whose data folder is encrypted at rest pushes to its mirror (the push's snapshot scan unlocks
the store), loses its folder, recovers a new encrypted folder from the phrase alone (the at-rest key
derives from it) and restores everything from the mirror into it; neither folder shows a planted string."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import httpx
import pytest

from statebus.config import Settings
from statebus.federation.mirror_restore import restore_from_mirror
from statebus.identity import atrest, keystore
from statebus.mirror.push import MirrorTargets, push
from statebus.server import Cluster, build_node
from tests.mirror.test_mirror import BLOB_MARK, SECRET_KEY, SECRET_VALUE, _files, _state

pytestmark = pytest.mark.anyio


async def test_an_encrypted_node_pushes_and_restores_into_an_encrypted_folder(
    cluster: Cluster, tmp_path: Path
) -> None:
    data, key_file = tmp_path / "a", tmp_path / "keys" / "a.key"
    identity, phrase, key = keystore.init_encrypted(data)
    atrest.write_key_file(key_file, key, data)
    atrest.forget(data)
    m = await cluster.add("m", mirror_for=(identity.pubkey,))
    a = await cluster.add("a", at_rest_key_file=key_file, history_keep_ops=2, swarm=True)
    assert a.federation is not None and a.federation.swarm is None  # no plaintext files to seed
    assert a.node.blobs is not None and a.node.blobs.sealed
    for i in range(6):  # compacted: the push sends a snapshot, read from the encrypted store
        await a.node.save(f"/~/private/{SECRET_KEY}", {"entry": SECRET_VALUE, "n": i})
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {a.token}"}) as http:
        r = await http.put(
            f"{a.url}/~/private/photo", content=BLOB_MARK * 4000, headers={"content-type": "image/png"}
        )
        assert r.status_code == 200, r.text
    await a.node.flush()
    targets = MirrorTargets(data)
    targets.add(m.url)
    report = await push(a.node, a.identity, targets, m.url)
    assert report.error == "" and report.blobs == 1 and report.snapshots >= 1, report
    before = _state(a.node)
    await cluster.stop("a")
    planted = [SECRET_KEY.encode(), SECRET_VALUE.encode(), BLOB_MARK]
    assert not [p for p in planted if p in _files(data)]

    shutil.rmtree(data)  # the laptop is lost; the phrase and the mirror are left
    atrest.forget(data)
    keystore.init_encrypted(data, phrase)  # the same identity, the same at-rest key
    node = build_node(Settings(data_dir=data, at_rest_key_file=key_file))
    try:
        restored = await restore_from_mirror(node, identity, m.url, targets=MirrorTargets(data))
        assert restored.error == "" and restored.rejected == [] and restored.blobs == 1, restored
        assert _state(node) == before
        assert node.blobs is not None and node.blobs.read(hashlib.sha256(BLOB_MARK * 4000).hexdigest()) == (
            BLOB_MARK * 4000
        )
    finally:
        await node.aclose()
    assert not [p for p in planted if p in _files(data)]
