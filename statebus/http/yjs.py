"""Yjs keys read as Yjs: the document as one update, the updates after a state vector or a version.

Rules:

1. A GET whose ``Accept`` lists ``application/vnd.yjs.update`` (q > 0) of a ``yjs`` key answers
   with Yjs update bytes (v1 encoding, ``Y.applyUpdate`` reads them), under the JSON GET's read
   rules (same access check, same on-disk state, same 503 for a key this replica cannot rebuild):

   * no more: the whole document as one update, with the ``Version`` and ``ETag`` of the state;
   * ``?since=<state vector>`` or ``State-Vector: <state vector>`` (base64 or base64url of
     ``Y.encodeStateVector(doc)``): what a document with that state vector lacks
     (``Y.encodeStateAsUpdate(doc, stateVector)``);
   * ``Parents: "v1", …`` (or ``?parents=v1,v2``): the updates of the ops after those versions,
     merged into one (an empty update when there are none); 410 with the horizon once compaction
     folded them, 404 for a version the key never had;
   * ``Version`` (or ``?version=``): the document at that past version, as the JSON GET.

2. The same Accept on a key that is not ``yjs`` is 406 ``not_acceptable`` unless the Accept also
   takes JSON (``application/json``, ``application/*``, ``*/*``): then the JSON view is served.
3. A range (``Range``, ``?range=``) reads the JSON view: with the Yjs Accept it is 400.
4. A stream of updates (SSE ``?yjs=updates``, a Braid subscription with the Yjs Accept, a
   websocket ``get`` with ``"yjs": "updates"``) sends, for a ``yjs`` key, the document as one update
   in its first event (or the diff after the client's state vector), then each op's own update
   (:class:`YjsFeed`): a 13-byte edit of an 18 MB document is a 13-byte update.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Final

from starlette.datastructures import QueryParams
from starlette.responses import Response

from statebus.bus import Change
from statebus.errors import HistoryCompacted, InvalidRange, InvalidValue, NotAcceptable, NotFound
from statebus.http.encode import YJS_UPDATE, op_update
from statebus.http.value_headers import value_headers
from statebus.merge.yjs import diff_update
from statebus.runtime import Node
from statebus.types import Version

MAX_STATE_VECTOR_BYTES: Final = 64 * 1024
"""The longest state vector a read takes (base64 text; a real one is a few bytes per client)."""
_JSON_RANGES: Final = frozenset({"application/json", "application/*", "*/*"})


def _q(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 0.0
    return 1.0


def accepts_yjs(accept: str | None) -> tuple[bool, bool]:
    """``(yjs, json)``: whether ``accept`` takes Yjs updates (listed by name with q > 0), and
    whether it also takes the JSON view."""
    if accept is None or YJS_UPDATE not in accept.lower():
        return False, True
    yjs = json = False
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        if _q(params) <= 0:
            continue
        if media == YJS_UPDATE:
            yjs = True
        elif media in _JSON_RANGES:
            json = True
    return yjs, json


def decode_state_vector(text: str, name: str) -> bytes:
    """A state vector sent as base64 or base64url (padding optional).

    Raises:
        InvalidValue: not base64, or too long.
    """
    raw = text.strip()
    if len(raw) > MAX_STATE_VECTOR_BYTES:
        raise InvalidValue(f"{name} is at most {MAX_STATE_VECTOR_BYTES} characters")
    raw = raw.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidValue(f"{name} must be a base64 (or base64url) Yjs state vector") from None


def state_vector_of(query: QueryParams, headers: Mapping[str, str], *, since: bool = True) -> bytes | None:
    """The state vector a read names (``State-Vector`` header, else ``?state_vector=``, else, on a
    GET (``since``), ``?since=``), or None."""
    raw = headers.get("state-vector")
    if raw is not None:
        return decode_state_vector(raw, "State-Vector")
    for name in ("state_vector", "since") if since else ("state_vector",):
        raw = query.get(name)
        if raw is not None:
            return decode_state_vector(raw, name)
    return None


def stream_mode(query: QueryParams) -> bool:
    """Whether an SSE stream asks for Yjs updates (``?yjs=updates``).

    Raises:
        InvalidValue: another ``yjs`` value.
    """
    raw = query.get("yjs")
    if raw is None:
        return False
    if raw.strip().lower() != "updates":
        raise InvalidValue("yjs must be 'updates' (?yjs=updates: Yjs keys send Yjs updates)")
    return True


class YjsFeed:
    """The Yjs update of each change of a ``yjs`` key on a stream of updates: the op's own update for
    a ``crdt`` op; for a snapshot, the document at the snapshot's version (minus what
    ``state_vector`` holds, for the first snapshot of each key unless the stream was reset)."""

    __slots__ = ("node", "sent", "state_vector")

    def __init__(self, node: Node, state_vector: bytes | None = None) -> None:
        self.node = node
        self.state_vector = state_vector
        self.sent: set[str] = set()

    def __call__(self, change: Change) -> bytes:
        update = op_update(change)
        if update is not None:
            return update
        try:
            update = self.node.yjs_update(change.key, change.version, durable=False)
        except (HistoryCompacted, NotFound):  # folded since: the current document holds it
            current = self.node.fetch_or_none(change.key)
            update = self.node.yjs_update(change.key, current.version if current else (), durable=False)
        if self.state_vector is not None and change.key not in self.sent:
            self.sent.add(change.key)
            update = diff_update(update, self.state_vector)
        return update

    @staticmethod
    def carries(change: Change) -> bool:
        """Whether ``change`` goes out as a Yjs update: a ``yjs`` key that exists, or an op of one
        that merged while it stays deleted."""
        return change.merge == "yjs" and (change.exists or op_update(change) is not None)


def yjs_body(
    node: Node,
    change: Change,
    *,
    state_vector: bytes | None,
    parents: tuple[Version, ...] | None,
) -> tuple[bytes, str]:
    """The update bytes a Yjs read of ``change`` (a state from :meth:`Node.fetch` or
    :meth:`Node.fetch_version`) answers with, and the tag of what was asked (for the ETag).

    Raises:
        NotAcceptable: the key is not a Yjs key.
        HistoryCompacted, NotFound: ``parents`` or the version are gone or unknown.
    """
    if change.merge != "yjs":
        raise NotAcceptable(
            f"{change.key} is a {change.merge} key: it has a JSON view, not Yjs updates "
            f"(ask for application/json)"
        )
    if parents is not None:
        return node.yjs_updates_after(change.key, parents), "yjs-after:" + "\x00".join(parents)
    update = node.yjs_update(change.key, change.version)
    if state_vector is None:
        return update, "yjs"
    return diff_update(update, state_vector), "yjs-sv:" + state_vector.hex()


def yjs_response(body: bytes, headers: dict[str, str], *, ranged: bool, status: int = 200) -> Response:
    """The answer to a Yjs read: ``body`` as ``application/vnd.yjs.update`` with ``headers``
    (Version, ETag, range headers) and the headers that keep it data."""
    if ranged:
        raise InvalidRange("a range reads the JSON view; a Yjs read takes no Range")
    headers.update(value_headers(YJS_UPDATE))
    return Response(body, status_code=status, media_type=YJS_UPDATE, headers=headers)


__all__ = [
    "YJS_UPDATE",
    "YjsFeed",
    "accepts_yjs",
    "decode_state_vector",
    "state_vector_of",
    "stream_mode",
    "yjs_body",
    "yjs_response",
]
