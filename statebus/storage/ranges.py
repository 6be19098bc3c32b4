"""Key ranges and batch checks shared by the storage adapters.

Keys are compared as strings. Python compares code points and SQLite's default ``BINARY``
collation compares UTF-8 bytes; the two orders agree on every valid key, so both adapters list
the same names in the same order.

A subtree ``prefix`` (ending in ``/``) covers exactly the keys ``k`` with
``prefix < k < subtree_end(prefix)``: ``subtree_end`` replaces the final ``/`` by ``0``, the next
character, so one indexed range query finds every key below it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from statebus.errors import InvalidKey, InvalidOp, VersionConflict
from statebus.storage.base import StoredOp
from statebus.types import Key, Seq

FirstLive = Callable[[str, bool, str], "str | None"]
"""``first_live(low, inclusive, high)``: the smallest existing key in ``low ..< high`` (``low``
itself only if ``inclusive``), or None."""


def subtree_end(prefix: Key) -> str:
    """The smallest string above every key under ``prefix`` (which ends in ``/``).

    >>> subtree_end("/ns/app/")
    '/ns/app0'
    """
    return prefix[:-1] + chr(ord("/") + 1)


def pattern_bounds(pattern: str) -> tuple[str, str] | None:
    """The exclusive key range ``(low, high)`` a subtree pattern covers; None for ``""`` (all keys)
    and for an exact key (callers match those by equality)."""
    if pattern == "" or not pattern.endswith("/"):
        return None
    return pattern, subtree_end(pattern)


def matches(pattern: str, key: Key) -> bool:
    """Whether ``key`` matches a scan pattern: ``""`` (all), a subtree ``…/`` (strictly below
    it) or an exact key."""
    if pattern == "":
        return True
    if pattern.endswith("/"):
        return key.startswith(pattern) and key != pattern
    return key == pattern


def check_prefix(prefix: Key) -> None:
    """Reject a ``children`` prefix that does not name a subtree."""
    if not prefix.endswith("/"):
        raise InvalidKey(f"children() needs a subtree prefix ending in '/', got {prefix!r}")


def walk_children(prefix: Key, after: str, limit: int, first_live: FirstLive) -> list[str]:
    """List the children of ``prefix`` with one ``first_live`` lookup per returned name.

    Each lookup finds the next existing key; a deeper key yields ``"name/"`` and the walk jumps
    over the rest of that subtree. Names come out sorted: every key below ``name/`` sorts right
    after ``name/`` itself, so key order and name order agree.

    Args:
        prefix: The subtree, ending in ``/``.
        after: Return only names greater than this one (``""`` for the first page).
        limit: The most names to return.
        first_live: The adapter's indexed lookup (see :data:`FirstLive`).
    """
    check_prefix(prefix)
    high = subtree_end(prefix)
    names: list[str] = []
    if after == "":
        low, inclusive = prefix, False
    elif after.endswith("/"):
        low, inclusive = prefix + subtree_end(after), True
    else:
        low, inclusive = prefix + after, False
    while len(names) < limit:
        key = first_live(low, inclusive, high)
        if key is None:
            break
        rest = key[len(prefix) :]
        slash = rest.find("/")
        if slash < 0:
            name = rest
            low, inclusive = key, False
        else:
            name = rest[: slash + 1]
            low, inclusive = prefix + subtree_end(name), True
        if name > after:
            names.append(name)
    return names


def check_batch(batch: Sequence[StoredOp], max_seq: Seq) -> None:
    """Check the rules an adapter enforces before it writes anything.

    Raises:
        InvalidOp: a sequence number does not increase (within the batch or past ``max_seq``),
            or a field has the wrong type.
        VersionConflict: the batch holds the same ``(key, version)`` twice.
    """
    last = max_seq
    seen: set[tuple[Key, str]] = set()
    for op in batch:
        if not isinstance(op.seq, int) or isinstance(op.seq, bool):
            raise InvalidOp(f"a sequence number is an int, got {type(op.seq).__name__}")
        if not isinstance(op.data, bytes):
            raise InvalidOp(f"op data is bytes, got {type(op.data).__name__}")
        if not isinstance(op.key, str) or not isinstance(op.version, str):
            raise InvalidOp("an op's key and version are strings")
        if op.seq <= last:
            raise InvalidOp(f"sequence numbers must increase: {op.seq} comes after {last}")
        last = op.seq
        pair = (op.key, op.version)
        if pair in seen:
            raise VersionConflict(f"version {op.version!r} of {op.key!r} appears twice in one batch")
        seen.add(pair)
