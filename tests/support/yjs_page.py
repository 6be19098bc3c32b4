"""A test page for Yjs in Chromium: the JS ``yjs`` and y-websocket loaded as ES modules from
``tests/js/node_modules`` through an import map (no bundler: esbuild is not installed), served on
127.0.0.1 port 0 by :func:`yjs_page`."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from statebus.http.y_protocol import read_var_uint
from tests.support.node_harness import js_dir

PACKAGES = ("yjs", "lib0", "y-protocols", "y-websocket", "isomorphic.js")
CONDITIONS = ("browser", "import", "module", "default")


def _target(spec: Any) -> str | None:
    """The file an ``exports`` entry gives a browser's ES module import, if any."""
    if isinstance(spec, str):
        return spec if not spec.endswith((".cjs", ".json", ".d.ts")) else None
    if isinstance(spec, dict):
        for condition in CONDITIONS:
            if condition in spec:
                found = _target(spec[condition])
                if found is not None:
                    return found
    return None


def import_map(modules: Path) -> dict[str, dict[str, str]]:
    """The import map of ``PACKAGES``, from each package's ``exports``, as a bundler resolves them."""
    imports: dict[str, str] = {}
    for name in PACKAGES:
        package = json.loads((modules / name / "package.json").read_text())
        for entry, spec in package.get("exports", {}).items():
            target = _target(spec)
            if target is not None and not entry.endswith(".json"):
                imports[name + entry[1:]] = f"/node_modules/{name}/{target.removeprefix('./')}"
    return {"imports": imports}


class _Files(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
    }

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def page_server(root: Path) -> Iterator[str]:
    """Serve ``root`` on 127.0.0.1, port 0 (a page and the node modules it imports)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Files, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def clocks(state_vector: bytes) -> dict[int, int]:
    """A Yjs state vector as ``{client: clock}`` (its encoding lists clients in any order)."""
    count, pos = read_var_uint(state_vector, 0)
    out: dict[int, int] = {}
    for _ in range(count):
        client, pos = read_var_uint(state_vector, pos)
        out[client], pos = read_var_uint(state_vector, pos)
    return out


@contextlib.contextmanager
def yjs_page(root: Path) -> Iterator[str]:
    """Serve ``root/index.html`` (an empty page with the import map of ``PACKAGES``) and the node
    modules; yields the page's origin."""
    root.mkdir(parents=True, exist_ok=True)
    modules = js_dir() / "node_modules"
    (root / "node_modules").symlink_to(modules.resolve())
    imports = json.dumps(import_map(modules))
    (root / "index.html").write_text(
        f'<!doctype html><meta charset="utf-8"><script type="importmap">{imports}</script><title>yjs</title>'
    )
    with page_server(root) as origin:
        yield origin
