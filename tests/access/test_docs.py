"""The examples of docs/access-control.md run against a live node: the curl block (owner rules) and
the Python block (a signed client reading and writing with its own op)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx

from statebus.identity import Identity
from statebus.testing.live_server import live_server

DOC = Path(__file__).resolve().parents[2] / "docs" / "access-control.md"
TEXT = DOC.read_text(encoding="utf-8")
SH = re.findall(r"```sh\n(.*?)```", TEXT, re.S)
PY = re.findall(r"```python\n(.*?)```", TEXT, re.S)


def test_doc_examples_run(tmp_path: Path) -> None:
    assert len(SH) == 1 and len(PY) == 1
    with live_server(tmp_path / "node") as srv:
        names = {name: Identity.generate().pubkey for name in ("alice", "bob", "carol", "mallory")}
        script = SH[0]
        for name, pk in names.items():
            script = script.replace(f"<{name}-pubkey>", pk)
        script = re.sub(r"^TOKEN=.*$", f"TOKEN={srv.token}", script, flags=re.M)
        script = script.replace("URL=http://127.0.0.1:8765", f"URL={srv.url}")
        # every curl must succeed (HTTP errors included)
        prelude = 'set -euo pipefail\ncurl() { command curl -fsS --max-time 10 "$@"; echo; }\n'
        done = subprocess.run(
            ["bash", "-c", prelude + script], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        policy = srv.node
        rule = policy.fetch(f"/{srv.local}/.acl/chirp").value
        assert rule == {"read": "public", "write": [names["alice"], "@team"]}
        drafts = policy.fetch_or_none(f"/{srv.local}/.acl/chirp/drafts")
        assert drafts is not None and not drafts.exists  # deleted at the end
        assert policy.fetch(f"/{srv.local}/.acl/.deny").value == [names["mallory"]]
        # the Python block: any signed key may write chirp/ for this run
        with httpx.Client(base_url=srv.url, headers=srv.auth) as owner:
            owner.put("/~/.acl/chirp", json={"read": "public", "write": "signed"}).raise_for_status()
        code = PY[0].replace("http://127.0.0.1:8765", srv.url).replace("<node pubkey>", srv.local)
        exec(compile(code, str(DOC), "exec"), {})
        assert srv.node.fetch(f"/{srv.local}/chirp/2").value == {"text": "hi"}
