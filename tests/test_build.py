"""The build (setup.py): the core compiled by mypyc, or pure Python, never half of each; stale builds refused.

Each build runs ``python setup.py build_ext --inplace`` (the step ``pip install -e .`` runs) in a copy of
the project in a temporary folder, so the environment's installed packages are never touched. That the
compiled build itself works is the whole suite's job: ``.ci/run`` installs it and checks that the core
was compiled before running the tests.
"""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def project_copy(tmp: Path) -> Path:
    root = tmp / "project"
    root.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, root / name)
    shutil.copytree(
        REPO / "statebus", root / "statebus", ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )
    return root


def build(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STATEBUS_PURE", "CC")}
    return subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=root,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def extensions(root: Path) -> list[Path]:
    return sorted(root.rglob(f"*{SUFFIX}"))


def test_statebus_pure_builds_no_extension(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    done = build(root, STATEBUS_PURE="1")
    assert done.returncode == 0, done.stderr
    assert "STATEBUS_PURE is set: installing pure Python" in done.stderr
    assert extensions(root) == []


def test_without_a_working_compiler_the_build_installs_pure_python(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    done = build(root, CC="false")  # setuptools compiles with $CC: a compiler that always fails
    assert done.returncode == 0, done.stderr
    assert "compiling failed" in done.stderr and "installing pure Python" in done.stderr
    assert extensions(root) == []  # not one extension kept: all compiled or all pure
    check = subprocess.run(
        [sys.executable, "-c", "import statebus.bus.bus as m; print(m.__file__)"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip() == str(root / "statebus" / "bus" / "bus.py")


def import_statebus(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import statebus"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_compiled_module_older_than_its_source_is_refused(tmp_path: Path) -> None:
    root = project_copy(tmp_path)
    (root / f"statebus__mypyc{SUFFIX}").write_bytes(b"")  # the mark of a compiled build
    compiled = root / "statebus" / "keys" / f"paths{SUFFIX}"
    compiled.write_bytes(b"")  # never imported: `import statebus` loads no key module
    source = root / "statebus" / "keys" / "paths.py"
    now = source.stat().st_mtime
    os.utime(compiled, (now + 1, now + 1))
    assert import_statebus(root).returncode == 0  # compiled after its source: fine
    os.utime(compiled, (now - 60, now - 60))  # the source was edited a minute after the build
    done = import_statebus(root)
    assert done.returncode != 0
    assert f"{source} changed after it was compiled" in done.stderr, done.stderr
    (root / f"statebus__mypyc{SUFFIX}").unlink()  # no mark, no check: a pure install pays one stat
    assert import_statebus(root).returncode == 0
