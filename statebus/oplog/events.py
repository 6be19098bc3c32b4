"""The op: one immutable change to one key.

Rules:

1. An op never changes once made, but for its signature (rule 5); replicas exchange ops, never
   states.
2. ``(key, version)`` identifies an op on every replica. Applying the same op twice is a no-op;
   a different op reusing a version is a :class:`VersionConflict`.
3. ``parents`` are the versions the writer had seen of that key (its frontier), sorted.
4. ``clock`` is a Lamport clock: greater than the clock of every parent.
5. ``sig`` is opaque here: the identity layer fills and checks it over :func:`signing_bytes`. A
   local write's op is made once (``codec.new_op``) and the node's commit fills its ``sig`` in place
   (``identity.signing.seal_batch``), before the op is stored or sent to any peer; ``sig`` is not
   part of an op's equality or hash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

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


class _OpSlots:
    """The slots of :class:`Op`, in its order, writable: :func:`fresh_op` fills one, then makes it an Op."""

    __slots__ = (
        "author",
        "body",
        "clock",
        "content_type",
        "key",
        "kind",
        "merge",
        "parents",
        "sig",
        "version",
    )
    key: Key
    version: Version
    parents: tuple[Version, ...]
    author: PubKey
    clock: int
    merge: str
    kind: str
    body: Any
    content_type: str | None
    sig: bytes


_new = object.__new__


def fresh_op(
    key: Key,
    version: Version,
    parents: tuple[Version, ...],
    author: PubKey,
    clock: int,
    merge: str,
    kind: str,
    body: Any,
    content_type: str | None,
) -> Op:
    """``Op(key, version, parents, …)`` for ``parents`` already a sorted tuple, made ~3× cheaper.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (~140 ns each
    here); this fills an object with the same slots by plain stores and then sets its class to
    :class:`Op`: the same object, as frozen as any other (``tests/oplog/test_events_parents.py``).
    """
    op = _new(_OpSlots)
    op.key = key
    op.version = version
    op.parents = parents
    op.author = author
    op.clock = clock
    op.merge = merge
    op.kind = kind
    op.body = body
    op.content_type = content_type
    op.sig = b""
    op.__class__ = Op  # type: ignore[assignment]
    return cast(Op, op)
