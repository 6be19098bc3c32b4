"""The sans-IO core imports no I/O, network, threading or crypto library (AST check).

``lint-imports`` checks the same contract in CI; this test also catches imports inside functions
and ``TYPE_CHECKING`` blocks, and runs with plain pytest.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "statebus"
CORE = ["keys", "oplog", "merge", "bus", "values", "types.py", "errors.py"]
FORBIDDEN = {
    "asyncio",
    "socket",
    "threading",
    "sqlite3",
    "sqlcipher3",
    "starlette",
    "uvicorn",
    "nacl",
    "kademlia",
    "libtorrent",
    "anyio",
    "httpx",
}


def core_files() -> list[Path]:
    files: list[Path] = []
    for name in CORE:
        path = ROOT / name
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def test_the_core_has_files() -> None:
    files = core_files()
    assert len(files) > 15
    assert all(f.exists() for f in files)


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_no_io(path: Path) -> None:
    bad = {m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_checker_sees_every_import_form(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import asyncio.tasks\nfrom socket import socket\n"
        "def f():\n    import threading\n    return __import__('sqlite3')\n"
        "from . import relative\n"
    )
    assert {"asyncio.tasks", "socket", "threading", "sqlite3"} <= imported_modules(sample)
