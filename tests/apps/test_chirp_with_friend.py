"""README's "run chirp with a friend", as written: two real `statebus serve` processes, and
`apps/chirp-with-friend` run for each with the other's pubkey and URL. chirp is installed on both
(signed by each node), each shares its chirp/ and follows the other's; a post at Ann reaches Bob, and
a 281-character post is refused by the sandbox with its reason."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.served import ServedNode

SCRIPT = Path(__file__).resolve().parents[2] / "apps" / "chirp-with-friend"


def friend(node: ServedNode, other: ServedNode, other_pk: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("STATEBUS_DATA_DIR", None)
    return subprocess.run(
        [str(SCRIPT), "--data", str(node.data), other_pk, other.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_two_commands_per_person(tmp_path: Path) -> None:
    ann, bob = ServedNode(tmp_path / "ann"), ServedNode(tmp_path / "bob")
    try:
        pk = {}
        token = {}
        for name, node in (("ann", ann), ("bob", bob)):
            banner = "".join(node.banner)
            pk[name] = re.search(r"statebus node ([a-z2-7]{52})", banner).group(1)  # type: ignore[union-attr]
            token[name] = re.search(r"login\?token=(\S+)", banner).group(1)  # type: ignore[union-attr]
        out_ann = friend(ann, bob, pk["bob"])
        out_bob = friend(bob, ann, pk["ann"])
        for out in (out_ann, out_bob):
            assert out.returncode == 0, out.stderr
            assert "read   other people's chirp/" in out.stderr  # what chirp asks for is shown
        lines = out_ann.stdout.splitlines()
        assert lines[0].startswith("installed chirp 1.1.0 (") and len(lines) == 6, lines
        assert lines[1] == f"sharing /{pk['ann']}/chirp/ with every peer"
        assert lines[2].startswith(f"your inbox /{pk['ann']}/inbox/ takes notices signed by anyone"), lines
        assert lines[3] == f"following /{pk['bob']}/chirp/"
        assert (
            lines[5]
            == f"open chirp: log in with the link statebus serve printed, then {ann.url}/launch/chirp"
        )
        a = httpx.Client(
            base_url=ann.url, headers={"Authorization": f"Bearer {token['ann']}"}, trust_env=False
        )
        b = httpx.Client(
            base_url=bob.url, headers={"Authorization": f"Bearer {token['bob']}"}, trust_env=False
        )
        with a, b:
            assert a.put("/~/chirp/posts/0001", json={"text": "hello bob", "at": 1}).status_code == 200
            long = a.put("/~/chirp/posts/0002", json={"text": "x" * 281, "at": 1})
            assert long.status_code == 422 and "at most 280 characters, not 281" in long.json()["detail"]
            deadline = time.monotonic() + 60
            while (got := b.get(f"/{pk['ann']}/chirp/posts/0001")).status_code != 200:
                assert time.monotonic() < deadline, got.text
                time.sleep(0.1)
            assert got.json() == {"text": "hello bob", "at": 1}
            assert b.get(f"/~/chirp/follows/{pk['ann']}").status_code == 200  # in chirp's own graph too
    finally:
        ann.close()
        bob.close()
