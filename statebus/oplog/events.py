"""The op: one immutable change to one key.

Rules:

1. An op never changes once made; replicas exchange ops, never states.
2. ``(key, version)`` identifies an op on every replica. Applying the same op twice is a no-op;
   a different op reusing a version is a :class:`VersionConflict`.
3. ``parents`` are the versions the writer had seen of that key (its frontier), sorted.
4. ``clock`` is a Lamport clock: greater than the clock of every parent.
5. ``sig`` is opaque here: the identity layer fills and checks it over :func:`signing_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from statebus.types import JSON, Key, PubKey, Version


class _Delete:
    """Patch content that removes the addressed field or element (JavaScript's ``undefined``)."""

    _instance: ClassVar[_Delete | None] = None  # ClassVar: mypyc compiles a class attribute set through cls

    def __new__(cls) -> _Delete:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()

KINDS = ("set", "patch", "delete", "crdt")
"""``set`` replaces the value (JSON, or bytes with a content type); ``patch`` applies range patches
to a JSON value; ``delete`` removes the key; ``crdt`` carries a merge-type update (Yjs bytes)."""


@dataclass(frozen=True, slots=True)
class Patch:
    """A Braid range patch: replace what ``range`` addresses (``.a.b``, ``[3]``, ``[1:2]``) by ``content``."""

    range: str
    content: JSON | _Delete


@dataclass(frozen=True, slots=True)
class Op:
    key: Key
    version: Version
    parents: tuple[Version, ...]
    author: PubKey
    clock: int
    merge: str
    kind: str
    body: Any = None
    """``set``: the JSON value, or ``bytes`` when ``content_type`` is given; ``patch``: a tuple of
    :class:`Patch`; ``delete``: None; ``crdt``: the update bytes."""
    content_type: str | None = None
    sig: bytes = field(default=b"", compare=False)

    def __post_init__(self) -> None:
        # parents are a set: keep them sorted so equal ops compare (and encode) equal
        if type(self.parents) is tuple and len(self.parents) < 2:
            return  # already a sorted tuple (most ops: every local write names one parent at most)
        parents = tuple(sorted(self.parents))
        if parents != self.parents:
            object.__setattr__(self, "parents", parents)

    @property
    def order(self) -> tuple[int, str, str]:
        """The total order last-writer-wins uses: Lamport clock, then author, then version."""
        return (self.clock, self.author, self.version)
