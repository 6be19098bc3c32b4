"""The Node is the only door (runtime/node.py rule 1): nothing outside ``statebus/runtime/`` reaches
into a node's bus or committer, and what it filters, applies and reports, it does through its own
methods."""

from __future__ import annotations

import ast
import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from statebus.bus import Bus, Change
from statebus.errors import StatebusError
from statebus.identity import Identity, sign_op, verify_op
from statebus.runtime import Node
from statebus.storage.memory import MemoryStorage

PACKAGE = Path(__file__).resolve().parents[2] / "statebus"
OWNER = Identity.generate()


def _reaches_through(tree: ast.AST) -> list[str]:
    """``<…node>.bus`` and ``<…>.committer`` attribute reads."""
    found: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        owner = node.value
        name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
        if node.attr == "committer" or (node.attr == "bus" and name.endswith("node")):
            found.append(f"{ast.unparse(node)} (line {node.lineno})")
    return found


def test_nothing_outside_the_runtime_reaches_into_a_node() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): hits
        for path in sorted(PACKAGE.rglob("*.py"))
        if "runtime" not in path.relative_to(PACKAGE).parts
        and (hits := _reaches_through(ast.parse(path.read_text("utf-8"))))
    }
    assert offenders == {}


def test_streams_do_not_import_the_node() -> None:
    tree = ast.parse((PACKAGE / "runtime" / "streams.py").read_text("utf-8"))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "statebus.runtime.node" not in imported


async def _filtered(paged: bool) -> list[tuple[str, object]]:
    node = Node(Bus(MemoryStorage(), OWNER.pubkey))
    await node.save("/~/a/open", 1)
    await node.save("/~/a/secret", 2)
    stream = node.events("/~/a/", filter=lambda c: not c.key.endswith("secret"), paged=paged)
    await node.save("/~/a/secret", 3)
    await node.save("/~/a/open", 4)
    got: list[tuple[str, object]] = []
    async for change in stream:
        got.append((change.key.rsplit("/", 1)[-1], change.value))
        if change.value == 4:
            break
    stream.close()
    await node.aclose()
    return got


@pytest.mark.parametrize("paged", [False, True])
def test_a_filtered_stream_never_sees_what_the_filter_refuses(paged: bool) -> None:
    got = asyncio.run(_filtered(paged))
    assert got[-1] == ("open", 4)  # (a paged stream reads its starting state late: open is 4 then)
    assert ("open", 1) in got or paged
    assert all(name != "secret" for name, _ in got)


async def _apply_many() -> tuple[list[object], bool, list[object]]:
    source = Bus(MemoryStorage(), OWNER.pubkey, signer=lambda op: sign_op(op, OWNER))
    ops = [source.save(f"/{OWNER.pubkey}/n/{i}", i).op for i in range(3)]
    node = Node(Bus(MemoryStorage(), "b" * 52, verifier=verify_op))
    forged = replace(ops[1], body=99)  # its signature no longer matches: the bus refuses it alone
    results = await node.apply_many([(ops[0], None), (forged, None), (ops[2], None), (ops[0], None)])
    seqs = [r.seq for r in results if isinstance(r, Change)]
    durable = node.durable_seq >= max(seqs)
    again = await node.apply_many([(ops[2], None)])
    await node.aclose()
    shown: list[object] = [
        r.value if isinstance(r, Change) else r.code if isinstance(r, StatebusError) else None
        for r in results
    ]
    return shown, durable, again


def test_apply_many_applies_each_op_alone_and_returns_once_durable() -> None:
    shown, durable, again = asyncio.run(_apply_many())
    assert shown[0] == 0 and shown[2] == 2 and shown[3] is None  # the repeated op is a duplicate
    assert isinstance(shown[1], str)  # the forged op is refused alone, with its error
    assert durable and again == [None]
