"""Server-Sent Events: the pure encoder (no I/O), and the statebus event convention.

An SSE event is ``field: value`` lines ended by a blank line (WHATWG HTML §9.2). Data with line
breaks becomes several ``data:`` lines, which the browser joins with ``\\n``; ``event`` and ``id``
may not hold CR, LF or NUL (an ``id`` with NUL is ignored by browsers), so they are rejected.

statebus events (one JSON object per event, compact, UTF-8)::

    event: snapshot | update | delete
    id: <cursor>
    data: {"key": "/…/posts/42", "version": ["v2"], "parents": ["v1"], <body>, "content_type": "…"}

* ``snapshot``: the state of a key when the stream starts; ``update``: a later change; ``delete``:
  the key was deleted (body ``"deleted": true``).
* ``reset`` (no ``id``, ``data: {"reason": "…"}``): the client's cursor is too old (the history it
  needs was compacted). The client drops everything it holds for the stream; fresh ``snapshot``
  events of every key follow (:func:`encode_reset_event`).
* ``<body>`` is exactly one of ``"value": <JSON>`` (the whole value), ``"value_base64": "…"`` (a bytes
  value; ``content_type`` says what it is), ``"patches": [[range, content], …]`` (``[range]`` removes
  what the range addresses) or ``"deleted": true``.
* ``content_type`` is present only for values that are not ``application/json``.
* On a stream that asked for Yjs updates (``?yjs=updates``), the events of a ``yjs`` key carry
  ``"yjs_update": "<base64>"`` (Yjs update bytes, v1) instead of ``value``: the whole document (or
  what a client's state vector lacks) in its ``snapshot``, then each op's own update
  (:func:`encode_yjs_event`). Events of other keys stay JSON: the body field says which.
* ``id`` is the node's cursor after this event; a browser ``EventSource`` sends it back as
  ``Last-Event-ID`` when it reconnects, and the stream resumes after it.
* A comment line (``: ping``) is sent every ``sse_ping_interval`` seconds to keep proxies from
  closing an idle stream; clients ignore it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any, Final

from statebus.errors import InvalidValue
from statebus.oplog import DELETE, Patch
from statebus.types import JSON

EVENT_KINDS: Final = ("snapshot", "update", "delete")
PING: Final = b": ping\n\n"

_MISSING: Any = object()
_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _field_value(name: str, value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        raise InvalidValue(f"SSE {name} may not contain CR, LF or NUL")
    return value


def encode_event(
    data: str | bytes,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """Encode one SSE event.

    Args:
        data: the payload; line breaks (CRLF, CR, LF) split it over several ``data:`` lines.
        event: the event type (``event:``), or None for the default ``message``.
        id: the event id (``id:``), which the browser returns as ``Last-Event-ID``.
        retry: the reconnection delay in milliseconds (``retry:``).

    Raises:
        InvalidValue: ``event`` or ``id`` holds CR, LF or NUL; ``retry`` is negative; ``data`` is not UTF-8.

    Example:
        >>> encode_event("a\\nb", event="update", id="7")
        b'event: update\\nid: 7\\ndata: a\\ndata: b\\n\\n'
    """
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidValue("SSE data must be UTF-8") from None
    head = ""
    if event is not None:
        head += "event: " + _field_value("event", event) + "\n"
    if id is not None:
        head += "id: " + _field_value("id", id) + "\n"
    if retry is not None:
        if type(retry) is not int or retry < 0:
            raise InvalidValue("SSE retry must be a whole number of milliseconds")
        head += f"retry: {retry}\n"
    if "\n" in data or "\r" in data:
        lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        body = "".join("data: " + line + "\n" for line in lines)
    else:
        body = "data: " + data + "\n"
    return _utf8(head + body + "\n")


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValue("SSE text holds a lone surrogate, which is not UTF-8") from None


def encode_comment(text: str = "") -> bytes:
    """Encode an SSE comment (ignored by clients, keeps a connection alive): ``: ping\\n\\n``.

    Example:
        >>> encode_comment("ping")
        b': ping\\n\\n'
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return _utf8("".join(": " + line + "\n" for line in lines) + "\n")


def update_payload(
    key: str,
    version: Sequence[str],
    parents: Sequence[str] = (),
    *,
    value: Any = _MISSING,
    patches: Sequence[Patch] | None = None,
    deleted: bool = False,
    content_type: str | None = None,
) -> dict[str, JSON]:
    """The JSON object of a statebus SSE event (see the module docstring). Exactly one body is allowed.

    Raises:
        InvalidValue: no body or more than one; a bytes value without a content type.
    """
    payload: dict[str, JSON] = {"key": key, "version": list(version), "parents": list(parents)}
    bodies = (value is not _MISSING) + (patches is not None) + bool(deleted)
    if bodies != 1:
        raise InvalidValue("an SSE update carries exactly one of value, patches or deleted")
    if deleted:
        payload["deleted"] = True
    elif patches is not None:
        payload["patches"] = [[p.range] if p.content is DELETE else [p.range, p.content] for p in patches]  # type: ignore[list-item]
    elif isinstance(value, bytes | bytearray):
        if content_type is None:
            raise InvalidValue("a bytes value needs a content type")
        payload["value_base64"] = base64.b64encode(value).decode("ascii")
    else:
        payload["value"] = value
    if content_type is not None:
        payload["content_type"] = content_type
    return payload


def encode_update_event(
    key: str,
    version: Sequence[str],
    parents: Sequence[str] = (),
    *,
    cursor: str | int | None = None,
    kind: str = "update",
    value: Any = _MISSING,
    patches: Sequence[Patch] | None = None,
    deleted: bool = False,
    content_type: str | None = None,
) -> bytes:
    """Encode a statebus event: ``event: <kind>``, ``id: <cursor>``, ``data: <JSON payload>``.

    Args:
        key: the key that changed.
        version: its new version(s).
        parents: the versions the change follows.
        cursor: the stream position after this event (becomes ``id``), or None.
        kind: ``snapshot``, ``update`` or ``delete``.
        value: the whole new value (JSON, or bytes with ``content_type``).
        patches: range patches instead of a value.
        deleted: True for a deleted key.
        content_type: the value's content type when it is not JSON.

    Raises:
        InvalidValue: an unknown kind, not exactly one body, a value that is not JSON.

    Example:
        >>> encode_update_event("/~/a", ["v1"], cursor=3, value={"x": 1})
        b'event: update\\nid: 3\\ndata: {"key":"/~/a","version":["v1"],"parents":[],"value":{"x":1}}\\n\\n'
    """
    if kind not in EVENT_KINDS:
        raise InvalidValue(f"SSE event kind must be one of {EVENT_KINDS}")
    payload = update_payload(
        key, version, parents, value=value, patches=patches, deleted=deleted, content_type=content_type
    )
    try:
        data = _encoder.encode(payload)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidValue(f"SSE payload is not JSON: {exc}") from None
    # Compact JSON never holds a raw CR or LF (json escapes them in strings), so data is one line.
    parts = ["event: ", kind, "\n"]
    if cursor is not None:
        parts += ("id: ", _field_value("id", str(cursor)), "\n")
    parts += ("data: ", data, "\n\n")
    return _utf8("".join(parts))


def encode_yjs_event(
    key: str,
    version: Sequence[str],
    parents: Sequence[str],
    update: bytes,
    *,
    cursor: str | int | None = None,
    kind: str = "update",
    deleted: bool = False,
) -> bytes:
    """Encode a statebus event of a Yjs key on a stream that asked for updates (``?yjs=updates``):
    the body is ``"yjs_update": "<base64 of the Yjs update>"`` instead of ``value``; a ``delete``
    event of a Yjs op that merged while the key stays deleted carries both it and ``deleted``.

    Example:
        >>> encode_yjs_event("/~/d", ["v"], [], b"\\x00\\x00", cursor=4)
        b'event: update\\nid: 4\\ndata: {"key":"/~/d","version":["v"],"parents":[],"yjs_update":"AAA="}\\n\\n'
    """
    if kind not in EVENT_KINDS:
        raise InvalidValue(f"SSE event kind must be one of {EVENT_KINDS}")
    payload: dict[str, JSON] = {"key": key, "version": list(version), "parents": list(parents)}
    payload["yjs_update"] = base64.b64encode(update).decode("ascii")
    if deleted:
        payload["deleted"] = True
    parts = ["event: ", kind, "\n"]
    if cursor is not None:
        parts += ("id: ", _field_value("id", str(cursor)), "\n")
    parts += ("data: ", _encoder.encode(payload), "\n\n")
    return _utf8("".join(parts))


def encode_reset_event(reason: str) -> bytes:
    """Encode ``event: reset``, ``data: {"reason": …}``: the client's cursor is too old; fresh state follows.

    Example:
        >>> encode_reset_event("history compacted")
        b'event: reset\\ndata: {"reason":"history compacted"}\\n\\n'
    """
    return encode_event(_encoder.encode({"reason": reason}), event="reset")
