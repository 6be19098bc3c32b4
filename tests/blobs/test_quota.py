"""A namespace's blobs count on the node's one quota counter, also after a restart."""

from __future__ import annotations

from pathlib import Path

from statebus.access.op_gate import OpGate
from statebus.blobs import BlobStore
from statebus.bus import Bus
from statebus.runtime import Node
from statebus.storage.memory import MemoryStorage

LOCAL = "b" * 51 + "q"
REMOTE = "c" * 51 + "q"


def test_blobs_charged_before_a_restart_count_when_the_quota_is_measured(tmp_path: Path) -> None:
    first = BlobStore(tmp_path / "blobs", max_bytes=1 << 20)
    first.put_bytes(b"x" * 5000, namespace=REMOTE)  # fetched for REMOTE, in an earlier run
    first.put_bytes(b"y" * 700)  # the owner's own: no charge
    node = Node(Bus(MemoryStorage(), LOCAL), blobs=BlobStore(tmp_path / "blobs", max_bytes=1 << 20))
    gate = OpGate.for_node(node, quota_bytes=6000)
    assert gate.quota.used(REMOTE) == 5000 and gate.quota.used(LOCAL) == 0
    node.blobs.quota = gate.quota  # type: ignore[union-attr]
    node.blobs.put_bytes(b"z" * 900, namespace=REMOTE)  # type: ignore[union-attr]
    assert gate.quota.used(REMOTE) == 5900  # charged once, not measured again
