"""Yjs keys: the value is a pycrdt document and every op carries Yjs update bytes.

Yjs updates commute and are idempotent, so any order of the same updates gives the same
document. The JSON view of the document is ``{root name: root.to_py()}`` (Text becomes a string).
A ``delete`` op marks the key deleted (the document is kept, so a late update still merges);
a later ``crdt`` op brings it back.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from pycrdt import Doc

from statebus.errors import InvalidOp
from statebus.oplog.events import Op


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


class YjsState:
    name = "yjs"
    content_type = None

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
            for name in sorted(self._doc.keys()):
                root = self._doc[name]
                out[name] = root.to_py() if hasattr(root, "to_py") else str(root)
            self._cache, self._dirty = out, False
        return self._cache

    def state_update(self) -> bytes:
        """The whole document as one Yjs update (what a new client loads)."""
        return bytes(self._doc.get_update())

    def check(self, op: Op) -> None:
        if op.kind == "crdt":
            _check_update(op.body)
        elif op.kind != "delete":
            raise InvalidOp(f"yjs keys take Yjs updates (PATCH) and deletes, not {op.kind!r} ops")

    def apply(self, op: Op) -> bool:
        order = op.order
        if op.kind == "delete":
            if self._deleted_at is None or order > self._deleted_at:
                self._deleted_at = order
        else:
            self._doc.apply_update(bytes(op.body))
            if self._updated_at is None or order > self._updated_at:
                self._updated_at = order
            self._dirty = True
        return True

    def compact(self, ops: Sequence[Op]) -> None:
        doc: Doc[Any] = Doc()
        if self._base_update:
            doc.apply_update(self._base_update)
        for op in ops:
            if op.kind == "crdt":
                doc.apply_update(bytes(op.body))
        self._base_update = bytes(doc.get_update())

    def encode(self) -> dict[str, Any]:
        return {
            "update": base64.b64encode(self._base_update).decode("ascii"),
            "deleted_at": list(self._deleted_at) if self._deleted_at else None,
            "updated_at": list(self._updated_at) if self._updated_at else None,
        }
