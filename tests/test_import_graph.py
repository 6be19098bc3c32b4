"""The shape of the import graph: no cycles, few top-level modules, every package under a contract.

``lint-imports`` checks the layer contracts in CI, but grimp sees neither imports inside functions
nor, as a cycle, two modules of one layer importing each other. This AST check sees every import:
top-level, inside functions, under ``TYPE_CHECKING``, relative, and ``import_module("…")``.

Rules:
    1. No two statebus modules import each other, directly or through others (an import of
       ``statebus.a.b`` is an edge to ``statebus.a.b`` only, not to the package ``statebus.a``).
    2. Top level holds packages, and only the modules in :data:`TOP_LEVEL`.
    3. Every package and top-level module is named by the import-linter ``layers`` contract.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / "statebus"
TOP_LEVEL = {"__init__", "__main__", "config", "errors", "types"}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package at ``root``, by dotted name (a package is its ``__init__``)."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str, files: dict[str, Path]) -> Iterator[str]:
    """The modules of ``files`` that ``path`` imports, in any form: ``from a.b import c`` is an edge
    to ``a.b.c`` when that is a module, else to ``a.b``; relative imports are made absolute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in files else base
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``module -> the modules of the same package it imports`` (:func:`_imports`)."""
    files = module_files(root)
    return {
        module: {name for name in _imports(path, module, files) if name in files and name != module}
        for module, path in files.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycles_between_statebus_modules() -> None:
    graph = import_graph()
    assert len(graph) > 100 and graph["statebus.server"]
    found = cycles(graph)
    assert not found, "import cycles (each line one cycle):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_sees_hidden_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from pkg.sub.a import A\n")
    (pkg / "sub" / "a.py").write_text("A = 1\ndef f():\n    from pkg import b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import C\n")
    (pkg / "c.py").write_text("import importlib\nM = importlib.import_module('pkg.sub.a')\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub"] == {"pkg.sub.a"}  # a package's own re-export is no edge back
    assert cycles(graph) == [["pkg.b", "pkg.c", "pkg.sub.a"]]


def test_only_the_vocabulary_modules_are_top_level() -> None:
    top = {p.stem for p in ROOT.glob("*.py")}
    assert top <= TOP_LEVEL, f"move {sorted(top - TOP_LEVEL)} into a package"


def _layer_names() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    (layers,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    names: set[str] = set()
    for layer in layers["layers"]:
        for part in layer.strip("()").replace(":", "|").split("|"):
            names.add(part.strip())
    return names


@pytest.mark.parametrize(
    "name",
    sorted(
        [f"statebus.{p.name}" for p in ROOT.iterdir() if (p / "__init__.py").exists()]
        + [f"statebus.{p.stem}" for p in ROOT.glob("*.py") if p.stem != "__init__"]
    ),
)
def test_every_package_is_in_the_layers_contract(name: str) -> None:
    assert name in _layer_names(), f"{name} is under no import-linter layer (pyproject.toml)"
