"""Turn a :class:`~statebus.bus.Change` into the bytes of an SSE event or a Braid update, once.

A change written by one client reaches every subscriber as the *same* ``Change`` object, so
:class:`EncodeCache` keeps the encoded bytes per ``(id(change), format)`` for the few most recent
changes: fanning one change out to a thousand subscribers encodes it once per format. The cache holds
a reference to each change it keys, so an id cannot be reused while its entry lives.

What is sent for a change (both formats):

* a deleted key: SSE ``delete`` event (``"deleted": true``); Braid ``HTTP 404 Not Found``, no body;
* a ``patch`` op applied directly on the previous frontier (``change.linear``) to a JSON value: its patches;
* anything else (a ``set``, a CRDT update, a merge of concurrent ops, a snapshot): the whole value.

A stream that asked for Yjs updates gets, for a ``yjs`` key, the Yjs update instead of the JSON
view (:func:`sse_yjs_event`, :func:`braid_yjs_update`): the op's own update for a ``crdt`` op, the
document (:class:`statebus.http.yjs.YjsFeed`) for a snapshot.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final, cast

from statebus.bus import Change
from statebus.http.braid import format_update
from statebus.http.sse import encode_update_event, encode_yjs_event
from statebus.http.value_headers import served_type
from statebus.oplog import DELETE, Patch
from statebus.types import JSON
from statebus.values import dumps_json

CACHE_SIZE: Final = 4096

SSE: Final = "sse"
SSE_LIVE: Final = "sse-live"
BRAID: Final = "braid"
SSE_YJS_LIVE: Final = "sse-yjs-live"
BRAID_YJS: Final = "braid-yjs"
YJS_UPDATE: Final = "application/vnd.yjs.update"


def op_update(change: Change) -> bytes | None:
    """The Yjs update a change is (its op's, for a ``crdt`` op), or None (a snapshot, a delete)."""
    op = change.op
    if change.kind == "op" and op is not None and op.kind == "crdt":
        return bytes(op.body)
    return None


def sse_yjs_event(change: Change, cursor: int | None, update: bytes, *, snapshot: bool = False) -> bytes:
    """The SSE event of a change of a ``yjs`` key on a stream of updates: ``update`` as
    ``yjs_update`` (``delete`` when the key stays deleted after it)."""
    kind = "snapshot" if snapshot or change.kind == "snapshot" else "update" if change.exists else "delete"
    return encode_yjs_event(
        change.key,
        change.version,
        change.parents,
        update,
        cursor=cursor,
        kind=kind,
        deleted=not change.exists,
    )


def braid_yjs_update(change: Change, update: bytes) -> bytes:
    """The Braid update of a change of a ``yjs`` key on a subscription to updates: ``update`` as
    the body, ``Content-Type: application/vnd.yjs.update`` (a deleted key: ``HTTP 404``, with the
    op's update as the body when it is one)."""
    status = "200" if change.exists else "404"
    return format_update(change.version, change.parents, body=update, status=status, content_type=YJS_UPDATE)


def as_patches(change: Change) -> tuple[Patch, ...] | None:
    """The patches that turn the previous value into ``change.value``, when the change is one."""
    op = change.op
    if (
        change.kind == "op"
        and change.linear
        and change.exists
        and change.content_type is None
        and op is not None
        and op.kind == "patch"
    ):
        return tuple(op.body)
    return None


def sse_event(change: Change, cursor: int | None, *, snapshot: bool = False) -> bytes:
    """The SSE event for ``change`` (see :mod:`statebus.http.sse`); ``snapshot`` marks initial state."""
    kind = "snapshot" if snapshot or change.kind == "snapshot" else "update"
    version, parents = change.version, change.parents
    if not change.exists:
        return encode_update_event(
            change.key,
            version,
            parents,
            cursor=cursor,
            kind=kind if kind == "snapshot" else "delete",
            deleted=True,
        )
    patches = None if kind == "snapshot" else as_patches(change)
    if patches is not None:
        return encode_update_event(change.key, version, parents, cursor=cursor, kind=kind, patches=patches)
    return encode_update_event(
        change.key,
        version,
        parents,
        cursor=cursor,
        kind=kind,
        value=change.value,
        content_type=change.content_type,
    )


def _content(patch: Patch) -> bytes:
    if patch.content is DELETE:
        return b""
    return dumps_json(cast("JSON", patch.content))


def braid_update(change: Change) -> bytes:
    """The Braid update (one block of a 209 stream) for ``change``."""
    version, parents = change.version, change.parents
    if not change.exists:
        return format_update(version, parents, status="404")
    patches = as_patches(change)
    if patches is not None:
        return format_update(
            version,
            parents,
            patches=[(p.range, _content(p)) for p in patches],
            status="200",
        )
    if change.content_type is not None:
        return format_update(
            version,
            parents,
            body=bytes(change.value),
            status="200",
            content_type=served_type(change.content_type),
        )
    return format_update(version, parents, body=dumps_json(change.value), status="200")


class EncodeCache:
    """The encoded bytes of recent changes, per format (bounded, least recently added dropped first)."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._items: OrderedDict[tuple[int, str], tuple[Change, bytes]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, change: Change, fmt: str) -> bytes | None:
        item = self._items.get((id(change), fmt))
        if item is not None and item[0] is change:
            self.hits += 1
            return item[1]
        self.misses += 1
        return None

    def put(self, change: Change, fmt: str, data: bytes) -> bytes:
        self._items[(id(change), fmt)] = (change, data)
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return data

    def live_sse(self, change: Change) -> bytes:
        """The SSE event of a live change (its id is its seq when it ends a batch)."""
        data = self.get(change, SSE_LIVE)
        if data is None:
            data = self.put(change, SSE_LIVE, sse_event(change, change.seq if change.last else None))
        return data

    def braid(self, change: Change) -> bytes:
        """The Braid update of a change."""
        data = self.get(change, BRAID)
        if data is None:
            data = self.put(change, BRAID, braid_update(change))
        return data

    def live_sse_yjs(self, change: Change, update: bytes) -> bytes:
        """The SSE event of a live ``crdt`` op of a ``yjs`` key on a stream of updates."""
        data = self.get(change, SSE_YJS_LIVE)
        if data is None:
            data = self.put(
                change, SSE_YJS_LIVE, sse_yjs_event(change, change.seq if change.last else None, update)
            )
        return data

    def braid_yjs(self, change: Change, update: bytes) -> bytes:
        """The Braid update of a live ``crdt`` op of a ``yjs`` key on a subscription to updates."""
        data = self.get(change, BRAID_YJS)
        if data is None:
            data = self.put(change, BRAID_YJS, braid_yjs_update(change, update))
        return data

    def clear(self) -> None:
        self._items.clear()
