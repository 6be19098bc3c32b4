"""docs/http-api.md, "Using a generic Braid or statebus client": each ```js block runs as written under
``node`` against a live node, and prints what its ``console.log(…)  // <output>`` comments say."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from statebus.testing.live_server import LiveServer
from tests.support.node_harness import js_dir, node_available

pytestmark = pytest.mark.skipif(not node_available(), reason="needs node and `npm ci` in tests/js")

DOC = Path(__file__).resolve().parents[2] / "docs" / "http-api.md"
SECTION = "## Using a generic Braid or statebus client"


def examples() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(SECTION)
    section = text[start : text.index("\n## ", start + len(SECTION))]
    return re.findall(r"```js\n(.*?)```", section, flags=re.DOTALL)


def shown(code: str) -> list[str]:
    """What the block says it prints: the ``// …`` comment of each ``console.log`` line."""
    return [line.split("// ", 1)[1].strip() for line in code.splitlines() if "console.log(" in line]


CONNECTION_LOG = re.compile(r"^\[[ *]\] (trying to open|opened) ws://")  # statebus 7's own lines


def test_the_section_has_a_braid_a_fetch_and_a_statebus7_example() -> None:
    blocks = examples()
    assert len(blocks) == 3 and "from 'braid-http'" in blocks[0] and "fetch(" in blocks[1]
    assert "from 'statebus'" in blocks[2]
    assert all(shown(code) for code in blocks)


@pytest.mark.parametrize("index", [0, 1, 2], ids=["braid-http", "fetch", "statebus7"])
def test_the_example_prints_what_the_doc_says(srv: LiveServer, tmp_path: Path, index: int) -> None:
    if index == 2 and not (js_dir() / "node_modules" / "statebus").is_dir():
        pytest.skip("needs `npm ci` in tests/js with statebus 7 (tests/js/package.json)")
    code = examples()[index]
    script = tmp_path / "example.mjs"
    script.write_text(code)
    (tmp_path / "node_modules").symlink_to(js_dir() / "node_modules")  # `npm install braid-http`, done
    env = {**os.environ, "STATEBUS_URL": srv.url, "STATEBUS_TOKEN": srv.token}
    done = subprocess.run(["node", str(script)], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    printed = [line for line in done.stdout.splitlines() if not CONNECTION_LOG.match(line)]
    assert printed == shown(code), done.stdout
