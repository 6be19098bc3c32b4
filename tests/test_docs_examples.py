"""Every ```python block of docs/python-api.md runs (each in a fresh namespace), and the README's tour
runs in bash and prints what it shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from statebus.server.runfile import running_url
from tests.support import doc_shell

DOC = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_example_runs(code: str) -> None:
    exec(compile(code, f"{DOC.name}", "exec"), {"__name__": "docs_example"})


# ---------------------------------------------------------------------- the README's tour

README = DOC.parent.parent / "README.md"
README_URL = "URL=http://127.0.0.1:8765"
README_DATA = "~/.local/share/statebus"


def tour_blocks() -> list[str]:
    """The README tour's shell blocks: the session set-up, HTTP and CLI (not the devnet: it runs
    until Ctrl-C, and tests/federation/test_devnet.py runs docs/devnet.md)."""
    text = README.read_text(encoding="utf-8")
    tour = text[text.index("## A five-minute tour") : text.index("**Federation.**")]
    return [body for tag, body in doc_shell.FENCE.findall(tour) if tag == "sh"]


def test_the_readme_tour_prints_what_it_shows(tmp_path: Path) -> None:
    """Issue 20, item 2: the tour's blocks run in one bash as written, against a fresh `statebus serve`,
    and every output it shows is what prints. Substituted: the port (``URL=…`` and the node listen on
    a free port, not 8765), the data folder (``$STATEBUS_DATA_DIR``, shown as the default folder) and
    ``statebus`` (the tree under test, first on PATH). Normalised: tests/support/doc_shell.py."""
    blocks = tour_blocks()
    assert len(blocks) == 3 and README_URL in blocks[0]
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STATEBUS_")}
    env.update(
        STATEBUS_DATA_DIR=str(data), PATH=f"{doc_shell.statebus_on_path(tmp_path / 'bin')}:{env['PATH']}"
    )
    serve = [
        sys.executable,
        "-m",
        "statebus",
        "serve",
        "--port",
        "0",
        "--dht-port",
        "0",
        "--log-level",
        "warning",
    ]
    with (tmp_path / "serve.txt").open("w") as out:
        node = subprocess.Popen(
            serve, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + 60
        while (url := running_url(data)) is None:
            assert node.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.txt").read_text()
            time.sleep(0.05)
        script = "\n".join(blocks).replace(README_URL, f"URL={url}")
        cmds = doc_shell.stop_live_commands(doc_shell.commands(script, doc_shell.ANY_COMMENT))
        assert sum(1 for c in cmds if c.expected) == 11, cmds
        status, stdout = doc_shell.run_bash(
            doc_shell.instrument(cmds), env=env, cwd=tmp_path, log=tmp_path / "stderr.txt", timeout=60
        )
        printed = [
            [line.replace(str(data), README_DATA) for line in out] for out in doc_shell.outputs(stdout)
        ]
        problems = doc_shell.compare(cmds, printed)
        assert status == 0 and not problems, "\n".join([f"status {status}", *problems])
    finally:
        node.terminate()
        node.wait(30)
