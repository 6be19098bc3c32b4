"""Yjs keys: the value is a pycrdt document and every op carries Yjs update bytes.

Yjs updates commute and are idempotent, so any order of the same updates gives the same
document. The JSON view of the document is ``{root name: root.to_py()}`` (Text becomes a string).
Root types are untyped in a Yjs update, so the view probes each root as a Map, then a Text, then
an Array (the first that is not empty wins; an empty root shows as ``None``) on a scratch copy;
once a root has content its type is known for good, so the merged document's root is typed
with it and later views read it directly.
Updates may arrive before the updates they build on (ops travel in any order). The Yjs engine
keeps such updates "pending", but it loses all but one of them when several are missing at once,
so this state keeps its own stash. It follows the op DAG: while some op names a parent this state
has not seen (``missing``), every update is merged into the stash (``merge_updates`` is lossless
and order-insensitive) and the document is rebuilt from the last complete state plus the stash;
when the gap closes the stash is dropped. Compaction merges updates the same way, and the base
keeps any still missing parents and the versions of the last ``KNOWN_KEEP`` folded ops (``known``:
enough to recognise the parents a late op names; the op log remembers every folded version for
itself, so the base does not store that list a second time and grows by nothing per op).

A ``delete`` op marks the key deleted (the document is kept, so a late update still merges);
a later ``crdt`` op brings it back.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment, XmlText, get_update, merge_updates

from statebus.errors import InvalidOp, InvalidValue, TooLarge
from statebus.merge.base import Order
from statebus.oplog.events import Op

KNOWN_KEEP = 256
"""How many of the most recently folded versions the base keeps to recognise a late op's parents:
a parent folded before them reads as missing, which costs a rebuild per later update, never a
wrong value (updates commute)."""


EMPTY_UPDATE = b"\x00\x00"
"""A Yjs update (v1) that holds nothing: what a client that lacks nothing is sent."""


def merged_updates(updates: Sequence[bytes]) -> bytes:
    """Several Yjs updates as one (``Y.mergeUpdates``); :data:`EMPTY_UPDATE` for none."""
    if not updates:
        return EMPTY_UPDATE
    if len(updates) == 1:
        return updates[0]
    return bytes(merge_updates(*updates))


def diff_update(update: bytes, state_vector: bytes) -> bytes:
    """What a client whose document has ``state_vector`` (``Y.encodeStateVector``) lacks of
    ``update``: ``Y.encodeStateAsUpdate(doc, stateVector)`` of a document holding ``update``.

    Raises:
        InvalidValue: ``state_vector`` is not a Yjs state vector.
    """
    try:
        return bytes(get_update(update, state_vector))
    except (ValueError, RuntimeError) as exc:
        raise InvalidValue(f"not a Yjs state vector (Y.encodeStateVector): {exc}") from None


def _check_update(update: Any) -> None:
    if not isinstance(update, bytes | bytearray) or not update:
        raise InvalidOp("a yjs op carries non-empty Yjs update bytes")
    try:
        Doc().apply_update(bytes(update))
    except (ValueError, RuntimeError) as exc:  # pycrdt raises ValueError on bad updates
        raise InvalidOp(f"not a valid Yjs update: {exc}") from exc


def _order(raw: Any) -> tuple[int, str, str] | None:
    if not raw:
        return None
    return (int(raw[0]), str(raw[1]), str(raw[2]))


RootKind = type[Map[Any] | Text | Array[Any] | XmlFragment]


def _root_kind(update: bytes, name: str) -> RootKind | None:
    """The type of one untyped root: probed as Map, Text, then Array on scratch copies (the first
    that is not empty); an Array whose items are XML nodes is an XmlFragment (what ProseMirror,
    TipTap and every rich-text binding write). None while the root is empty."""
    for kind in (Map, Text, Array):
        scratch: Doc[Any] = Doc()
        scratch.apply_update(update)
        root = scratch.get(name, type=kind)
        if isinstance(root, Text):
            if str(root):
                return Text
        elif len(root):
            if isinstance(root, Array) and any(isinstance(item, XmlElement | XmlText) for item in root):
                return XmlFragment
            return kind
    return None


def _delta(text: Text | XmlText) -> list[dict[str, Any]]:
    """Formatted text as Yjs delta ops: ``{"insert": …, "attributes": {…}}`` (attributes only
    when the run is formatted)."""
    out: list[dict[str, Any]] = []
    for insert, attrs in text.diff():
        op: dict[str, Any] = {"insert": insert if isinstance(insert, str) else _view(insert)}
        if attrs:
            op["attributes"] = _view(dict(attrs))
        out.append(op)
    return out


def _view(item: Any) -> Any:
    """The JSON view of one Yjs value, of any shared type: never raises for content a Yjs update
    can hold (see docs/merge.md for the XML shape)."""
    if isinstance(item, XmlText):
        return {"delta": _delta(item)}
    if isinstance(item, XmlElement):
        return {
            "nodeName": item.tag,
            # (pycrdt annotates XmlAttributesView.__iter__ as returning an Iterable, not an Iterator)
            "attributes": {str(k): _view(v) for k, v in item.attributes.__iter__()},
            "children": [_view(child) for child in item.children],
        }
    if isinstance(item, XmlFragment):
        return [_view(child) for child in item.children]
    if isinstance(item, Text):
        return str(item)
    if isinstance(item, Map | dict):
        return {str(k): _view(v) for k, v in item.items()}
    if isinstance(item, Array | list | tuple):
        return [_view(v) for v in item]
    if isinstance(item, bytes | bytearray):
        return base64.b64encode(bytes(item)).decode("ascii")
    if isinstance(item, Doc):
        return {"guid": item.guid}  # a subdocument: its content is not part of this key
    if item is None or isinstance(item, bool | int | float | str):
        return item
    return str(item)


class YjsState:
    name = "yjs"
    content_type = None
    remembers_folded = True  # updates commute: a folded op may come again in any order
    horizon: Order | None = None  # every update still merges, however late
    rebases: frozenset[str] = frozenset()  # every update builds on the ones before it

    def __init__(self, base: dict[str, Any] | None = None) -> None:
        self._doc: Doc[Any] = Doc()
        self._base_update = b""
        self._deleted_at: tuple[int, str, str] | None = None
        self._updated_at: tuple[int, str, str] | None = None
        if base:
            self._base_update = base64.b64decode(base.get("update", ""))
            if self._base_update:
                self._doc.apply_update(self._base_update)
            self._deleted_at = _order(base.get("deleted_at"))
            self._updated_at = _order(base.get("updated_at"))
        self._cache: Any = None
        self._dirty = True
        self._root_kinds: dict[str, RootKind] = {}
        self._base_known: list[str] = list(base.get("known", ()))[-KNOWN_KEEP:] if base else []
        self._known: set[str] = set(self._base_known)
        self._missing: set[str] = set(base.get("missing", ())) if base else set()
        self._stash = b""
        self._clean = b""
        self._size = len(self._base_update)
        """Bytes of Yjs updates this state holds: the base plus every update applied since."""
        # the base may hold updates that wait for ops still in the log: the first op applied after
        # loading rebuilds the document from the base merged with it (see _integrate)
        self._stash = self._base_update

    @property
    def exists(self) -> bool:
        if self._updated_at is None:
            return False
        return self._deleted_at is None or self._updated_at > self._deleted_at

    @property
    def doc(self) -> Doc[Any]:
        return self._doc

    @property
    def value(self) -> Any:
        if not self.exists:
            return None
        if self._dirty:
            out: dict[str, Any] = {}
            update = b""
            for name, root in sorted(self._doc.items()):
                if root is None:
                    kind = self._root_kinds.get(name)
                    if kind is None:
                        update = update or bytes(self._doc.get_update())
                        kind = _root_kind(update, name)
                    if kind is None:
                        out[name] = None
                        continue
                    # a root's type never changes once it has content: type it in the doc itself
                    self._root_kinds[name] = kind
                    root = self._doc.get(name, type=kind)
                try:
                    out[name] = _view(root)
                except (ValueError, RuntimeError, TypeError):  # pycrdt's, for content it cannot read
                    out[name] = str(root)  # a stored update never makes the key unreadable
            self._cache, self._dirty = out, False
        return self._cache

    def state_update(self) -> bytes:
        """The whole document as one Yjs update (what a new client loads), updates still waiting
        for a missing parent included: the Yjs engine leaves its pending updates out of
        ``get_update``, so they come from the stash (a client keeps them pending as this state
        does, and the document completes when the missing op arrives)."""
        update = bytes(self._doc.get_update())
        if self._stash:
            return bytes(merge_updates(update, self._stash))
        return update

    def check(self, op: Op) -> None:
        if op.kind == "crdt":
            _check_update(op.body)
        elif op.kind != "delete":
            raise InvalidOp(f"yjs keys take Yjs updates (PATCH) and deletes, not {op.kind!r} ops")

    def check_size(self, op: Op, limit: int) -> None:
        size = self._size + len(op.body)
        if size > limit:
            raise TooLarge(f"this Yjs document would hold {size} bytes of updates; the limit is {limit}")

    def check_remote(self, op: Op) -> None:
        self.check(op)

    def foldable(self, ops_by_seq: Sequence[Op], keep: int) -> int:
        return len(ops_by_seq) - keep

    def apply(self, op: Op) -> bool:
        order = op.order
        self._known.add(op.version)
        self._missing.discard(op.version)
        self._missing.update(p for p in op.parents if p not in self._known)
        if op.kind == "delete":
            if self._deleted_at is None or order > self._deleted_at:
                self._deleted_at = order
        else:
            self._integrate(bytes(op.body))
            self._size += len(op.body)
            if self._updated_at is None or order > self._updated_at:
                self._updated_at = order
            self._dirty = True
        return True

    def _integrate(self, update: bytes) -> None:
        if not self._stash and not self._missing:
            self._doc.apply_update(update)
            return
        if not self._stash:
            self._clean = bytes(self._doc.get_update())
            self._stash = update
        else:
            self._stash = bytes(merge_updates(self._stash, update))
        fresh: Doc[Any] = Doc()
        if self._clean:
            fresh.apply_update(self._clean)
        fresh.apply_update(self._stash)
        self._doc = fresh
        if not self._missing:
            self._stash = self._clean = b""

    def compact(self, ops: Sequence[Op]) -> None:
        updates = [bytes(op.body) for op in ops if op.kind == "crdt"]
        if self._base_update:
            updates.insert(0, self._base_update)
        if updates:
            before = len(self._base_update)
            self._base_update = bytes(merge_updates(*updates)) if len(updates) > 1 else updates[0]
            self._size += (
                len(self._base_update) - before - sum(len(op.body) for op in ops if op.kind == "crdt")
            )
        folded = [op.version for op in ops]
        self._base_known = (self._base_known + folded)[-KNOWN_KEEP:]
        # forget the versions that left the window (the log still recognises them when re-sent)
        self._known.difference_update(folded)
        self._known.update(self._base_known)

    def encode(self) -> dict[str, Any]:
        return {
            "update": base64.b64encode(self._base_update).decode("ascii"),
            "deleted_at": list(self._deleted_at) if self._deleted_at else None,
            "updated_at": list(self._updated_at) if self._updated_at else None,
            "known": list(self._base_known),
            "missing": sorted(self._missing),
        }
