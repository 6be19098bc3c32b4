"""The signed subtree snapshot format (``statebus.federation.subtree``): plain calls, no I/O."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from statebus.errors import BadSnapshot
from statebus.federation.subtree import BaseRow, SubtreeSnapshot, merkle_root, pack, unpack
from statebus.identity import Identity
from statebus.identity.keys import verify_signature

OWNER = Identity(bytes(32))
PATTERN = f"/{OWNER.pubkey}/yc/"


def _row(name: str, frontier: list[str], value: int) -> BaseRow:
    data = json.dumps(
        {
            "merge": "lww",
            "state": {"exists": True, "horizon": None, "value": value},
            "log": {"frontier": frontier},
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    return BaseRow(PATTERN + name, tuple(frontier), data)


ROWS = (_row("b", ["2-x"], 2), _row("a", ["1-x"], 1), _row("c/d", ["3-x", "4-y"], 3))


def _packed(author: Identity = OWNER, rows: tuple[BaseRow, ...] = ROWS) -> bytes:
    return pack(SubtreeSnapshot(OWNER.pubkey, PATTERN, 41, author.pubkey, rows), author.sign)


def _unpack(data: bytes, pattern: str = PATTERN) -> SubtreeSnapshot:
    return unpack(data, owner=OWNER.pubkey, pattern=pattern, verify=verify_signature)


def test_a_snapshot_round_trips_sorted_by_key_under_its_signed_root() -> None:
    snap = _unpack(_packed())
    assert [r.key for r in snap.rows] == sorted(r.key for r in ROWS)
    assert snap.seq == 41 and snap.author == OWNER.pubkey
    assert snap.root == merkle_root([r.leaf() for r in sorted(ROWS, key=lambda r: r.key)])
    assert set(snap.rows) == set(ROWS)


def test_the_merkle_root_binds_every_key_version_and_base() -> None:
    root = merkle_root([r.leaf() for r in ROWS])
    assert merkle_root([]) != root and merkle_root([r.leaf() for r in ROWS[:2]]) != root
    for changed in (
        BaseRow(ROWS[0].key + "x", ROWS[0].versions, ROWS[0].data),
        BaseRow(ROWS[0].key, ("9-z",), ROWS[0].data),
        BaseRow(ROWS[0].key, ROWS[0].versions, ROWS[0].data + b" "),
    ):
        assert merkle_root([changed.leaf(), *(r.leaf() for r in ROWS[1:])]) != root


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _with_row(data: bytes, i: int, edit: dict[str, object]) -> bytes:
    lines = _lines(data)
    row = json.loads(lines[i])
    row.update(edit)
    lines[i] = json.dumps(row, sort_keys=True, separators=(",", ":")).encode()
    return b"\n".join(lines)


def test_a_changed_base_is_refused_by_the_root() -> None:
    data = _packed()
    row = json.loads(_lines(data)[1])
    base = json.loads(row["data"])
    base["state"]["value"] = 999
    forged = _with_row(data, 1, {"data": json.dumps(base, sort_keys=True, separators=(",", ":"))})
    with pytest.raises(BadSnapshot, match="Merkle root"):
        _unpack(forged)


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (lambda d: d[:-4] + (b"0000" if d[-4:] != b"0000" else b"1111"), "signature"),
        (lambda d: _with_row(d, 2, {"versions": ["7-q"]}), "versions"),
        (lambda d: b"\n".join(_lines(d)[:2] + _lines(d)[3:]), "row count"),
        (lambda d: b"not a snapshot", "malformed"),
    ],
)
def test_a_snapshot_that_does_not_check_is_refused_with_its_reason(
    forge: Callable[[bytes], bytes], reason: str
) -> None:
    data = forge(_packed())
    with pytest.raises(BadSnapshot, match=reason):
        _unpack(data)


def test_another_signer_is_named_for_the_keyring_to_judge() -> None:
    """The format checks the signature of the named author; whether that author may sign for the
    owner (a live delegation) is the follower's keyring's call (tests/federation/test_incomplete.py)."""
    stranger = Identity(b"\x01" * 32)
    assert _unpack(_packed(stranger)).author == stranger.pubkey
    lines = _lines(_packed(stranger))
    head = json.loads(lines[0])
    head["author"] = OWNER.pubkey  # claims the owner signed it
    lines[0] = json.dumps(head, sort_keys=True, separators=(",", ":")).encode()
    with pytest.raises(BadSnapshot, match="signature"):
        _unpack(b"\n".join(lines))


def test_a_snapshot_of_another_subtree_or_with_a_key_outside_it_is_refused() -> None:
    with pytest.raises(BadSnapshot, match="not of"):
        _unpack(_packed(), pattern=f"/{OWNER.pubkey}/lc/")
    outside = BaseRow(f"/{OWNER.pubkey}/lc/x", ROWS[0].versions, ROWS[0].data)
    with pytest.raises(BadSnapshot, match="outside"):
        _unpack(_packed(rows=(outside,)))
